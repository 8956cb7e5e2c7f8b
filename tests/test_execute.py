"""ExecutePipeline through the Python client against the real binary."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest

from conftest import RunningServer
from helpers import f32, manifest, node, samples, violations
from remotemedia_client import AsyncClient, Client, pb


def test_a_gain_pipeline_scales_audio(server: RunningServer) -> None:
    x = np.linspace(-0.5, 0.5, 1_600, dtype=np.float32)
    req = pb.ExecuteRequest(
        manifest=manifest([node("src", "PassThroughNode"), node("gain", "GainNode", gain_db=-6.0)], [("src", "gain")]),
        audio_inputs={"src": f32(x)},
    )
    with Client(server.address) as client:
        resp = client.execute(req)
    assert resp.WhichOneof("outcome") == "result"
    out = samples(resp.result.audio_outputs["gain"])
    np.testing.assert_allclose(out, x * 10 ** (-6 / 20), rtol=1e-6)
    m = resp.result.metrics
    assert m.wall_time_ms > 0
    assert json.loads(m.node_metrics["gain"].custom_metrics)["runtime"] == "rust"
    assert m.node_metrics["gain"].samples_processed == 1_600


def test_validation_errors_are_in_band_with_every_violation(server: RunningServer) -> None:
    req = pb.ExecuteRequest(
        manifest=manifest([node("a", "NoSuchNode"), node("b", "GainNode", gain_db="x")], [("a", "ghost")]),
        audio_inputs={"a": f32(np.zeros(4)), "b": f32(np.zeros(4))},
    )
    with Client(server.address) as client:
        resp = client.execute(req)
    err = resp.error
    assert err.error_type == pb.ERROR_TYPE_VALIDATION
    fields = {v["field"] for v in violations(err)}
    assert fields == {"nodes[0].node_type", "nodes[1].params.gain_db", "connections[0].to"}
    assert err.message.count("available node types:") == 1
    assert "GainNode" in json.loads(err.context)["available_node_types"]


@pytest.mark.parametrize("text", ["{not json", "   ", "\n"])
def test_params_that_are_not_json_are_an_error(server: RunningServer, text: str) -> None:
    # Only unset params (the empty string) mean `{}`; blank text is not JSON either.
    bad = pb.NodeManifest(id="g", node_type="GainNode", params=text)
    req = pb.ExecuteRequest(manifest=manifest([bad]), audio_inputs={"g": f32(np.zeros(4))})
    with Client(server.address) as client:
        err = client.execute(req).error
    assert err.error_type == pb.ERROR_TYPE_VALIDATION
    assert "params are not valid JSON" in err.message


def test_runtime_rust_for_a_native_node_runs_natively(server: RunningServer) -> None:
    req = pb.ExecuteRequest(
        manifest=manifest([node("g", "GainNode", runtime=pb.RUNTIME_HINT_RUST, gain=2.0)]),
        audio_inputs={"g": f32(np.full(8, 0.25))},
    )
    with Client(server.address) as client:
        resp = client.execute(req)
    np.testing.assert_array_equal(samples(resp.result.audio_outputs["g"]), np.full(8, 0.5, dtype=np.float32))


def test_a_version_mismatch_is_failed_precondition(server: RunningServer) -> None:
    req = pb.ExecuteRequest(manifest=manifest([node("g", "GainNode")]), audio_inputs={"g": f32(np.zeros(4))}, client_version="v2")
    with Client(server.address) as client, pytest.raises(grpc.RpcError) as info:
        client.execute(req)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "supported versions: v1" in info.value.details()


async def test_the_async_client_gets_the_version(server: RunningServer) -> None:
    async with AsyncClient(server.address) as client:
        v = await client.version("1.2.3")
    assert v.compatible
    assert "GainNode" in v.version_info.supported_node_types


RUNTIMES = [pytest.param(pb.RUNTIME_HINT_AUTO, id="native"), pytest.param(pb.RUNTIME_HINT_CPYTHON, id="python")]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_connection_between_ports_of_different_kinds_is_a_validation_error(server: RunningServer, runtime: int) -> None:
    # VAD's `segments` is data; the resampler's `input` and the pass-through's `input` take audio.
    req = pb.ExecuteRequest(
        manifest=manifest(
            [node("vad", "VADNode", runtime=runtime), node("rs", "AudioResampleNode", runtime=runtime, output_rate=8000)],
            [],
        ),
        audio_inputs={"vad": f32(np.zeros(1_600, np.float32))},
    )
    req.manifest.connections.add(**{"from": "vad", "to": "rs", "output_key": "segments", "input_key": "input"})
    with Client(server.address) as client:
        resp = client.execute(req)
    assert resp.WhichOneof("outcome") == "error", "nothing may run"
    err = resp.error
    assert err.error_type == pb.ERROR_TYPE_VALIDATION
    [v] = violations(err)
    assert v["field"] == "connections[0]" and v["node_id"] == "rs"
    assert "output port `segments` carries data, but input port `input` of node `rs` takes audio" in v["description"]


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize(
    ("node_type", "params", "rate", "says"),
    [
        (
            "AudioResampleNode",
            {"output_rate": 16000, "input_rate": 48000},
            44100,
            "input audio is 44100 Hz but parameter input_rate is 48000 Hz",
        ),
        ("VADNode", {}, 4000, "put an AudioResampleNode with output_rate 8000 or more before it"),
    ],
)
def test_audio_a_node_does_not_take_is_a_validation_error_on_both_runtimes(
    server: RunningServer, runtime: int, node_type: str, params: dict[str, object], rate: int, says: str
) -> None:
    req = pb.ExecuteRequest(
        manifest=manifest([node("n", node_type, runtime=runtime, **params)]),
        audio_inputs={"n": f32(np.zeros(400, np.float32), rate=rate)},
    )
    with Client(server.address) as client:
        err = client.execute(req).error
    assert err.error_type == pb.ERROR_TYPE_VALIDATION, err
    assert err.failing_node_id == "n"
    assert says in err.message, err.message


@pytest.mark.parametrize(
    ("nodes", "audio", "data", "field", "text"),
    [
        # GainNode has no `data` port: the data would be dropped, or fail as a missing input.
        ([node("g", "GainNode")], {}, {"g": "1"}, "data_inputs[g]", "node `g` (GainNode) has no input port `data`"),
        # TextToSpeechNode takes text on `data` and no audio.
        (
            [node("t", "TextToSpeechNode")],
            {"t": f32(np.zeros(4))},
            {},
            "audio_inputs[t]",
            "node `t` (TextToSpeechNode) has no input port `input`",
        ),
    ],
    ids=["data into a node without a data port", "audio into a node without an audio input"],
)
def test_inputs_for_a_port_the_node_lacks_are_a_validation_error(
    server: RunningServer, nodes: list[pb.NodeManifest], audio: dict, data: dict, field: str, text: str
) -> None:
    req = pb.ExecuteRequest(manifest=manifest(nodes), audio_inputs=audio, data_inputs=data)
    with Client(server.address) as client:
        err = client.execute(req).error
    assert err.error_type == pb.ERROR_TYPE_VALIDATION, err
    found = {v["field"]: v["description"] for v in violations(err)}
    assert text in found[field], found


@pytest.mark.parametrize("method", ["ExecutePipeline", "GetVersion"])
def test_a_unary_call_carrying_two_request_messages_is_refused(server: RunningServer, method: str) -> None:
    # A client-streaming call on a unary method: tonic would decode the first message and drop
    # the second, answering as if the call were well formed.
    request = (
        pb.ExecuteRequest(manifest=manifest([node("g", "GainNode")]), audio_inputs={"g": f32(np.zeros(8))})
        if method == "ExecutePipeline"
        else pb.VersionRequest(client_version="v1")
    )
    before = server.metric("remotemedia_requests_total", rpc=method, code="INVALID_ARGUMENT")
    with grpc.insecure_channel(server.address) as channel:
        twice = channel.stream_unary(
            f"/remotemedia.v1.PipelineService/{method}",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=lambda b: b,
        )
        with pytest.raises(grpc.RpcError) as e:
            twice(iter([request, request]), timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        assert "carried 2 request messages; a unary call takes exactly one" in e.value.details()  # type: ignore[attr-defined]
        assert twice(iter([request]), timeout=10), "one message is answered"
    assert server.metric("remotemedia_requests_total", rpc=method, code="INVALID_ARGUMENT") == before + 1
