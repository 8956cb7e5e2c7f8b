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


def test_params_that_are_not_json_are_an_error(server: RunningServer) -> None:
    bad = pb.NodeManifest(id="g", node_type="GainNode", params="{not json")
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
