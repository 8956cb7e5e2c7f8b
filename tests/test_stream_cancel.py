"""`COMMAND_CANCEL` stops a stream at once (CONTRACT §5), even with chunks queued before it and
one still running in a Python node: over gRPC and over WebSocket, the session ends CANCELLED
without finishing the running chunk or starting the queued ones, and frees its slot and its
Python worker."""

from __future__ import annotations

import queue
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
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

ACTIVE_STREAMS = "remotemedia_active_streams"
QUEUED = 3


@pytest.fixture(scope="module")
def srv() -> Iterator[RunningServer]:
    # One Python worker, so a chunk still running after the cancel would hold up the check
    # below; a 30 s time limit, so only the cancel can end the gated chunk within the test.
    s = start_server(
        "--python-nodes-path",
        str(PLUGINS),
        "--python-workers",
        "1",
        "--default-timeout-ms",
        "30000",
    )
    yield s
    assert s.stop() == 0


class Gate:
    """A GateNode's files: it writes `marker` when a chunk reaches it and holds the chunk until
    `release` exists. The tests never release it."""

    def __init__(self, tmp: Path) -> None:
        self.marker, self.release = tmp / "entered", tmp / "release"

    def manifest(self) -> pb.PipelineManifest:
        return manifest(
            [
                node(
                    "gate",
                    "GateNode",
                    marker=str(self.marker),
                    release=str(self.release),
                )
            ]
        )

    def wait_entered(self) -> None:
        deadline = time.monotonic() + 30
        while not self.marker.exists():
            assert time.monotonic() < deadline, "no chunk reached the gate"
            time.sleep(0.005)


def chunk(seq: int) -> pb.StreamRequest:
    return pb.StreamRequest(
        audio_chunk=pb.AudioChunk(
            node_id="gate", buffer=f32(np.zeros(320, np.float32)), sequence=seq
        )
    )


CANCEL = pb.StreamRequest(
    control=pb.StreamControl(command=pb.StreamControl.COMMAND_CANCEL)
)


def wait_for(what: str, condition: object) -> None:
    deadline = time.monotonic() + 10
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def assert_freed(srv: RunningServer) -> None:
    """The session's slot is free and the (only) Python worker takes new work."""
    wait_for(f"{ACTIVE_STREAMS} == 0", lambda: srv.metric(ACTIVE_STREAMS) == 0)
    stub = service_pb2_grpc.PipelineServiceStub(grpc.insecure_channel(srv.address))
    m = manifest([node("g", "GainNode", runtime=pb.RUNTIME_HINT_CPYTHON, gain=2.0)])
    done = stub.ExecutePipeline(
        pb.ExecuteRequest(
            manifest=m, audio_inputs={"g": f32(np.ones(160, np.float32))}
        ),
        timeout=10,
    )
    assert done.WhichOneof("outcome") == "result", done


def test_cancel_over_grpc_stops_the_running_chunk_and_skips_the_queued_ones(
    srv: RunningServer, tmp_path: Path
) -> None:
    gate = Gate(tmp_path)
    outbox: queue.Queue[pb.StreamRequest | None] = queue.Queue()
    finished = threading.Event()

    def requests() -> Iterator[pb.StreamRequest]:
        while (r := outbox.get()) is not None:
            yield r
        finished.wait(
            30
        )  # keeps the request stream open: only the cancel may end the session

    before = srv.metric(
        "remotemedia_requests_total", rpc="StreamPipeline", code="CANCELLED"
    )
    stub = service_pb2_grpc.PipelineServiceStub(grpc.insecure_channel(srv.address))
    call = stub.StreamPipeline(requests(), timeout=20)
    try:
        outbox.put(pb.StreamRequest(manifest=gate.manifest()))
        assert next(call).WhichOneof("response") == "ready"
        outbox.put(chunk(0))
        gate.wait_entered()
        for seq in range(1, 1 + QUEUED):
            outbox.put(chunk(seq))
        outbox.put(CANCEL)
        late = [r.WhichOneof("response") for r in call]
        pytest.fail(f"the stream ended OK after the cancel, with {late}")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.CANCELLED, e  # type: ignore[attr-defined]
        assert "cancelled by the client" in e.details()  # type: ignore[attr-defined]
    finally:
        finished.set()
        outbox.put(None)
    assert not gate.release.exists()
    assert (
        srv.metric("remotemedia_requests_total", rpc="StreamPipeline", code="CANCELLED")
        == before + 1
    )
    assert_freed(srv)


def test_cancel_over_websocket_stops_the_running_chunk_and_skips_the_queued_ones(
    srv: RunningServer, tmp_path: Path
) -> None:
    gate = Gate(tmp_path)
    with connect(
        f"ws://{srv.address}/ws/StreamPipeline",
        subprotocols=["remotemedia.v1"],
        open_timeout=10,
    ) as ws:  # type: ignore[list-item]
        ws.send(pb.StreamRequest(manifest=gate.manifest()).SerializeToString())
        assert (
            pb.StreamResponse.FromString(ws.recv(timeout=30)).WhichOneof("response")
            == "ready"
        )
        ws.send(chunk(0).SerializeToString())
        gate.wait_entered()
        for seq in range(1, 1 + QUEUED):
            ws.send(chunk(seq).SerializeToString())
        ws.send(CANCEL.SerializeToString())
        responses = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                responses.append(pb.StreamResponse.FromString(ws.recv(timeout=20)))
    assert [r.WhichOneof("response") for r in responses] == []
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
        4001,
        "CANCELLED: the stream was cancelled by the client",
    )
    assert not gate.release.exists()
    assert_freed(srv)


# The reset tests: a chunker keeps 36 of a 100-sample chunk back (64-sample chunks), so a flush
# would be a node call of its own, seen in the node-call count.
ROUNDS = 6
REQUESTS = "remotemedia_requests_total"
NODE_CALLS = "remotemedia_node_duration_seconds_count"
CHUNKER = manifest([node("c", "AudioChunkerNode", chunk_samples=64)])
ONE_CHUNK = pb.StreamRequest(
    audio_chunk=pb.AudioChunk(
        node_id="c", buffer=f32(np.zeros(100, np.float32)), sequence=1
    )
)


def streams_ended(srv: RunningServer, code: str) -> float:
    return srv.metric(REQUESTS, rpc="StreamPipeline", code=code)


def chunker_calls(srv: RunningServer) -> float:
    return srv.metric(NODE_CALLS, node_type="AudioChunkerNode")


def test_a_client_that_resets_the_stream_between_chunks_is_cancelled_not_flushed(
    srv: RunningServer,
) -> None:
    # grpcio's cancel() resets the stream (RST_STREAM CANCEL) without half-closing it, and tonic
    # ends a request stream reset that way as if the client had finished sending. Taken for a
    # close, the session flushed its nodes and counted OK whenever it saw the end of its
    # requests before the response side saw the reset: about half the time, so several rounds.
    ok, cancelled = streams_ended(srv, "OK"), streams_ended(srv, "CANCELLED")
    calls = chunker_calls(srv)
    stub = service_pb2_grpc.PipelineServiceStub(grpc.insecure_channel(srv.address))
    for n in range(1, ROUNDS + 1):
        outbox: queue.Queue[pb.StreamRequest | None] = queue.Queue()

        def requests(
            box: queue.Queue[pb.StreamRequest | None],
        ) -> Iterator[pb.StreamRequest]:
            while (r := box.get()) is not None:
                yield r

        call = stub.StreamPipeline(requests(outbox), timeout=20)
        outbox.put(pb.StreamRequest(manifest=CHUNKER))
        assert next(call).WhichOneof("response") == "ready"
        outbox.put(ONE_CHUNK)
        assert next(call).WhichOneof("response") == "result"
        call.cancel()
        outbox.put(None)
        wait_for(
            f"stream {n} to end",
            lambda n=n: (
                streams_ended(srv, "CANCELLED") + streams_ended(srv, "OK")
                == cancelled + ok + n
            ),
        )
    assert streams_ended(srv, "OK") == ok
    assert streams_ended(srv, "CANCELLED") == cancelled + ROUNDS
    assert chunker_calls(srv) == calls + ROUNDS, "one call per chunk: nothing flushed"
    assert_freed(srv)


def test_a_websocket_client_that_leaves_between_chunks_is_cancelled_not_flushed(
    srv: RunningServer,
) -> None:
    # A client's close frame (without COMMAND_CLOSE) drops the session's responses before its
    # requests end; the session that saw the end of its requests first flushed its nodes.
    cancelled = streams_ended(srv, "CANCELLED")
    calls = chunker_calls(srv)
    for n in range(1, ROUNDS + 1):
        with connect(
            f"ws://{srv.address}/ws/StreamPipeline",
            subprotocols=["remotemedia.v1"],  # type: ignore[list-item]
            open_timeout=10,
        ) as ws:
            ws.send(pb.StreamRequest(manifest=CHUNKER).SerializeToString())
            ready = pb.StreamResponse.FromString(ws.recv(timeout=30))
            assert ready.WhichOneof("response") == "ready"
            ws.send(ONE_CHUNK.SerializeToString())
            result = pb.StreamResponse.FromString(ws.recv(timeout=30))
            assert result.WhichOneof("response") == "result"
        wait_for(
            f"stream {n} to end",
            lambda n=n: streams_ended(srv, "CANCELLED") == cancelled + n,
        )
    assert chunker_calls(srv) == calls + ROUNDS, "one call per chunk: nothing flushed"
    assert_freed(srv)
