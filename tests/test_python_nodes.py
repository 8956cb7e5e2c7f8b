"""Python nodes inside the server: the embedded interpreter, mixed pipelines, zero copy, the GIL
kept off the reactor, runtime selection, plug-ins, errors and time limits."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pyloudnorm
import pytest

from conftest import PLUGINS, REPO, SERVER_BIN, RunningServer, server_env, start_server
from helpers import f32, manifest, node, samples
from remotemedia_client import Client, pb

RNG = np.random.default_rng(99)


def execute(
    server: RunningServer, nodes: list[pb.NodeManifest], edges: list[tuple[str, str]], inputs: dict[str, pb.AudioBuffer], **extra: object
) -> pb.ExecuteResponse:
    with Client(server.address) as client:
        return client.execute(pb.ExecuteRequest(manifest=manifest(nodes, edges), audio_inputs=inputs, **extra))


def result(resp: pb.ExecuteResponse) -> pb.ExecutionResult:
    assert resp.WhichOneof("outcome") == "result", resp.error
    return resp.result


def data(res: pb.ExecutionResult, node_id: str) -> dict:
    return json.loads(res.data_outputs[node_id])


def runtime_of(res: pb.ExecutionResult, node_id: str) -> str:
    return json.loads(res.metrics.node_metrics[node_id].custom_metrics)["runtime"]


def test_a_node_reports_the_embedded_interpreter(plugin_server: RunningServer) -> None:
    res = result(execute(plugin_server, [node("info", "InterpreterInfoNode")], [], {"info": f32(np.zeros(16))}))
    info = data(res, "info")["info"]
    assert info["version"].startswith("3.11.7")
    assert Path(info["prefix"]) == REPO / ".venv", "the project's own Python environment"
    assert info["numpy"] == np.__version__
    assert info["scipy"]
    assert info["libpython"] and all("/.pyenv/versions/3.11.7/lib/" in p for p in info["libpython"]), info["libpython"]
    assert info["pid"] == plugin_server.proc.pid, "in the server process, not a subprocess"
    start = plugin_server.records()
    ready = next(r for r in start if r.get("message") == "python runtime ready")
    assert (
        ready["python_version"].startswith("3.11.7")
        and ready["sys_prefix"] == str(REPO / ".venv")
        and ready["numpy_version"] == np.__version__
    )


def test_python_nodes_see_the_servers_buffer_without_a_copy(plugin_server: RunningServer) -> None:
    stereo = RNG.uniform(-1, 1, (4_800, 2)).astype(np.float32)
    res = result(execute(plugin_server, [node("probe", "ZeroCopyProbeNode")], [], {"probe": f32(stereo.reshape(-1), 48_000, 2)}))
    probe = data(res, "probe")["probe"]
    assert probe["base_type"] == "RustBuffer"
    assert probe["data_address"] == probe["base_address"], "the array's data is the Rust buffer's memory"
    assert probe["nbytes"] == probe["base_nbytes"] == stereo.nbytes
    assert probe["writeable"] is False and probe["owndata"] is False
    assert probe["shape"] == [4_800, 2] and probe["dtype"] == "float32"


# Node ids of 1 to 4 bytes move the samples to every offset modulo 4 within the request, so
# some arrive at an address unaligned for float32.
IDS = ["n", "nx", "nxx", "nxxx"]


@pytest.mark.parametrize("runtime", [pb.RUNTIME_HINT_RUST, pb.RUNTIME_HINT_CPYTHON], ids=["native", "python"])
def test_input_passed_on_is_one_buffer_wherever_it_sits_in_the_request(server: RunningServer, runtime: int) -> None:
    # A Python node handed a copy of unaligned input returned a second buffer: twice the memory
    # counted, and a memory limit hit at half the size the native node takes.
    x = RNG.uniform(-1, 1, 48_000).astype(np.float32)
    for node_id in IDS:
        for node_type in ("PassThroughNode", "VADNode"):
            limits = pb.ResourceLimits(max_memory_bytes=x.nbytes + 1_000)
            res = result(execute(server, [node(node_id, node_type, runtime=runtime)], [], {node_id: f32(x)}, resource_limits=limits))
            assert res.metrics.memory_used_bytes < x.nbytes + 1_000, (node_id, node_type)
            np.testing.assert_array_equal(samples(res.audio_outputs[node_id]), x)

    def requests(node_id: str):  # noqa: ANN202
        yield pb.StreamRequest(manifest=manifest([node(node_id, "VADNode", runtime=runtime)]))
        for seq in range(4):
            yield pb.StreamRequest(audio_chunk=pb.AudioChunk(node_id=node_id, buffer=f32(x[:16_000]), sequence=seq))
        yield pb.StreamRequest(control=pb.StreamControl(command=pb.StreamControl.COMMAND_CLOSE))

    with grpc.insecure_channel(server.address) as channel:
        call = channel.stream_stream(
            "/remotemedia.v1.PipelineService/StreamPipeline", pb.StreamRequest.SerializeToString, pb.StreamResponse.FromString
        )
        for node_id in IDS:
            used = [r.result.metrics.memory_used_bytes for r in call(requests(node_id)) if r.WhichOneof("response") == "result"]
            assert all(u < 64_000 + 1_000 for u in used), (node_id, used)


def test_rust_and_python_nodes_mix_in_one_pipeline(server: RunningServer) -> None:
    rate = 48_000
    t = np.arange(3 * rate) / rate
    burst = ((t > 0.5) & (t < 2.0)).astype(np.float32)
    harmonics = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 20))
    x = (0.3 * burst * harmonics / np.max(np.abs(harmonics)) + 0.3 * np.sin(2 * np.pi * 60 * t)).astype(np.float32)
    nodes = [
        node("resample", "AudioResampleNode", output_rate=16_000),
        node("bandpass", "BandpassFilterNode", low_hz=300, high_hz=3_400),
        node("vad", "VADNode"),
        node("loudness", "LoudnessNode"),
    ]
    edges = [("resample", "bandpass"), ("bandpass", "vad"), ("vad", "loudness")]
    res = result(execute(server, nodes, edges, {"resample": f32(x, rate)}, output_nodes=["bandpass"]))
    assert [runtime_of(res, n) for n in ("resample", "bandpass", "vad", "loudness")] == ["rust", "python", "rust", "python"]
    filtered = samples(res.audio_outputs["bandpass"])
    assert res.audio_outputs["bandpass"].sample_rate == 16_000 and len(filtered) == 3 * 16_000
    # The 60 Hz hum is far below the pass band: in the quiet first half second it is gone.
    assert np.sqrt(np.mean(filtered[1_000:7_000] ** 2)) < 0.003
    segments = data(res, "vad")["segments"]
    assert len(segments) == 1 and abs(segments[0]["start_s"] - 0.5) < 0.1 and abs(segments[0]["end_s"] - 2.0) < 0.1, segments
    expected = pyloudnorm.Meter(16_000).integrated_loudness(filtered.astype(np.float64))
    assert data(res, "loudness")["lufs"] == pytest.approx(expected, abs=0.01)
    np.testing.assert_array_equal(samples(res.audio_outputs["loudness"]), filtered)


@pytest.mark.parametrize("samples_in", [0, 1, 6_000])
def test_loudness_of_audio_shorter_than_a_gating_block_is_null_and_the_audio_passes(server: RunningServer, samples_in: int) -> None:
    # Like every node, it runs on empty or short audio: its output is the input, its `lufs` null
    # (under 0.4 s there is no gating block to measure).
    x = np.full(samples_in, 0.25, np.float32)
    res = result(execute(server, [node("loudness", "LoudnessNode")], [], {"loudness": f32(x)}))
    assert data(res, "loudness") == {"lufs": None}
    np.testing.assert_array_equal(samples(res.audio_outputs["loudness"]), x)


def test_a_spinning_python_node_does_not_delay_native_requests(plugin_server: RunningServer, tmp_path: Path) -> None:
    marker = tmp_path / "spinning"
    finished: list[str] = []

    def python_request() -> None:
        resp = execute(plugin_server, [node("spin", "SpinNode", seconds=2.0, marker=str(marker))], [], {"spin": f32(np.zeros(160))})
        assert resp.WhichOneof("outcome") == "result", resp.error
        finished.append("python")

    spinner = threading.Thread(target=python_request)
    spinner.start()
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert time.monotonic() < deadline, "the spin node never started"
        time.sleep(0.005)
    native = execute(
        plugin_server,
        [node("g", "GainNode", gain=2.0), node("r", "AudioResampleNode", output_rate=8_000)],
        [("g", "r")],
        {"g": f32(np.ones(16_000) * 0.1)},
    )
    assert native.WhichOneof("outcome") == "result"
    finished.append("native")
    spinner.join()
    assert finished == ["native", "python"]


@pytest.mark.parametrize(
    ("node_type", "params", "tolerance"),
    [
        ("GainNode", {"gain_db": -6.0}, 1e-6),
        ("PassThroughNode", {}, 0.0),
        ("FormatConverterNode", {"target_format": "i16"}, 0.0),
        ("ChannelMixerNode", {"output_channels": 1}, 1e-7),
        ("AudioChunkerNode", {"chunk_samples": 500}, 0.0),
    ],
)
def test_cpython_and_auto_give_the_same_output(server: RunningServer, node_type: str, params: dict, tolerance: float) -> None:
    x = RNG.uniform(-0.9, 0.9, 12_000).astype(np.float32)
    outs = {}
    for hint in (pb.RUNTIME_HINT_AUTO, pb.RUNTIME_HINT_CPYTHON):
        res = result(execute(server, [node("n", node_type, runtime=hint, **params)], [], {"n": f32(x, 16_000, 2)}))
        outs[hint] = (samples(res.audio_outputs["n"]).astype(np.float64), runtime_of(res, "n"), res.audio_outputs["n"].format)
    (native, rt_a, fmt_a), (python, rt_p, fmt_p) = outs[pb.RUNTIME_HINT_AUTO], outs[pb.RUNTIME_HINT_CPYTHON]
    assert (rt_a, rt_p) == ("rust", "python")
    assert fmt_a == fmt_p and native.shape == python.shape
    assert np.max(np.abs(native - python), initial=0.0) <= tolerance


def test_cpython_and_auto_resampling_agree_on_band_limited_audio(server: RunningServer) -> None:
    # Different filters (rubato vs soxr), so compare on audio well inside both pass bands:
    # tolerance 60 dB SNR, far above either filter's passband error.
    t = np.arange(48_000) / 48_000
    x = sum(np.sin(2 * np.pi * f * t + RNG.uniform(0, 6)) for f in (220, 1_000, 3_100, 5_500)).astype(np.float32) / 4
    outs = []
    for hint in (pb.RUNTIME_HINT_AUTO, pb.RUNTIME_HINT_CPYTHON):
        res = result(execute(server, [node("r", "AudioResampleNode", runtime=hint, output_rate=16_000)], [], {"r": f32(x, 48_000)}))
        outs.append(samples(res.audio_outputs["r"]).astype(np.float64))
    assert len(outs[0]) == len(outs[1]) == 16_000
    a, b = outs[0][1_000:-1_000], outs[1][1_000:-1_000]
    assert 10 * np.log10(np.sum(a**2) / np.sum((a - b) ** 2)) >= 60


def test_cpython_and_auto_vad_find_the_same_segments(server: RunningServer) -> None:
    t = np.arange(4 * 16_000) / 16_000
    voiced = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 25))
    x = (0.2 * ((t > 1) & (t < 2.5)) * voiced / np.max(np.abs(voiced)) + 0.001 * RNG.standard_normal(len(t))).astype(np.float32)
    found = []
    for hint in (pb.RUNTIME_HINT_AUTO, pb.RUNTIME_HINT_CPYTHON):
        res = result(execute(server, [node("v", "VADNode", runtime=hint)], [], {"v": f32(x)}))
        found.append(data(res, "v")["segments"])
    assert len(found[0]) == len(found[1]) == 1
    for key in ("start_s", "end_s"):
        assert abs(found[0][0][key] - found[1][0][key]) <= 0.03, found  # within one 30 ms frame


def test_rust_hint_refuses_a_python_only_node(server: RunningServer) -> None:
    resp = execute(
        server, [node("b", "BandpassFilterNode", runtime=pb.RUNTIME_HINT_RUST, low_hz=100, high_hz=200)], [], {"b": f32(np.zeros(16))}
    )
    assert resp.error.error_type == pb.ERROR_TYPE_VALIDATION
    assert "has no native Rust implementation" in resp.error.message


def test_plugins_are_served_like_built_in_nodes(plugin_server: RunningServer) -> None:
    with Client(plugin_server.address) as client:
        types = set(client.version().version_info.supported_node_types)
    assert {"InterpreterInfoNode", "SpinNode", "GateNode", "BandpassFilterNode", "LoudnessNode"} <= types


def start_up(plugins: Path) -> subprocess.CompletedProcess[str]:
    """Runs the server on the plug-in directory `plugins` until it exits (start-up refused)."""
    return subprocess.run(
        [str(SERVER_BIN), "--listen", "127.0.0.1:0", "--metrics-listen", "off", "--python-nodes-path", str(plugins)],
        capture_output=True,
        text=True,
        timeout=120,
        env=server_env(),
    )


def test_a_broken_plugin_stops_start_up_naming_its_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "good.py").write_text("x = 1\n")
    bad = tmp_path / "broken_node.py"
    bad.write_text(
        "from remotemedia_nodes import node\n\n@node('Broken')\nclass Broken:\n    def process(self, inputs)\n        return {}\n"
    )
    out = start_up(tmp_path)
    assert out.returncode == 1
    assert f"{bad}:5" in out.stderr and "SyntaxError" in out.stderr, out.stderr


@pytest.mark.parametrize(
    ("declaration", "expected"),
    [
        ("@node('VAD')", "the Python node type VAD cannot have its name VAD: VAD already names VADNode"),
        ("@node('MyGain', aliases=('Gain',))", "the Python node type MyGain cannot have its alias Gain: Gain already names GainNode"),
    ],
    ids=["name is a native alias", "alias is a native alias"],
)
def test_a_plugin_taking_another_types_name_stops_start_up(tmp_path: Path, declaration: str, expected: str) -> None:
    # A plug-in registered as `VAD` used to start, listed twice in the catalogue and never run:
    # requests resolve `VAD` to VADNode.
    (tmp_path / "clash.py").write_text(
        f"from remotemedia_nodes import Node, node\n\n{declaration}\nclass Clash(Node):\n"
        '    """A plug-in."""\n\n    def process(self, inputs):\n        return {}\n'
    )
    out = start_up(tmp_path)
    assert out.returncode == 1, out.stdout
    assert expected in out.stdout + out.stderr, out.stdout + out.stderr


def test_a_constructor_that_raises_is_reported_against_the_nodes_params(tmp_path: Path) -> None:
    # In a directory of its own: the catalogue tests build every plug-in of tests/plugins.
    (tmp_path / "init_fail.py").write_text(
        "from remotemedia_nodes import Node, node\n\n@node('InitFailNode')\nclass InitFail(Node):\n"
        '    """Its constructor raises."""\n\n    def __init__(self):\n        raise RuntimeError(\'init boom\')\n\n'
        "    def process(self, inputs):\n        return {}\n"
    )
    s = start_server("--python-nodes-path", str(tmp_path))
    try:
        resp = execute(s, [node("n", "InitFailNode")], [], {"n": f32(np.zeros(8))})
    finally:
        assert s.stop() == 0
    assert resp.error.error_type == pb.ERROR_TYPE_VALIDATION, resp
    assert resp.error.message.endswith("node `n` (InitFailNode): could not be built: RuntimeError: init boom"), resp.error.message
    assert [v["field"] for v in json.loads(resp.error.context)["violations"]] == ["nodes[0].params"]


def test_audio_returned_on_a_declared_data_port_is_a_node_error(plugin_server: RunningServer) -> None:
    resp = execute(plugin_server, [node("n", "WrongKindNode")], [], {"n": f32(np.zeros(8))})
    assert resp.error.error_type == pb.ERROR_TYPE_NODE_EXECUTION, resp
    assert "output `stats` is declared as a data port, but the node returned audio on it" in resp.error.message


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("misspelt", "process() returned output `inf`, a port the node does not declare (its output ports: `output`, `info`)"),
        ("big_int", "data output `info` holds an integer of 81 bits, outside the range a data output carries exactly"),
        ("surrogate", "data output `info` holds a string that is not valid Unicode: surrogates not allowed at position 0"),
    ],
)
def test_data_outputs_the_server_cannot_carry_as_given_are_node_errors_naming_the_port(
    plugin_server: RunningServer, mode: str, expected: str
) -> None:
    resp = execute(plugin_server, [node("n", "DataOutputNode", mode=mode)], [], {"n": f32(np.zeros(8))})
    assert resp.error.error_type == pb.ERROR_TYPE_NODE_EXECUTION, resp
    assert expected in resp.error.message, resp.error.message
    assert resp.error.stack_trace, "with the Python traceback"


def test_data_outputs_keep_64_bit_integers_and_carry_non_finite_floats_as_null(plugin_server: RunningServer) -> None:
    res = result(execute(plugin_server, [node("n", "DataOutputNode", mode="max_u64")], [], {"n": f32(np.zeros(8))}))
    assert data(res, "n") == {"info": [2**64 - 1, -(2**63)]}
    res = result(execute(plugin_server, [node("n", "DataOutputNode", mode="nan")], [], {"n": f32(np.zeros(8))}))
    assert data(res, "n") == {"info": [None, None, None, 1.5]}
    # None from process() is no outputs, as {} is.
    res = result(execute(plugin_server, [node("n", "DataOutputNode", mode="none")], [], {"n": f32(np.zeros(8))}))
    assert "n" not in res.data_outputs and "n" not in res.audio_outputs


def test_python_exceptions_come_back_with_the_node_and_traceback(plugin_server: RunningServer, tmp_path: Path) -> None:
    counter = tmp_path / "calls"
    resp = execute(
        plugin_server,
        [node("bad", "RaiseNode", kind="ValueError", message="sample rate 7 Hz is silly", counter=str(counter))],
        [],
        {"bad": f32(np.zeros(8))},
    )
    err = resp.error
    assert err.error_type == pb.ERROR_TYPE_NODE_EXECUTION
    assert err.failing_node_id == "bad"
    assert "ValueError: sample rate 7 Hz is silly" in err.message
    assert "Traceback (most recent call last)" in err.stack_trace and "helper_that_fails" in err.stack_trace
    ctx = json.loads(err.context)
    assert ctx["exception_type"] == "ValueError" and ctx["retryable"] is False and ctx["attempts"] == 1
    assert counter.read_text() == "1", "bad input is not retried"


def test_transient_python_errors_are_retried(plugin_server: RunningServer, tmp_path: Path) -> None:
    counter = tmp_path / "calls"
    resp = execute(
        plugin_server,
        [node("flaky", "RaiseNode", kind="TransientError", message="model busy", counter=str(counter))],
        [],
        {"flaky": f32(np.zeros(8))},
    )
    assert resp.error.error_type == pb.ERROR_TYPE_NODE_EXECUTION
    assert json.loads(resp.error.context)["attempts"] == 4
    assert counter.read_text() == "4", "three retries after the first failure"


def test_an_endless_python_loop_is_stopped_by_the_time_limit_and_the_server_goes_on(plugin_server: RunningServer) -> None:
    start = time.monotonic()
    resp = execute(
        plugin_server,
        [node("spin", "SpinNode", seconds=-1)],
        [],
        {"spin": f32(np.zeros(16))},
        resource_limits=pb.ResourceLimits(max_timeout_ms=300),
    )
    assert resp.error.error_type == pb.ERROR_TYPE_RESOURCE_LIMIT
    assert json.loads(resp.error.context)["running_nodes"] == ["spin"]
    assert time.monotonic() - start < 10
    for _ in range(3):  # more requests than workers: every worker serves again
        ok = execute(
            plugin_server,
            [node("spin", "SpinNode", seconds=0.01), node("g", "GainNode", runtime=pb.RUNTIME_HINT_CPYTHON)],
            [("spin", "g")],
            {"spin": f32(np.ones(16))},
        )
        assert ok.WhichOneof("outcome") == "result", ok.error


def test_sigterm_lets_an_in_flight_python_request_finish(tmp_path: Path) -> None:
    s = start_server("--python-nodes-path", str(PLUGINS))
    marker, release = tmp_path / "marker", tmp_path / "release"
    outcome: list[pb.ExecuteResponse] = []
    req = pb.ExecuteRequest(
        manifest=manifest([node("gate", "GateNode", marker=str(marker), release=str(release))]),
        audio_inputs={"gate": f32(np.full(32, 0.25))},
    )
    channel = grpc.insecure_channel(s.address)
    call = threading.Thread(target=lambda: outcome.append(Client(s.address).execute(req)))
    call.start()
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert time.monotonic() < deadline
        time.sleep(0.005)
    s.proc.send_signal(15)
    s.wait_for(lambda r: r.get("message") == "shutdown started; draining")
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING
    release.write_text("go")
    call.join(timeout=30)
    assert outcome and outcome[0].WhichOneof("outcome") == "result"
    np.testing.assert_array_equal(samples(outcome[0].result.audio_outputs["gate"]), np.full(32, 0.25, dtype=np.float32))
    assert s.proc.wait(timeout=30) == 0
    channel.close()


# Every node that runs returns its `output` audio, even when that holds no samples: an empty
# buffer in the node's output layout. Both runtimes, every built-in audio node.
EMPTY_CASES = [
    ("PassThroughNode", {}, 44_100, 1),
    ("GainNode", {"gain_db": -6}, 44_100, 1),
    ("AudioResampleNode", {"output_rate": 16_000}, 16_000, 1),
    ("VADNode", {}, 44_100, 1),
    ("FormatConverterNode", {"target_format": "i16"}, 44_100, 1),
    ("ChannelMixerNode", {"output_channels": 2}, 44_100, 2),
    ("AudioChunkerNode", {"chunk_samples": 160}, 44_100, 1),
    ("BandpassFilterNode", {"low_hz": 100, "high_hz": 1_000}, 44_100, 1),
]


@pytest.mark.parametrize("runtime", [pb.RUNTIME_HINT_AUTO, pb.RUNTIME_HINT_CPYTHON], ids=["auto", "cpython"])
@pytest.mark.parametrize(("node_type", "params", "rate", "channels"), EMPTY_CASES, ids=[c[0] for c in EMPTY_CASES])
@pytest.mark.parametrize("frames", [0, 1])
def test_a_node_with_no_output_samples_still_returns_its_output(
    server: RunningServer, runtime: int, node_type: str, params: dict, rate: int, channels: int, frames: int
) -> None:
    res = result(
        execute(server, [node("n", node_type, runtime=runtime, **params)], [], {"n": f32(np.full(frames, 0.25, np.float32), 44_100)})
    )
    assert "n" in res.audio_outputs, f"{node_type} returned no output for {frames} frame(s)"
    out = res.audio_outputs["n"]
    assert (out.sample_rate, out.channels) == (rate, channels)
    expected = 0 if node_type == "AudioResampleNode" else frames * channels
    assert out.num_samples == expected


def test_one_sample_resampled_to_16k_is_an_empty_buffer_at_16k(server: RunningServer) -> None:
    res = result(execute(server, [node("r", "AudioResampleNode", output_rate=16_000)], [], {"r": f32(np.array([0.5], np.float32), 44_100)}))
    out = res.audio_outputs["r"]
    assert (out.num_samples, out.sample_rate, out.format) == (0, 16_000, pb.AUDIO_FORMAT_F32)


@pytest.mark.parametrize("runtime", [pb.RUNTIME_HINT_RUST, pb.RUNTIME_HINT_CPYTHON], ids=["rust", "cpython"])
def test_duplicate_param_keys_are_refused_naming_the_key(server: RunningServer, runtime: int) -> None:
    m = manifest(
        [pb.NodeManifest(id="r", node_type="AudioResampleNode", runtime_hint=runtime, params='{"output_rate": 16000, "output_rate": 8000}')]
    )
    resp = execute_manifest(server, m, {"r": f32(np.zeros(480, np.float32), 48_000)})
    assert resp.error.error_type == pb.ERROR_TYPE_VALIDATION
    assert "duplicate key `output_rate`" in resp.error.message


def test_duplicate_keys_in_data_inputs_are_refused_naming_the_key(server: RunningServer) -> None:
    m = manifest([node("p", "PassThroughNode")])
    with Client(server.address) as client:
        resp = client.execute(pb.ExecuteRequest(manifest=m, data_inputs={"p": '{"text": "a", "text": "b"}'}))
    assert resp.error.error_type == pb.ERROR_TYPE_VALIDATION
    assert "duplicate key `text`" in resp.error.message


def execute_manifest(server: RunningServer, m: pb.PipelineManifest, inputs: dict[str, pb.AudioBuffer]) -> pb.ExecuteResponse:
    with Client(server.address) as client:
        return client.execute(pb.ExecuteRequest(manifest=m, audio_inputs=inputs))
