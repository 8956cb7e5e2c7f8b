"""The Python client's pipeline builder, client-side validation and JSON manifests (no server)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from remotemedia_client import (
    AudioBuffer,
    AudioChunkerNode,
    AudioResampleNode,
    Client,
    Connection,
    GainNode,
    Node,
    NodeMetrics,
    PassThroughNode,
    Pipeline,
    PipelineConfig,
    RetryPolicy,
    Runtime,
    VADNode,
    ValidationError,
    pb,
)
from remotemedia_client._core import Settings, execute_request, explain_length_limit
from remotemedia_client.errors import from_error_response

# The manifest of the executor's data model (seed 000), as written there: `type`, `edges`,
# version "1.0", a flat config.
SEED_MANIFEST = """
{
  "version": "1.0",
  "nodes": [
    {"id": "source-1", "type": "PassThroughNode", "params": {}, "runtime_hint": "auto"},
    {"id": "resample-1", "type": "AudioResampleNode",
     "params": {"input_rate": 48000, "output_rate": 16000, "quality": "high"}, "runtime_hint": "auto"}
  ],
  "edges": [{"from": "source-1", "to": "resample-1", "output_key": "output", "input_key": "input"}],
  "config": {"enable_metrics": true, "retry_policy": "exponential", "max_retries": 3}
}
"""


def test_shift_connects_nodes_fans_out_and_in_and_names_ports() -> None:
    p = Pipeline("graph")
    src = p.add(PassThroughNode("in"))
    vad, gain = src >> [VADNode("vad"), GainNode("gain", gain_db=-3)]
    mix = [vad, gain] >> PassThroughNode("mix")
    vad["segments"] >> Node("PassThroughNode", "log")["data"]
    assert [n.id for n in p] == ["in", "vad", "gain", "mix", "log"]
    assert p.connections == [
        Connection("in", "vad"),
        Connection("in", "gain"),
        Connection("vad", "mix"),
        Connection("gain", "mix"),
        Connection("vad", "log", "segments", "data"),
    ]
    assert [n.id for n in p.sources] == ["in"] and [n.id for n in p.sinks] == ["mix", "log"]
    assert mix is p["mix"]
    p.validate()


def test_nodes_without_ids_are_named_after_their_type() -> None:
    p = Pipeline.chain(
        GainNode(gain_db=1), GainNode(gain_db=2), AudioResampleNode(output_rate=8_000), Node("ChannelMixerNode", output_channels=1)
    )
    assert [n.id for n in p] == ["gain", "gain_2", "audio_resample", "channel_mixer"]


def test_connecting_a_node_outside_any_pipeline_says_how_to_fix_it() -> None:
    with pytest.raises(ValueError, match=r"pipeline\.add"):
        GainNode("a") >> GainNode("b")


def test_typed_nodes_spell_out_their_parameters() -> None:
    assert AudioResampleNode("r", output_rate=16_000, quality="low").params == {"output_rate": 16_000, "quality": "low"}
    assert VADNode("v", threshold_db=-40, frame_ms=20).params == {"threshold_db": -40, "frame_ms": 20}
    assert AudioChunkerNode("c", chunk_ms=20).params == {"chunk_ms": 20}
    assert GainNode("g", runtime="cpython").runtime is Runtime.CPYTHON


def test_the_runtime_is_runtime_and_the_manifests_name_for_it_points_there() -> None:
    assert Node("GainNode", "g", runtime="rust", gain_db=-6).to_dict() == {
        "id": "g",
        "node_type": "GainNode",
        "params": {"gain_db": -6},
        "runtime_hint": "rust",
    }
    with pytest.raises(TypeError, match=r"runtime_hint is the manifest's name .* pass runtime='rust'"):
        Node("GainNode", "g", runtime_hint="rust")
    assert Node("PlugInNode", "p", params={"runtime_hint": 1}).params == {"runtime_hint": 1}


def test_node_metrics_carry_custom_metrics_under_the_wires_name_and_as_custom() -> None:
    m = NodeMetrics.from_pb(pb.NodeMetrics(execution_time_ms=0.5, custom_metrics='{"runtime": "rust", "samples_over_full_scale": 3}'))
    assert m.custom_metrics == {"runtime": "rust", "samples_over_full_scale": 3}
    assert m.custom is m.custom_metrics and m.runtime == "rust"


def test_validation_reports_every_violation_at_once() -> None:
    p = Pipeline("broken")
    a, b, c = p.add(GainNode("a", gain_db=500)), p.add(Node("VADNode", "b", frame_ms=25, colour="red")), p.add(Node("X", "c"))
    a >> b >> c >> a
    p.add(Node("AudioChunkerNode", "a"))
    p.connect("a", "ghost")
    with pytest.raises(ValidationError) as info:
        p.validate()
    assert [str(v) for v in info.value.violations] == [
        "nodes[0].params.gain_db: node `a` (GainNode): parameter `gain_db` must be a number between -120 and 60, got 500 (a number)",
        "nodes[1].params.frame_ms: node `b` (VADNode): parameter `frame_ms` must be 10, 20 or 30, got 25 (a number)",
        "nodes[1].params.colour: node `b` (VADNode): parameter `colour` is not accepted "
        "(accepted: frame_ms, min_silence_ms, min_speech_ms, speech_pad_ms, threshold_db)",
        "nodes[3].id: duplicate node id 'a' (also nodes[0])",
        "nodes[3].params.chunk_samples: node `a` (AudioChunkerNode): parameter `chunk_samples` or `chunk_ms` is required "
        "(give one of them)",
        "connections[3].to: no node 'ghost' in this pipeline",
        "connections: connections form a cycle: a → b → c → a",
    ]
    assert str(info.value).startswith("7 validation errors:\n  - nodes[0].params.gain_db")


def test_connections_must_join_declared_ports_of_one_kind() -> None:
    p = Pipeline("ports")
    vad, rs = p.add(Node("VADNode", "vad")), p.add(Node("AudioResampleNode", "rs", output_rate=8000))
    p.connect(vad, rs, output_key="segments", input_key="input")
    p.connect(vad, rs, output_key="speech", input_key="input")
    p.connect(vad, rs, output_key="output", input_key="sidechain")
    p.connect(vad, rs)  # output → input: audio to audio
    p.connect(vad, rs, output_key="segments", input_key="input")  # a duplicate is reported as one, as the server does
    assert [str(v) for v in p.violations()] == [
        "connections[0]: output port `segments` carries data, but input port `input` of node `rs` takes audio; "
        "connect ports of the same kind",
        "connections[1].output_key: node `vad` (VADNode) has no output port `speech`; its output ports are: output, segments",
        "connections[2].input_key: node `rs` (AudioResampleNode) has no input port `sidechain`; its input ports are: input",
        "connections[4]: duplicate of connections[0]",
    ]
    assert [v.node_id for v in p.violations()] == ["rs", "vad", "rs", "vad"]
    # A type the catalogue does not know (a plug-in) is left to the server.
    q = Pipeline("plugin")
    q.connect(q.add(Node("VADNode", "vad")), q.add(Node("SomePluginNode", "x")), output_key="segments", input_key="anything")
    assert q.violations() == []
    # Calls check the same before sending anything (nothing listens on port 9).
    with Client("127.0.0.1:9", retry=RetryPolicy.none()) as client, pytest.raises(ValidationError) as info:
        client.run(p, np.zeros(4, np.float32), sample_rate=16_000)
    assert [v.field for v in info.value.violations] == [
        "connections[0]",
        "connections[1].output_key",
        "connections[2].input_key",
        "connections[4]",
    ]


def test_inputs_must_feed_a_port_of_their_kind_before_any_call() -> None:
    # The server's words: GainNode has no `data` port; TextToSpeechNode takes no audio.
    p = Pipeline("inputs")
    p.add(GainNode("g"))
    p.add(Node("TextToSpeechNode", "t"))
    with Client("127.0.0.1:9", retry=RetryPolicy.none()) as client, pytest.raises(ValidationError) as info:
        client.run(p, {"t": np.zeros(4, np.float32)}, sample_rate=16_000, data={"g": 1})
    assert [str(v) for v in info.value.violations] == [
        "audio_inputs[t]: audio_inputs: node `t` (TextToSpeechNode) has no input port `input`; its input ports are: data",
        "data_inputs[g]: data_inputs: node `g` (GainNode) has no input port `data`; its input ports are: input",
    ]
    assert [v.node_id for v in info.value.violations] == ["t", "g"]


def test_inputs_are_checked_with_the_pipeline_before_any_call() -> None:
    p = Pipeline("broken")
    a, b = p.add(GainNode("a", gain_db=500)), p.add(Node("VADNode", "b"))
    a >> b
    # Nothing listens on port 9, so a call that were made would fail differently.
    with Client("127.0.0.1:9", retry=RetryPolicy.none()) as client, pytest.raises(ValidationError) as info:
        client.run(p, np.zeros(4, np.int64), sample_rate=16_000, data={"nowhere": 1}, output_nodes=["gone"])
    assert [v.field for v in info.value.violations] == ["nodes[0].params.gain_db", "inputs", "data_inputs[nowhere]", "output_nodes"]
    assert "int64" in info.value.violations[1].description

    with Client("127.0.0.1:9") as client, pytest.raises(ValidationError) as info:
        client.run(Pipeline.chain(GainNode("g")), np.zeros(4, np.float32))
    assert "sample_rate" in str(info.value)

    # An AudioBuffer carries its rate: a sample_rate= that says otherwise is a mistake to name.
    buffer = AudioBuffer.from_numpy(np.zeros(4, np.float32), 48_000)
    with Client("127.0.0.1:9", retry=RetryPolicy.none()) as client, pytest.raises(ValidationError) as info:
        client.run(Pipeline.chain(GainNode("g")), buffer, sample_rate=16_000)
    assert "sample_rate=16000 contradicts the AudioBuffer's 48000 Hz" in str(info.value)


def test_a_seed_manifest_loads_and_round_trips_through_json_and_protobuf(tmp_path: Path) -> None:
    p = Pipeline.from_json(SEED_MANIFEST)
    assert [n.type for n in p] == ["PassThroughNode", "AudioResampleNode"]
    assert p["resample-1"].params == {"input_rate": 48000, "output_rate": 16000, "quality": "high"}
    assert p.config == PipelineConfig(enable_metrics=True, backoff="exponential", max_retries=3)

    written = json.loads(p.to_json())
    assert written["edges"] == [{"from": "source-1", "to": "resample-1", "output_key": "output", "input_key": "input"}]
    assert written["nodes"][1] == {
        "id": "resample-1",
        "node_type": "AudioResampleNode",
        "params": {"input_rate": 48000, "output_rate": 16000, "quality": "high"},
        "runtime_hint": "auto",
    }
    assert written["config"] == {"enable_metrics": True, "retry_policy": "exponential", "max_retries": 3}

    p.save(tmp_path / "p.json")
    assert Pipeline.load(tmp_path / "p.json") == p
    manifest = p.to_manifest()
    assert manifest.version == "v1" and manifest.config.retry.backoff == pb.RetryPolicy.BACKOFF_EXPONENTIAL
    assert json.loads(manifest.nodes[1].params) == {"input_rate": 48000, "output_rate": 16000, "quality": "high"}
    assert Pipeline.from_manifest(manifest) == p


def test_the_protobuf_json_form_grpcurl_uses_loads_too() -> None:
    text = json.dumps(
        {
            "version": "v1",
            "metadata": {"name": "denoise"},
            "nodes": [
                {"id": "in", "node_type": "PassThroughNode"},
                {"id": "gain", "node_type": "GainNode", "params": '{"gain_db": -3}', "runtime_hint": "RUNTIME_HINT_RUST"},
            ],
            "connections": [{"from": "in", "to": "gain"}],
            "config": {"retry": {"max_retries": 1, "backoff": "BACKOFF_FIXED"}, "circuit_breaker_threshold": 0},
        }
    )
    p = Pipeline.from_json(text)
    assert p.name == "denoise" and p["gain"].params == {"gain_db": -3} and p["gain"].runtime is Runtime.RUST
    assert p.connections == [Connection("in", "gain")]
    assert p.config == PipelineConfig(max_retries=1, backoff="fixed", circuit_breaker_threshold=0)


def test_a_malformed_manifest_reports_every_problem() -> None:
    text = json.dumps(
        {
            "version": "v3",
            "nodes": [
                {"id": "a", "type": "GainNode", "params": "{not json"},
                {"id": "b", "type": "GainNode", "runtime_hint": "rustpython"},
            ],
            "edges": [{"from": "a"}],
        }
    )
    with pytest.raises(ValidationError) as info:
        Pipeline.from_json(text)
    assert [v.field for v in info.value.violations] == ["version", "nodes[0].params", "nodes[1].runtime_hint", "connections[0]"]
    with pytest.raises(ValidationError, match="not valid JSON"):
        Pipeline.from_json("{")
    # As on the server, only unset (empty) params text means none; blank text is not JSON.
    blank = json.dumps({"version": "v1", "nodes": [{"id": "a", "type": "GainNode", "params": "  "}]})
    with pytest.raises(ValidationError) as info:
        Pipeline.from_json(blank)
    assert [v.field for v in info.value.violations] == ["nodes[0].params"]
    assert "params are not valid JSON" in info.value.violations[0].description
    assert Pipeline.from_json(json.dumps({"version": "v1", "nodes": [{"id": "a", "type": "GainNode", "params": ""}]})).nodes[0].params == {}


def test_manifest_fields_of_the_wrong_type_are_validation_errors_naming_them() -> None:
    manifest = {
        "version": "v1",
        "nodes": [{"id": "g", "node_type": "GainNode", "runtime_hint": True}, {"id": "h", "node_type": "GainNode"}],
        "edges": [{"from": "g", "to": "h", "output_key": 0}],
        "config": {"max_retries": "3", "enable_metrics": "false", "retry": {"initial_delay_ms": 2.5}},
    }
    with pytest.raises(ValidationError) as e:
        Pipeline.from_dict(manifest)
    assert {v.field for v in e.value.violations} == {
        "nodes[0].runtime_hint",
        "connections[0].output_key",
        "config.retry.max_retries",
        "config.enable_metrics",
        "config.retry.initial_delay_ms",
    }
    with pytest.raises(ValidationError, match="edges: must be a list of connections, got dict"):
        Pipeline.from_dict({"version": "v1", "nodes": [{"id": "a", "node_type": "GainNode"}], "edges": {"from": "a"}})
    assert [v.field for v in PipelineConfig(max_retries="3", multiplier=True).violations()] == [  # type: ignore[arg-type]
        "config.retry.max_retries",
        "config.retry.multiplier",
    ]


def test_numpy_numbers_are_the_numbers_they_hold_in_params_and_data() -> None:
    p = Pipeline.chain(AudioResampleNode("r", output_rate=np.int64(8_000)), GainNode("g", gain_db=np.float32(-6.0)))
    p.validate()
    assert json.loads(p.to_manifest().nodes[0].params) == {"output_rate": 8_000}
    assert type(p.nodes[1].params["gain_db"]) is float


def test_data_that_json_cannot_carry_is_refused_before_sending() -> None:
    tts = Pipeline.chain(Node("TextToSpeechNode", "t"))
    settings = Settings("127.0.0.1:1")

    def request(value: object) -> pb.ExecuteRequest:
        return execute_request(settings, tts, None, sample_rate=None, data={"t": value}, output_nodes=(), limits=None)

    for bad in (float("nan"), {"text": "x", "n": float("inf")}):
        with pytest.raises(ValidationError) as e:
            request(bad)
        assert [(v.field, v.description) for v in e.value.violations] == [
            ("data_inputs[t]", "holds NaN or infinity, which JSON cannot carry")
        ]
    assert json.loads(request({"text": "hi", "n": np.float32(1.5)}).data_inputs["t"]) == {"text": "hi", "n": 1.5}
    cycle: dict[str, object] = {"text": "x"}
    cycle["self"] = cycle
    with pytest.raises(ValidationError) as e:
        request(cycle)
    assert [(v.field, v.description) for v in e.value.violations] == [("data_inputs[t]", "contains itself, which JSON cannot write")]


def test_a_parameter_json_cannot_carry_is_refused_by_the_wire_and_json_forms() -> None:
    p = Pipeline.chain(GainNode("g", gain_db=float("nan")), Node("SomePluginNode", "x", bands=[1.0, -np.inf]))
    for write in (p.to_manifest, p.to_json):
        with pytest.raises(ValidationError) as e:
            write()
        assert [v.field for v in e.value.violations] == ["nodes[0].params.gain_db", "nodes[1].params.bands[1]"]
        assert "parameter `gain_db` is NaN, a number JSON has no form for" in str(e.value)
        assert "parameter `bands` (at nodes[1].params.bands[1]) is -Infinity" in str(e.value)


def test_a_parameter_of_a_kind_json_cannot_write_is_refused_naming_it() -> None:
    # A set, bytes, a function, a key JSON cannot write, a mapping that contains itself: each a
    # VALIDATION error naming the parameter, as the TypeScript client names a BigInt or a cycle,
    # not a TypeError or RecursionError from json.dumps. The same object twice is no cycle.
    cycle: dict[str, object] = {"depth": 1}
    cycle["self"] = cycle
    shared = {"a": 1}
    params = {"s": {1, 2}, "b": b"x", "f": len, "k": {(1, 2): 3}, "cycle": cycle, "twice": [shared, shared], "n": np.float32(2)}
    p = Pipeline.chain(Node("SomePluginNode", "x", params=params))
    for write in (p.to_manifest, p.to_json):
        with pytest.raises(ValidationError) as e:
            write()
        assert [v.field for v in e.value.violations] == [
            "nodes[0].params.s",
            "nodes[0].params.b",
            "nodes[0].params.f",
            "nodes[0].params.k",
            "nodes[0].params.cycle.self",
        ]
        assert "parameter `s` is a value of type set, which JSON has no form for" in str(e.value)
        assert "parameter `cycle` (at nodes[0].params.cycle.self) contains itself" in str(e.value)
    fine = Pipeline.chain(Node("SomePluginNode", "x", params={"twice": [shared, shared], "n": np.float32(2), "i": {1: 2}}))
    assert json.loads(fine.to_manifest().nodes[0].params) == {"twice": [{"a": 1}, {"a": 1}], "n": 2.0, "i": {"1": 2}}


def test_a_none_parameter_is_unset_and_left_out_as_the_typescript_client_does() -> None:
    p = Pipeline.chain(Node("GainNode", "g", params={"gain_db": None, "gain": 2}), Node("PassThroughNode", "q", x=None))
    assert [n["params"] for n in p.to_dict()["nodes"]] == [{"gain": 2}, {}]
    assert [n.params for n in p.to_manifest().nodes] == ['{"gain": 2}', ""]


def test_a_long_retry_policy_caps_its_delay_without_overflowing() -> None:
    policy = RetryPolicy(max_attempts=5_000, initial_backoff=0.01, max_backoff=1.0)
    assert policy.backoff(1) == 0.01 and policy.backoff(2) == 0.02
    assert policy.backoff(1_100) == 1.0 and policy.backoff(4_999) == 1.0


def test_a_time_limit_on_a_short_input_gets_no_hint_to_send_long_audio_in_chunks() -> None:
    # The time went to the nodes' work, not to the audio's length: chunks would not help.
    def timed_out() -> Exception:
        return from_error_response(
            pb.ErrorResponse(error_type=pb.ERROR_TYPE_RESOURCE_LIMIT, message="time limit", context='{"limit": "max_timeout_ms"}')
        )

    settings = Settings("127.0.0.1:1")
    p = Pipeline.chain(Node("SpinNode", "s"))
    short = execute_request(settings, p, np.zeros(160, np.float32), sample_rate=16_000, data=None, output_nodes=(), limits=None)
    assert getattr(explain_length_limit(timed_out(), short), "hint", "?") is None  # type: ignore[arg-type]
    long = execute_request(settings, p, np.zeros(16_000 * 30, np.float32), sample_rate=16_000, data=None, output_nodes=(), limits=None)
    hint = getattr(explain_length_limit(timed_out(), long), "hint", None)  # type: ignore[arg-type]
    assert hint is not None and "client.stream_file(path, pipeline)" in hint and "max_timeout_ms=" in hint
