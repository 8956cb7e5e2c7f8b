"""The real binary exposed: bearer tokens (never logged), version negotiation, every limit with
its documented error, and gauges back at zero after clients leave."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.rpc import error_details_pb2, status_pb2
from prometheus_client.parser import text_string_to_metric_families

from conftest import PLUGINS, RunningServer, start_server
from helpers import f32, manifest, node
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect
from websockets.typing import Subprotocol

from remotemedia_client import AsyncClient, Client, pb

TOKEN = "s3cr3t-7b1f0c2e9a"


def error_info(e: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    for key, value in e.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    return info
    raise AssertionError(f"no ErrorInfo in {e}")


def retry_info(e: grpc.RpcError) -> error_details_pb2.RetryInfo:
    for key, value in e.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                    info = error_details_pb2.RetryInfo()
                    detail.Unpack(info)
                    return info
    raise AssertionError(f"no RetryInfo in {e}")


def gain_request(n: int = 16) -> pb.ExecuteRequest:
    return pb.ExecuteRequest(manifest=manifest([node("g", "GainNode")]), audio_inputs={"g": f32(np.full(n, 0.1))})


@pytest.fixture(scope="module")
def secured() -> Iterator[RunningServer]:
    s = start_server("--auth-tokens", TOKEN, "--python-nodes-path", str(PLUGINS), "--log-level", "debug")
    yield s
    assert s.stop() == 0
    log = "\n".join(s.lines) + (s.proc.stderr.read() if s.proc.stderr else "")
    assert TOKEN not in log, "a token reached the server's log"


def test_no_token_a_wrong_token_and_a_stream_without_one_are_unauthenticated(secured: RunningServer) -> None:
    for client in (Client(secured.address), Client(secured.address, token="wrong-token")):
        with client, pytest.raises(grpc.RpcError) as info:
            client.execute(gain_request())
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_info(info.value).reason == "AUTHENTICATION"
        assert "wrong-token" not in info.value.details()

    async def stream_without_token() -> grpc.aio.AioRpcError:
        async with AsyncClient(secured.address) as client:
            call = client.stream_call()
            try:
                await call.read()  # nothing was sent: the refusal does not wait for a message
            except grpc.aio.AioRpcError as e:
                return e
        raise AssertionError("the stream was not refused")

    e = asyncio.run(stream_without_token())
    assert e.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_good_token_works_and_version_and_health_stay_public(secured: RunningServer) -> None:
    with Client(secured.address, token=TOKEN) as client:
        assert client.execute(gain_request()).WhichOneof("outcome") == "result"
    with Client(secured.address) as anonymous:
        assert anonymous.version().compatible


@pytest.mark.parametrize(("declared", "accepted"), [("v1", True), ("1", True), ("1.4.0", True), ("", True), ("v2", False)])
def test_versions_are_negotiated(secured: RunningServer, declared: str, accepted: bool) -> None:
    channel = grpc.insecure_channel(secured.address)
    stub = pb.PipelineServiceStub(channel)
    metadata = [("authorization", f"Bearer {TOKEN}")] + ([("remotemedia-protocol-version", declared)] if declared else [])
    version = stub.GetVersion(pb.VersionRequest(client_version=declared))
    assert version.compatible is accepted
    if accepted:
        assert stub.ExecutePipeline(gain_request(), metadata=metadata).WhichOneof("outcome") == "result"
    else:
        assert "supported versions: v1" in version.compatibility_message
        with pytest.raises(grpc.RpcError) as info:
            stub.ExecutePipeline(gain_request(), metadata=metadata)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "supported versions: v1" in info.value.details()
        assert error_info(info.value).metadata["supported_versions"] == "v1"
        assert dict(info.value.trailing_metadata())["remotemedia-supported-versions"] == "v1"
    channel.close()


@pytest.fixture(scope="module")
def limited() -> Iterator[RunningServer]:
    s = start_server(
        "--max-message-bytes",
        "262144",
        "--max-concurrent-executions",
        "1",
        "--stream-idle-timeout-ms",
        "400",
        "--python-nodes-path",
        str(PLUGINS),
    )
    yield s
    assert s.stop() == 0


def served_next(s: RunningServer) -> None:
    with Client(s.address) as client:
        assert client.execute(gain_request()).WhichOneof("outcome") == "result"


def test_each_limit_gets_its_documented_error_and_the_next_request_is_served(limited: RunningServer) -> None:
    with Client(limited.address) as client:
        # Message size: a status.
        with pytest.raises(grpc.RpcError) as info:
            client.execute(gain_request(100_000))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_info(info.value).reason == "RESOURCE_LIMIT" and "max_message_bytes" in info.value.details()
        served_next(limited)
        # Above a cap, samples over the limit, memory, time: in-band RESOURCE_LIMIT naming the limit.
        cases = [
            (pb.ResourceLimits(max_timeout_ms=31_000), gain_request(), "max_timeout_ms"),
            (pb.ResourceLimits(max_memory_bytes=2 << 30), gain_request(), "max_memory_bytes"),
            (pb.ResourceLimits(max_audio_samples=8), gain_request(), "max_audio_samples"),
            (pb.ResourceLimits(max_memory_bytes=100), gain_request(), "memory limit"),
        ]
        for limits, req, text in cases:
            req.resource_limits.CopyFrom(limits)
            err = client.execute(req).error
            assert err.error_type == pb.ERROR_TYPE_RESOURCE_LIMIT, (text, err)
            assert text in err.message or text in err.context, (text, err)
            served_next(limited)
        slow = pb.ExecuteRequest(
            manifest=manifest([node("spin", "SpinNode", seconds=-1)]),
            audio_inputs={"spin": f32(np.zeros(8))},
            resource_limits=pb.ResourceLimits(max_timeout_ms=200),
        )
        err = client.execute(slow).error
        assert err.error_type == pb.ERROR_TYPE_RESOURCE_LIMIT and "time limit of 200 ms" in err.message
        served_next(limited)


def test_over_the_concurrency_cap_is_resource_exhausted_with_retry_info(limited: RunningServer, tmp_path: Path) -> None:
    marker = tmp_path / "spinning"
    spinning = pb.ExecuteRequest(
        manifest=manifest([node("spin", "SpinNode", seconds=1.5, marker=str(marker))]), audio_inputs={"spin": f32(np.zeros(8))}
    )
    first = threading.Thread(target=lambda: Client(limited.address).execute(spinning))
    first.start()
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert time.monotonic() < deadline
        time.sleep(0.005)
    with Client(limited.address) as client, pytest.raises(grpc.RpcError) as info:
        client.execute(gain_request())
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(info.value).reason == "RESOURCE_LIMIT"
    delay = retry_info(info.value).retry_delay
    assert delay.seconds * 1e9 + delay.nanos > 0
    first.join()
    served_next(limited)


def test_an_idle_stream_is_closed(limited: RunningServer) -> None:
    async def idle() -> grpc.StatusCode:
        async with AsyncClient(limited.address) as client:
            call = client.stream_call()
            await call.write(pb.StreamRequest(manifest=manifest([node("g", "GainNode")])))
            await call.read()
            try:
                while await call.read() is not grpc.aio.EOF:
                    pass
            except grpc.aio.AioRpcError:
                pass
            return await call.code()

    assert asyncio.run(idle()) == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_client_waiting_for_a_slow_result_is_not_idle(limited: RunningServer) -> None:
    # The chunk takes 1 s, past the 400 ms idle timeout: that time is the server's work, not the
    # client's silence, so the client gets its result and closes the stream normally, over gRPC
    # and over WebSocket alike.
    spin = manifest([node("spin", "SpinNode", seconds=1.0)])
    chunk = pb.StreamRequest(audio_chunk=pb.AudioChunk(node_id="spin", buffer=f32(np.zeros(160, np.float32)), sequence=0))
    close = pb.StreamRequest(control=pb.StreamControl(command=pb.StreamControl.COMMAND_CLOSE))

    result_read = threading.Event()

    def requests() -> Iterator[pb.StreamRequest]:
        yield pb.StreamRequest(manifest=spin)
        yield chunk
        assert result_read.wait(10)  # the close is sent only once the result has come
        yield close

    with Client(limited.address) as client:
        kinds = []
        for response in client.stream_call(requests()):
            kinds.append(response.WhichOneof("response"))
            if kinds[-1] == "result":
                result_read.set()
    assert kinds[:2] == ["ready", "result"] and "error" not in kinds, kinds

    with ws_connect(f"ws://{limited.address}/ws/StreamPipeline", subprotocols=[Subprotocol("remotemedia.v1")], open_timeout=10) as ws:
        ws.send(pb.StreamRequest(manifest=spin).SerializeToString())
        ws.send(chunk.SerializeToString())
        assert pb.StreamResponse.FromString(ws.recv(timeout=10)).WhichOneof("response") == "ready"
        assert pb.StreamResponse.FromString(ws.recv(timeout=10)).WhichOneof("response") == "result"
        ws.send(close.SerializeToString())
        kinds = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                kinds.append(pb.StreamResponse.FromString(ws.recv(timeout=10)).WhichOneof("response"))
    assert "error" not in kinds and closed.value.rcvd is not None and closed.value.rcvd.code == 1000, (kinds, closed.value)


def metric(server: RunningServer, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(server.metrics()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def test_metrics_parse_as_prometheus_text_and_move_with_requests(limited: RunningServer) -> None:
    families = {f.name: f for f in text_string_to_metric_families(limited.metrics())}
    for name in (
        "remotemedia_requests",
        "remotemedia_request_duration_seconds",
        "remotemedia_active_executions",
        "remotemedia_active_streams",
    ):
        assert name in families, sorted(families)
    before = metric(limited, "remotemedia_requests_total", rpc="ExecutePipeline", code="OK")
    decoded = metric(limited, "remotemedia_codec_duration_seconds_count", direction="decode")
    encoded = metric(limited, "remotemedia_codec_duration_seconds_count", direction="encode")
    converted = metric(limited, "remotemedia_conversion_duration_seconds_count", rpc="ExecutePipeline")
    for _ in range(3):
        served_next(limited)
    assert metric(limited, "remotemedia_requests_total", rpc="ExecutePipeline", code="OK") == before + 3
    # One request message decoded and one response encoded per call, each converted once.
    assert metric(limited, "remotemedia_codec_duration_seconds_count", direction="decode") == decoded + 3
    assert metric(limited, "remotemedia_codec_duration_seconds_count", direction="encode") == encoded + 3
    assert metric(limited, "remotemedia_conversion_duration_seconds_count", rpc="ExecutePipeline") == converted + 3
    buckets = [s for s in families["remotemedia_request_duration_seconds"].samples if s.name.endswith("_bucket")]
    assert any(s.labels["le"] == "0.005" for s in buckets), "a bucket at the 5 ms objective"


def test_a_client_that_leaves_mid_execution_stops_the_work_and_gauges_return_to_zero(limited: RunningServer, tmp_path: Path) -> None:
    marker = tmp_path / "spinning"
    cancelled_before = metric(limited, "remotemedia_requests_total", rpc="ExecutePipeline", code="CANCELLED")
    channel = grpc.insecure_channel(limited.address)
    future = pb.PipelineServiceStub(channel).ExecutePipeline.future(
        pb.ExecuteRequest(
            manifest=manifest([node("spin", "SpinNode", seconds=-1, marker=str(marker))]), audio_inputs={"spin": f32(np.zeros(8))}
        )
    )
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert time.monotonic() < deadline
        time.sleep(0.005)
    assert metric(limited, "remotemedia_active_executions") == 1
    future.cancel()
    channel.close()
    while (
        metric(limited, "remotemedia_active_executions") != 0
        or metric(limited, "remotemedia_requests_total", rpc="ExecutePipeline", code="CANCELLED") == cancelled_before
    ):
        assert time.monotonic() < deadline, "the abandoned execution was not stopped"
        time.sleep(0.01)
    assert metric(limited, "remotemedia_active_streams") == 0
    served_next(limited)  # the interrupted worker serves again (one execution slot, now free)
