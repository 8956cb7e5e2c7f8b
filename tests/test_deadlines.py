"""A call whose deadline passes ends with DEADLINE_EXCEEDED (status 4), on every transport:
grpcio, gRPC-Web, unary and streaming. The server's metrics count it as such."""

from __future__ import annotations

import http.client
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from conftest import PLUGINS, RunningServer, start_server
from helpers import f32, manifest, node
from remotemedia_client import pb
from remotemedia_client._proto.remotemedia.v1 import service_pb2_grpc

ORIGIN = "http://localhost:8123"


@pytest.fixture(scope="module")
def srv() -> Iterator[RunningServer]:
    s = start_server("--python-nodes-path", str(PLUGINS), "--cors-allowed-origins", ORIGIN)
    yield s
    assert s.stop() == 0


def slow_request(seconds: float = 0.3) -> pb.ExecuteRequest:
    """A pipeline that takes about `seconds` (a Python node busy-looping)."""
    return pb.ExecuteRequest(
        manifest=manifest([node("spin", "SpinNode", seconds=seconds)]), audio_inputs={"spin": f32(np.zeros(160, np.float32))}
    )


def grpc_web_status(s: RunningServer, message: bytes, timeout: str) -> str | None:
    host, port = s.address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request(
        "POST",
        "/remotemedia.v1.PipelineService/ExecutePipeline",
        body=b"\x00" + struct.pack(">I", len(message)) + message,
        headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1", "origin": ORIGIN, "grpc-timeout": timeout},
    )
    response = conn.getresponse()
    body = response.read()
    status = response.getheader("grpc-status")
    while body and status is None:
        flag, length = body[0], struct.unpack(">I", body[1:5])[0]
        payload, body = body[5 : 5 + length], body[5 + length :]
        if flag & 0x80:
            for line in payload.decode().split("\r\n"):
                key, _, value = line.partition(":")
                if key.strip().lower() == "grpc-status":
                    status = value.strip()
    return status


def test_grpc_web_with_a_50ms_deadline_gets_deadline_exceeded(srv: RunningServer) -> None:
    before = srv.metric("remotemedia_requests_total", rpc="ExecutePipeline", code="DEADLINE_EXCEEDED")
    for _ in range(3):
        assert grpc_web_status(srv, slow_request().SerializeToString(), "50m") == "4"
    after = srv.metric("remotemedia_requests_total", rpc="ExecutePipeline", code="DEADLINE_EXCEEDED", outcome="deadline_exceeded")
    assert after - before == 3
    assert srv.metric("remotemedia_requests_total", rpc="ExecutePipeline", code="CANCELLED") == 0


def test_grpcio_deadlines_never_surface_as_cancelled(srv: RunningServer) -> None:
    stub = service_pb2_grpc.PipelineServiceStub(grpc.insecure_channel(srv.address))
    codes = []
    for _ in range(60):
        with pytest.raises(grpc.RpcError) as caught:
            stub.ExecutePipeline(slow_request(0.2), timeout=0.05)
        codes.append(caught.value.code())  # type: ignore[attr-defined]
    assert set(codes) == {grpc.StatusCode.DEADLINE_EXCEEDED}


def test_a_stream_past_its_deadline_ends_with_deadline_exceeded(srv: RunningServer) -> None:
    stub = service_pb2_grpc.PipelineServiceStub(grpc.insecure_channel(srv.address))
    before = srv.metric("remotemedia_requests_total", rpc="StreamPipeline", code="DEADLINE_EXCEEDED")

    done = threading.Event()

    def requests() -> Iterator[pb.StreamRequest]:
        yield pb.StreamRequest(manifest=manifest([node("g", "GainNode")]))
        # Never closes: only the deadline ends the call.
        done.wait(10)

    with pytest.raises(grpc.RpcError) as caught:
        for _ in stub.StreamPipeline(requests(), timeout=0.3):
            pass
    done.set()
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
    srv.wait_for(lambda r: r.get("message") == "StreamPipeline finished" and "DeadlineExceeded" in str(r.get("code")), timeout=10)
    assert srv.metric("remotemedia_requests_total", rpc="StreamPipeline", code="DEADLINE_EXCEEDED") == before + 1


def test_a_deadline_longer_than_the_work_changes_nothing(srv: RunningServer) -> None:
    stub = service_pb2_grpc.PipelineServiceStub(grpc.insecure_channel(srv.address))
    resp = stub.ExecutePipeline(slow_request(0.05), timeout=10)
    assert resp.WhichOneof("outcome") == "result"


def test_the_log_line_of_a_call_cut_short_carries_its_request_id(srv: RunningServer, tmp_path: Path) -> None:
    stub = service_pb2_grpc.PipelineServiceStub(grpc.insecure_channel(srv.address))

    def gated(name: str) -> pb.ExecuteRequest:
        gate = node("gate", "GateNode", marker=str(tmp_path / name), release=str(tmp_path / "release"))
        return pb.ExecuteRequest(manifest=manifest([gate]), audio_inputs={"gate": f32(np.zeros(160, np.float32))})

    def cut_line() -> dict:
        return srv.wait_for(lambda r: r.get("message", "").endswith("work cancelled") and r.get("rpc") == "ExecutePipeline")

    try:
        # The client's deadline passes first: the server learns of it when the client resets the call.
        with pytest.raises(grpc.RpcError):
            stub.ExecutePipeline(gated("deadline"), metadata=[("x-request-id", "cut-by-deadline")], timeout=0.3)
        assert cut_line().get("request_id") == "cut-by-deadline"
        # The client cancels while the node runs.
        call = stub.ExecutePipeline.future(gated("cancel"), metadata=[("x-request-id", "cut-by-cancel")], timeout=30)
        while not (tmp_path / "cancel").exists():
            assert not call.done(), call
            time.sleep(0.01)
        call.cancel()
        assert cut_line().get("request_id") == "cut-by-cancel"
    finally:
        (tmp_path / "release").write_text("go")


def test_many_calls_at_once_with_short_deadlines_leave_the_connection_and_its_stream_alone(srv: RunningServer) -> None:
    # Each expired deadline is a RST_STREAM from grpcio. Fifty calls at a time with 10 ms
    # deadlines made h2 count more than its 20 streams reset before the server took them up,
    # and the server closed the connection (GOAWAY too_many_resets), killing a healthy stream
    # on it with UNAVAILABLE.
    channel = grpc.insecure_channel(srv.address)
    stub = service_pb2_grpc.PipelineServiceStub(channel)
    chunks: "list[pb.StreamRequest]" = []
    more = threading.Event()

    def requests() -> Iterator[pb.StreamRequest]:
        yield pb.StreamRequest(manifest=manifest([node("g", "GainNode")]))
        for i in range(2):
            more.wait(120)
            yield pb.StreamRequest(audio_chunk=pb.AudioChunk(node_id="g", buffer=f32(np.zeros(160, np.float32)), sequence=i))

    stream = stub.StreamPipeline(requests(), timeout=120)
    assert next(stream).WhichOneof("response") == "ready"
    req = pb.ExecuteRequest(
        manifest=manifest([node("rs", "AudioResampleNode", output_rate=44_100), node("vad", "VADNode")], [("rs", "vad")]),
        audio_inputs={"rs": f32(np.zeros(16_000, np.float32), rate=16_000)},
    )
    codes: "list[str]" = []
    lock = threading.Lock()

    def calls() -> None:
        for _ in range(10):
            try:
                stub.ExecutePipeline(req, timeout=0.01)
                code = "OK"
            except grpc.RpcError as e:
                code = e.code().name  # type: ignore[attr-defined]
            with lock:
                codes.append(code)

    threads = [threading.Thread(target=calls) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert set(codes) <= {"OK", "DEADLINE_EXCEEDED"}, sorted(set(codes))
    more.set()
    answers = [r.WhichOneof("response") for r in stream]
    assert answers.count("result") == 2, answers
    channel.close()
