"""Metrics exist from start-up and count outcomes as users see them: in-band failures are
failures, refusals count against the limit that refused them."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from conftest import GRPCURL, REPO, RunningServer, start_server
from helpers import f32, manifest, node
from remotemedia_client import pb
from remotemedia_client._proto.remotemedia.v1 import service_pb2_grpc

OPERATIONS = REPO / "docs" / "operations.md"


def documented_families() -> list[str]:
    """The metric names of the table in docs/operations.md."""
    text = OPERATIONS.read_text()
    section = text.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `((?:remotemedia|process)_[a-z_]+)` \|", section, flags=re.M)


def families(text: str) -> set[str]:
    return set(re.findall(r"^# TYPE (\S+) ", text, flags=re.M))


def test_a_fresh_server_exports_every_documented_family() -> None:
    s = start_server()
    try:
        text = s.metrics()
    finally:
        assert s.stop() == 0
    documented = documented_families()
    assert len(documented) >= 15, documented
    present = families(text)
    missing = [name for name in documented if name not in present]
    assert not missing, f"documented but absent on a fresh server: {missing}\n{text}"


@pytest.fixture(scope="module")
def srv() -> Iterator[RunningServer]:
    s = start_server("--max-message-bytes", "200000", "--auth-tokens", "t0k3n")
    yield s
    assert s.stop() == 0


def value(text: str, series: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_counters_and_gauges_start_at_zero_for_their_known_labels(srv: RunningServer) -> None:
    text = srv.metrics()
    for series in [
        'remotemedia_requests_total{rpc="ExecutePipeline",code="OK",outcome="success"}',
        'remotemedia_requests_total{rpc="StreamPipeline",code="INVALID_ARGUMENT",outcome="validation"}',
        'remotemedia_requests_total{rpc="ExecutePipeline",code="UNAUTHENTICATED",outcome="authentication"}',
        'remotemedia_requests_total{rpc="other",code="UNIMPLEMENTED",outcome="validation"}',
        'remotemedia_limit_rejections_total{limit="max_message_bytes"}',
        'remotemedia_limit_rejections_total{limit="max_concurrent_streams"}',
        'remotemedia_auth_rejections_total{reason="invalid"}',
        'remotemedia_node_failures_total{node_type="GainNode"}',
        'remotemedia_stream_chunks_total{outcome="validation"}',
        'remotemedia_stream_chunks_total{outcome="resource_limit"}',
        "remotemedia_active_executions",
        "remotemedia_active_streams",
        'remotemedia_limit_rejections_total{limit="model_wait_ms"}',
        'remotemedia_model_loads_total{model="pocketsphinx-en-us"}',
        'remotemedia_model_instances{model="silero-vad"}',
        'remotemedia_model_instances_in_use{model="pocketsphinx-en-us"}',
        'remotemedia_model_pool_exhausted_total{model="silero-vad"}',
        'remotemedia_model_inference_duration_seconds_count{model="pocketsphinx-en-us",node_type="SpeechRecognitionNode"}',
        'remotemedia_model_wait_duration_seconds_count{model="pocketsphinx-en-us"}',
    ]:
        assert value(text, series) == 0, f"{series} is not 0 on a fresh server:\n{text}"
    # Bounded labels: the model metrics name only the models the nodes register.
    assert set(re.findall(r'^remotemedia_model_\w+\{[^}]*model="([^"]+)"', text, flags=re.M)) == {
        "espeak-ng",
        "pocketsphinx-en-us",
        "silero-vad",
    }
    assert re.search(r'^remotemedia_build_info\{[^}]*version="[0-9.]+"[^}]*\} 1$', text, flags=re.M), text
    assert value(text, "process_cpu_seconds_total") is not None, "the process metrics are there"
    assert (value(text, "process_resident_memory_bytes") or 0) > 1e6


def test_an_in_band_failure_counts_as_a_failure_not_a_success(srv: RunningServer) -> None:
    assert GRPCURL.exists()
    data = {
        "manifest": {"version": "v1", "nodes": [{"id": "gain", "node_type": "GainNod", "params": '{"gain_db": -6}'}]},
        "audio_inputs": {
            "gain": {
                "samples": "AAAAPwAAAL8AAIA+AAAAAA==",
                "sample_rate": 16000,
                "channels": 1,
                "format": "AUDIO_FORMAT_F32",
                "num_samples": 4,
            }
        },
    }
    before_ok = srv.metric("remotemedia_requests_total", rpc="ExecutePipeline", outcome="success")
    before_bad = srv.metric("remotemedia_requests_total", rpc="ExecutePipeline", code="OK", outcome="validation")
    out = subprocess.run(
        [
            str(GRPCURL),
            "-plaintext",
            "-H",
            "authorization: Bearer t0k3n",
            "-d",
            json.dumps(data),
            srv.address,
            "remotemedia.v1.PipelineService/ExecutePipeline",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["error"]["errorType"] == "ERROR_TYPE_VALIDATION"
    assert srv.metric("remotemedia_requests_total", rpc="ExecutePipeline", code="OK", outcome="validation") == before_bad + 1
    assert srv.metric("remotemedia_requests_total", rpc="ExecutePipeline", outcome="success") == before_ok
    # The error-ratio query of docs/operations.md sees it.
    assert 'outcome!="success"' in OPERATIONS.read_text()


def test_a_node_failure_in_a_stream_chunk_counts_against_the_chunks(srv: RunningServer) -> None:
    stub = service_pb2_grpc.PipelineServiceStub(grpc.insecure_channel(srv.address))
    before = srv.metric("remotemedia_stream_chunks_total", outcome="node_execution")
    streams_before = srv.metric("remotemedia_requests_total", rpc="StreamPipeline", code="OK", outcome="node_execution")
    requests = [
        pb.StreamRequest(manifest=manifest([node("c", "ChannelMixerNode", output_channels=1)])),
        # NaN samples: the node refuses the chunk, the session goes on.
        pb.StreamRequest(audio_chunk=pb.AudioChunk(node_id="c", buffer=f32(np.full(160, np.nan, np.float32)), sequence=0)),
        pb.StreamRequest(control=pb.StreamControl(command=pb.StreamControl.COMMAND_CLOSE)),
    ]
    responses = list(stub.StreamPipeline(iter(requests), metadata=(("authorization", "Bearer t0k3n"),), timeout=30))
    assert any(r.WhichOneof("response") == "error" for r in responses)
    assert srv.metric("remotemedia_stream_chunks_total", outcome="node_execution") == before + 1
    # The stream ended OK, but its caller saw a chunk fail: it counts as a failure too.
    assert srv.metric("remotemedia_requests_total", rpc="StreamPipeline", code="OK", outcome="node_execution") == streams_before + 1


def test_audio_a_node_refuses_in_a_stream_counts_as_validation_not_as_a_node_failure(srv: RunningServer) -> None:
    stub = service_pb2_grpc.PipelineServiceStub(grpc.insecure_channel(srv.address))
    before = srv.metric("remotemedia_stream_chunks_total", outcome="validation")
    failures = srv.metric("remotemedia_node_failures_total", node_type="VADNode")
    requests = [
        pb.StreamRequest(manifest=manifest([node("v", "VADNode")])),
        # 4 kHz is below what a VADNode takes: the chunk is refused in-band, the session goes on.
        pb.StreamRequest(audio_chunk=pb.AudioChunk(node_id="v", buffer=f32(np.zeros(80, np.float32), 4_000), sequence=0)),
        pb.StreamRequest(control=pb.StreamControl(command=pb.StreamControl.COMMAND_CLOSE)),
    ]
    responses = list(stub.StreamPipeline(iter(requests), metadata=(("authorization", "Bearer t0k3n"),), timeout=30))
    assert [r.error.error_type for r in responses if r.WhichOneof("response") == "error"] == [pb.ERROR_TYPE_VALIDATION]
    assert srv.metric("remotemedia_stream_chunks_total", outcome="validation") == before + 1
    assert srv.metric("remotemedia_node_failures_total", node_type="VADNode") == failures


def test_a_message_over_the_size_cap_counts_as_a_limit_rejection(srv: RunningServer) -> None:
    stub = service_pb2_grpc.PipelineServiceStub(grpc.insecure_channel(srv.address))
    before = srv.metric("remotemedia_limit_rejections_total", limit="max_message_bytes")
    big = pb.ExecuteRequest(manifest=manifest([node("g", "GainNode")]), audio_inputs={"g": f32(np.zeros(100_000, np.float32))})
    with pytest.raises(grpc.RpcError) as caught:
        stub.ExecutePipeline(big, metadata=(("authorization", "Bearer t0k3n"),), timeout=30)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    assert srv.metric("remotemedia_limit_rejections_total", limit="max_message_bytes") == before + 1
    assert srv.metric("remotemedia_requests_total", rpc="ExecutePipeline", code="RESOURCE_EXHAUSTED", outcome="resource_limit") >= 1


def test_an_unauthenticated_call_counts_by_code_and_outcome(srv: RunningServer) -> None:
    stub = service_pb2_grpc.PipelineServiceStub(grpc.insecure_channel(srv.address))
    before = srv.metric("remotemedia_requests_total", rpc="ExecutePipeline", code="UNAUTHENTICATED", outcome="authentication")
    with pytest.raises(grpc.RpcError):
        stub.ExecutePipeline(pb.ExecuteRequest(), timeout=30)
    assert srv.metric("remotemedia_requests_total", rpc="ExecutePipeline", code="UNAUTHENTICATED", outcome="authentication") == before + 1


def test_node_time_counts_the_nodes_of_a_failed_run(srv: RunningServer) -> None:
    # Node time used to be recorded only for runs that succeeded: a dashboard showed none for
    # failing work, not even for the nodes that finished before the failure.
    def count(node_type: str) -> float:
        return srv.metric("remotemedia_node_duration_seconds_count", node_type=node_type, runtime="rust")

    stub = service_pb2_grpc.PipelineServiceStub(grpc.insecure_channel(srv.address))
    auth = (("authorization", "Bearer t0k3n"),)
    m = manifest([node("p", "PassThroughNode"), node("c", "ChannelMixerNode", output_channels=1)], [("p", "c")])
    nan = f32(np.full(160, np.nan, np.float32))
    before = count("PassThroughNode"), count("ChannelMixerNode")
    resp = stub.ExecutePipeline(pb.ExecuteRequest(manifest=m, audio_inputs={"p": nan}), metadata=auth, timeout=30)
    assert resp.error.failing_node_id == "c", resp
    assert (count("PassThroughNode"), count("ChannelMixerNode")) == (before[0] + 1, before[1] + 1)

    requests = [
        pb.StreamRequest(manifest=m),
        pb.StreamRequest(audio_chunk=pb.AudioChunk(node_id="p", buffer=nan, sequence=0)),
        pb.StreamRequest(control=pb.StreamControl(command=pb.StreamControl.COMMAND_CLOSE)),
    ]
    responses = list(stub.StreamPipeline(iter(requests), metadata=auth, timeout=30))
    assert [r.WhichOneof("response") for r in responses][:2] == ["ready", "error"]
    assert (count("PassThroughNode"), count("ChannelMixerNode")) == (before[0] + 2, before[1] + 2)


def reason(e: grpc.RpcError) -> str:
    """The `google.rpc.ErrorInfo` reason of a status."""
    status = rpc_status.from_call(e)  # type: ignore[arg-type]
    assert status is not None, f"no status details in {e}"
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    raise AssertionError(f"no ErrorInfo in {e}")


@pytest.mark.parametrize("rpc", ["ExecutePipeline", "GetVersion"])
def test_a_unary_call_without_a_request_message_is_the_clients_mistake(srv: RunningServer, rpc: str) -> None:
    # tonic answers it INTERNAL "Missing request message.", which was logged at ERROR and not
    # counted.
    before = srv.metric("remotemedia_requests_total", rpc=rpc, code="INVALID_ARGUMENT", outcome="validation")
    call = grpc.insecure_channel(srv.address).stream_unary(f"/remotemedia.v1.PipelineService/{rpc}")
    with pytest.raises(grpc.RpcError) as refused:
        call(iter([]), metadata=(("authorization", "Bearer t0k3n"),), timeout=10)
    e = refused.value
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e  # type: ignore[attr-defined]
    assert e.details() == "the call carried no request message; a unary call takes exactly one"  # type: ignore[attr-defined]
    assert reason(e) == "VALIDATION"
    assert srv.metric("remotemedia_requests_total", rpc=rpc, code="INVALID_ARGUMENT", outcome="validation") == before + 1
    assert not [r for r in srv.records() if r.get("level") == "ERROR"], "a client's mistake is not a server error"


def test_a_gzip_request_over_the_size_cap_once_decompressed_is_a_limit_rejection(srv: RunningServer) -> None:
    # Zeros compress 1000-fold: 800 kB of samples travel as under 1 kB, under the 200 kB cap.
    before = srv.metric("remotemedia_limit_rejections_total", limit="max_message_bytes")
    stub = service_pb2_grpc.PipelineServiceStub(grpc.insecure_channel(srv.address))
    req = pb.ExecuteRequest(manifest=manifest([node("g", "GainNode")]), audio_inputs={"g": f32(np.zeros(200_000, np.float32))})
    with pytest.raises(grpc.RpcError) as refused:
        stub.ExecutePipeline(req, metadata=(("authorization", "Bearer t0k3n"),), timeout=10, compression=grpc.Compression.Gzip)
    e = refused.value
    assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e  # type: ignore[attr-defined]
    assert "max_message_bytes" in e.details(), e.details()  # type: ignore[attr-defined]
    assert reason(e) == "RESOURCE_LIMIT"
    assert srv.metric("remotemedia_limit_rejections_total", limit="max_message_bytes") == before + 1


def test_a_call_refused_for_its_compression_is_counted(srv: RunningServer) -> None:
    # The server takes gzip only: deflate is refused before any handler runs (UNIMPLEMENTED,
    # with `grpc-accept-encoding` listing the encodings it takes, which grpcio keeps to itself),
    # and the call counts once.
    stub = service_pb2_grpc.PipelineServiceStub(grpc.insecure_channel(srv.address))
    auth = [("authorization", "Bearer t0k3n")]
    request = pb.ExecuteRequest(manifest=manifest([node("g", "GainNode", gain_db=-3)]), audio_inputs={"g": f32(np.zeros(16, np.float32))})
    for rpc, call in [
        ("ExecutePipeline", lambda: stub.ExecutePipeline(request, metadata=auth, timeout=10, compression=grpc.Compression.Deflate)),
        (
            "StreamPipeline",
            lambda: list(
                stub.StreamPipeline(
                    iter([pb.StreamRequest(manifest=request.manifest)]), metadata=auth, timeout=10, compression=grpc.Compression.Deflate
                )
            ),
        ),
    ]:
        before = srv.metric("remotemedia_requests_total", rpc=rpc, code="UNIMPLEMENTED", outcome="validation")
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED, e.value  # type: ignore[attr-defined]
        assert (
            "compress requests with gzip, or not at all (grpc-accept-encoding: gzip,identity): `deflate` is not supported"
            in e.value.details()
        ), e.value  # type: ignore[attr-defined]
        assert reason(e.value) == "VALIDATION"
        assert srv.metric("remotemedia_requests_total", rpc=rpc, code="UNIMPLEMENTED", outcome="validation") == before + 1, rpc


def test_another_path_on_the_metrics_port_is_told_where_the_metrics_are(srv: RunningServer) -> None:
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://{srv.metrics_address}/metric", timeout=5)
    assert e.value.code == 404
    assert "GET /metrics" in e.value.read().decode()
