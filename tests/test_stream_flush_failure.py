"""A node that fails while a stream's close flushes it fails as it would on a chunk: the
failure comes in-band with the flush's sequence, then the final metrics, and the stream ends
OK (CONTRACT §5), over gRPC and over WebSocket. The metrics count the stream as failed."""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from conftest import PLUGINS, RunningServer, start_server
from helpers import f32, manifest, node
from remotemedia_client import pb
from remotemedia_client._proto.remotemedia.v1 import service_pb2_grpc
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect
from websockets.typing import Subprotocol

CHUNKS = 3


@pytest.fixture(scope="module")
def srv() -> Iterator[RunningServer]:
    s = start_server("--python-nodes-path", str(PLUGINS))
    yield s
    assert s.stop() == 0


def requests() -> list[pb.StreamRequest]:
    m = manifest([node("f", "FlushFailNode")])
    chunks = [
        pb.StreamRequest(audio_chunk=pb.AudioChunk(node_id="f", buffer=f32(np.ones(160, np.float32)), sequence=seq))
        for seq in range(CHUNKS)
    ]
    close = pb.StreamRequest(control=pb.StreamControl(command=pb.StreamControl.COMMAND_CLOSE))
    return [pb.StreamRequest(manifest=m), *chunks, close]


def assert_flush_failure_then_final_metrics(responses: list[pb.StreamResponse]) -> None:
    kinds = [r.WhichOneof("response") for r in responses]
    assert kinds == ["ready", *["result"] * CHUNKS, "error", "metrics"], kinds
    error = responses[-2].error
    assert error.error_type == pb.ERROR_TYPE_NODE_EXECUTION, error
    assert "flush failed" in error.message and error.failing_node_id == "f"
    assert json.loads(error.context)["sequence"] == CHUNKS
    assert "RuntimeError" in error.stack_trace
    assert responses[-1].metrics.chunks_processed == CHUNKS


def test_over_grpc(srv: RunningServer) -> None:
    before = srv.metric("remotemedia_requests_total", rpc="StreamPipeline", code="OK", outcome="node_execution")
    stub = service_pb2_grpc.PipelineServiceStub(grpc.insecure_channel(srv.address))
    call = stub.StreamPipeline(iter(requests()), timeout=20)
    responses = list(call)
    assert call.code() == grpc.StatusCode.OK, call.details()
    assert_flush_failure_then_final_metrics(responses)
    after = srv.metric("remotemedia_requests_total", rpc="StreamPipeline", code="OK", outcome="node_execution")
    assert after == before + 1, "a stream with a failed node counts as a failure"
    assert srv.metric("remotemedia_active_streams") == 0


def test_over_websocket(srv: RunningServer) -> None:
    responses: queue.Queue[pb.StreamResponse] = queue.Queue()
    with connect(f"ws://{srv.address}/ws/StreamPipeline", subprotocols=[Subprotocol("remotemedia.v1")]) as ws:
        for r in requests():
            ws.send(r.SerializeToString())
        try:
            while True:
                data = ws.recv(timeout=30)
                assert isinstance(data, bytes)
                responses.put(pb.StreamResponse.FromString(data))
        except ConnectionClosed as closed:
            assert closed.rcvd is not None and (closed.rcvd.code, closed.rcvd.reason) == (1000, "OK"), closed
    assert_flush_failure_then_final_metrics(list(responses.queue))
