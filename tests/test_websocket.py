"""StreamPipeline over WebSocket (docs/websocket.md) against the real binary, with the
`websockets` client: the session as over gRPC, refusals before any session, frames that are not
StreamRequests, and backpressure on a client faster than its pipeline."""

from __future__ import annotations

import asyncio
import base64
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Close
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from conftest import PLUGINS, RunningServer, start_server
from helpers import f32, manifest, node, samples
from remotemedia_client import pb

PATH = "/ws/StreamPipeline"
TOKEN = "ws-t0ken-5d1f"
ORIGIN = "http://127.0.0.1:8080"
MAX_MESSAGE_BYTES = 1_000_000
ACTIVE_STREAMS = "remotemedia_active_streams"


@pytest.fixture(scope="module")
def srv() -> Iterator[RunningServer]:
    # Debug logging, so that "no log line holds the token" covers the chattiest level.
    s = start_server(
        "--auth-tokens",
        TOKEN,
        "--cors-allowed-origins",
        ORIGIN,
        "--max-message-bytes",
        str(MAX_MESSAGE_BYTES),
        "--log-level",
        "debug",
    )
    yield s
    assert s.stop() == 0


def bearer(token: str) -> str:
    return "bearer." + base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


def open_ws(
    server: RunningServer, token: str | None = TOKEN, version: str = "v1", origin: str | None = None, extra: tuple[str, ...] = ()
) -> ClientConnection:
    protocols = [f"remotemedia.{version}"] + ([bearer(token)] if token is not None else []) + list(extra)
    return connect(
        f"ws://{server.address}{PATH}",
        subprotocols=protocols,  # type: ignore[arg-type]
        origin=origin,  # type: ignore[arg-type]
        open_timeout=10,
        max_size=None,
    )


def send(ws: ClientConnection, request: pb.StreamRequest) -> None:
    ws.send(request.SerializeToString())


def receive(ws: ClientConnection) -> pb.StreamResponse:
    data = ws.recv(timeout=30)
    assert isinstance(data, bytes), f"the server sent a text frame: {data!r}"
    return pb.StreamResponse.FromString(data)


def until_close(ws: ClientConnection) -> tuple[list[pb.StreamResponse], Close]:
    """Every response until the server closes, and its close frame."""
    out = []
    try:
        while True:
            out.append(receive(ws))
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, f"the connection ended without a close frame: {closed}"
        return out, closed.rcvd


def gain_manifest() -> pb.PipelineManifest:
    return manifest([node("src", "PassThroughNode"), node("gain", "GainNode", gain=2.0)], [("src", "gain")])


def chunk(seq: int, x: np.ndarray, node_id: str = "src") -> pb.StreamRequest:
    return pb.StreamRequest(audio_chunk=pb.AudioChunk(node_id=node_id, buffer=f32(x), sequence=seq))


def control(cmd: int) -> pb.StreamRequest:
    return pb.StreamRequest(control=pb.StreamControl(command=cmd))


@contextmanager
def opened(server: RunningServer, m: pb.PipelineManifest) -> Iterator[ClientConnection]:
    """A connection whose session is ready."""
    with open_ws(server) as ws:
        send(ws, pb.StreamRequest(manifest=m))
        ready = receive(ws)
        assert ready.WhichOneof("response") == "ready" and ready.ready.session_id, ready
        yield ws


def wait_for(what: str, condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def sessions_end(server: RunningServer) -> None:
    wait_for(f"{ACTIVE_STREAMS} == 0", lambda: server.metric(ACTIVE_STREAMS) == 0)


def sessions_started(server: RunningServer) -> int:
    return sum(1 for r in server.records() if r.get("message") == "stream ready")


# --- the session, as over gRPC ---------------------------------------------------------------


def test_500_chunks_come_back_in_order_then_the_final_metrics_and_a_normal_close(srv: RunningServer) -> None:
    with opened(srv, gain_manifest()) as ws:

        def sender() -> None:
            for seq in range(500):
                send(ws, chunk(seq, np.full(320, seq / 1000, dtype=np.float32)))
            send(ws, control(pb.StreamControl.COMMAND_CLOSE))

        thread = threading.Thread(target=sender)
        thread.start()
        responses, close = until_close(ws)
        thread.join()

    results = [r.result for r in responses if r.WhichOneof("response") == "result"]
    metrics = [r.metrics for r in responses if r.WhichOneof("response") == "metrics"]
    assert [r.sequence for r in results] == list(range(500))
    for r in results:
        np.testing.assert_allclose(samples(r.audio_outputs["gain"]), 2 * np.float32(r.sequence / 1000), rtol=1e-6)
    assert responses[-1].WhichOneof("response") == "metrics"
    assert (metrics[-1].chunks_processed, metrics[-1].total_samples) == (500, 500 * 320)
    assert (close.code, close.reason) == (1000, "OK")
    sessions_end(srv)


def test_close_flushes_a_stateful_node(srv: RunningServer) -> None:
    # 3 × 30 ms into 100 ms chunks: nothing comes out until the close flushes the 90 ms held back.
    with opened(srv, manifest([node("chunker", "AudioChunkerNode", chunk_ms=100)])) as ws:
        for seq in range(3):
            send(ws, chunk(seq, np.full(480, seq + 1, dtype=np.float32), node_id="chunker"))
        held = [receive(ws).result for _ in range(3)]
        assert [len(r.audio_outputs["chunker"].samples) for r in held] == [0, 0, 0]

        send(ws, control(pb.StreamControl.COMMAND_CLOSE))
        responses, close = until_close(ws)
    flushed = [r.result for r in responses if r.WhichOneof("response") == "result"]
    assert len(flushed) == 1 and flushed[0].sequence == 3
    np.testing.assert_array_equal(samples(flushed[0].audio_outputs["chunker"]), np.repeat([1, 2, 3], 480))
    assert responses[-1].metrics.chunks_processed == 3
    assert (close.code, close.reason) == (1000, "OK")


def test_cancel_ends_with_cancelled_and_frees_the_session(srv: RunningServer) -> None:
    with opened(srv, gain_manifest()) as ws:
        send(ws, chunk(0, np.zeros(160, dtype=np.float32)))
        assert receive(ws).result.sequence == 0
        assert srv.metric(ACTIVE_STREAMS) == 1
        send(ws, control(pb.StreamControl.COMMAND_CANCEL))
        _, close = until_close(ws)
    assert (close.code, close.reason) == (4001, "CANCELLED: the stream was cancelled by the client")
    sessions_end(srv)


@pytest.mark.parametrize("how", ["a close frame", "a dropped connection"])
def test_a_client_that_leaves_without_close_frees_its_session(srv: RunningServer, how: str) -> None:
    with opened(srv, gain_manifest()) as ws:
        send(ws, chunk(0, np.zeros(160, dtype=np.float32)))
        receive(ws)
        assert srv.metric(ACTIVE_STREAMS) == 1
        before = srv.metric("remotemedia_requests_total", rpc="StreamPipeline", code="CANCELLED")
        if how == "a close frame":
            ws.close()
        else:
            ws.socket.close()
        sessions_end(srv)
    assert srv.metric("remotemedia_requests_total", rpc="StreamPipeline", code="CANCELLED") == before + 1


def test_a_client_that_leaves_before_its_manifest_counts_as_cancelled(srv: RunningServer) -> None:
    # A gRPC client that half-closes before its manifest gets FAILED_PRECONDITION; a WebSocket
    # client cannot half-close, and its close frame means it left.
    before = srv.metric("remotemedia_requests_total", rpc="StreamPipeline", code="CANCELLED")
    refused = srv.metric("remotemedia_requests_total", rpc="StreamPipeline", code="FAILED_PRECONDITION")
    with open_ws(srv) as ws:
        ws.close()
    wait_for(
        "the session to end as cancelled",
        lambda: srv.metric("remotemedia_requests_total", rpc="StreamPipeline", code="CANCELLED") == before + 1,
    )
    assert srv.metric("remotemedia_requests_total", rpc="StreamPipeline", code="FAILED_PRECONDITION") == refused
    sessions_end(srv)


def test_a_deadline_offered_in_the_handshake_ends_the_session_as_deadline_exceeded(srv: RunningServer) -> None:
    # A browser cannot set grpc-timeout on a WebSocket; a `timeout.` entry carries it. The server
    # ends the session there and counts DEADLINE_EXCEEDED, not the CANCELLED of a socket the
    # client closed itself.
    before = srv.metric("remotemedia_requests_total", rpc="StreamPipeline", code="DEADLINE_EXCEEDED")
    with open_ws(srv, extra=("timeout.300m",)) as ws:
        send(ws, pb.StreamRequest(manifest=gain_manifest()))
        assert receive(ws).WhichOneof("response") == "ready"
        _, close = until_close(ws)
    assert close.code == 4004, close
    assert close.reason.startswith("DEADLINE_EXCEEDED: the call's deadline passed (grpc-timeout 300 ms)"), close
    wait_for(
        "the session to count as past its deadline",
        lambda: srv.metric("remotemedia_requests_total", rpc="StreamPipeline", code="DEADLINE_EXCEEDED") == before + 1,
    )
    sessions_end(srv)
    # A value that is no timeout is refused before any session, naming the entry.
    with open_ws(srv, extra=("timeout.5x",)) as ws:
        responses, close = until_close(ws)
    assert close.code == 4003 and "`5x` is not a timeout" in close.reason, close
    assert [r.error.error_type for r in responses] == [pb.ERROR_TYPE_VALIDATION]
    # So are two deadlines.
    with open_ws(srv, extra=("timeout.1000m", "timeout.5x")) as ws:
        _, close = until_close(ws)
    assert close.code == 4003 and "2 `timeout.` entries were offered" in close.reason, close


def test_a_session_still_working_when_the_grace_period_ends_gets_its_close_frame(tmp_path: Path) -> None:
    # Over gRPC such a stream ends UNAVAILABLE, "cut short"; the WebSocket was dropped without
    # a close frame (a browser saw 1006).
    s = start_server("--python-nodes-path", str(PLUGINS), "--grace-period-ms", "1000")
    marker = tmp_path / "spinning"
    try:
        with open_ws(s, token=None) as ws:
            send(ws, pb.StreamRequest(manifest=manifest([node("s", "SpinNode", seconds=30, marker=str(marker))])))
            assert receive(ws).WhichOneof("response") == "ready"
            send(ws, chunk(0, np.zeros(160, dtype=np.float32), node_id="s"))
            wait_for("the node to run", marker.exists)
            s.proc.send_signal(signal.SIGTERM)
            _, close = until_close(ws)
        assert close.code == 4014, close
        assert close.reason.startswith("UNAVAILABLE: the server shut down before this call finished"), close
        assert s.proc.wait(timeout=30) == 0
    finally:
        s.stop()


def test_a_chunk_before_the_manifest_gets_the_documented_error(srv: RunningServer) -> None:
    with open_ws(srv) as ws:
        send(ws, chunk(0, np.zeros(4, dtype=np.float32)))
        responses, close = until_close(ws)
    assert [r.WhichOneof("response") for r in responses] == ["error"]
    assert responses[0].error.error_type == pb.ERROR_TYPE_VALIDATION
    assert "must be the manifest" in responses[0].error.message
    assert close.code == 4009
    assert close.reason == "FAILED_PRECONDITION: the first message of a stream must be the manifest; got an audio_chunk"


# --- frames that are not StreamRequests --------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "code", "reason"),
    [
        (b"\x0a\xff\xff\xff\xff\xff", 4003, "INVALID_ARGUMENT: the request message is malformed: protocol error: not a StreamRequest"),
        ("hello", 4003, "INVALID_ARGUMENT: the request message is malformed: protocol error: a text frame (binary frames only)"),
        (
            b"\0" * (8 * MAX_MESSAGE_BYTES),
            4008,
            "RESOURCE_EXHAUSTED: the request message is larger than the server accepts (max_message_bytes)",
        ),
    ],
    ids=["garbage", "text", "oversized"],
)
def test_a_frame_that_is_not_a_stream_request_is_refused_with_a_clear_reason(
    srv: RunningServer, frame: bytes | str, code: int, reason: str
) -> None:
    with opened(srv, gain_manifest()) as ws:
        started = time.monotonic()
        ws.send(frame)
        responses, close = until_close(ws)
        # The client's recv() raises once the TCP connection is closed, which the server does
        # when it sees the client's answer to its close frame: at once, even after an oversized
        # frame cost the framing (it used to wait for its 3 s fallback).
        assert time.monotonic() - started < 1.5
    assert [r.WhichOneof("response") for r in responses] == ["error"]
    assert close.code == code
    assert close.reason.startswith(reason), close.reason
    assert len(close.reason.encode()) <= 123
    sessions_end(srv)
    # The server is unharmed: the next session runs.
    with opened(srv, gain_manifest()) as ws:
        send(ws, chunk(0, np.ones(8, dtype=np.float32)))
        assert receive(ws).result.sequence == 0


# --- refused before any session starts ---------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "version", "code", "reason", "error_type", "outcome"),
    [
        (
            None,
            "v1",
            4016,
            "UNAUTHENTICATED: missing bearer token: offer the subprotocol `bearer.<base64url token>`",
            pb.ERROR_TYPE_AUTHENTICATION,
            "authentication",
        ),
        ("wrong-token", "v1", 4016, "UNAUTHENTICATED: the bearer token is not valid", pb.ERROR_TYPE_AUTHENTICATION, "authentication"),
        (
            TOKEN,
            "v2",
            4009,
            "FAILED_PRECONDITION: protocol version `v2` is not supported; supported versions: v1",
            pb.ERROR_TYPE_VERSION_MISMATCH,
            "version_mismatch",
        ),
    ],
    ids=["no token", "wrong token", "unsupported version"],
)
def test_refusals_close_at_once_with_their_documented_reason_and_start_no_session(
    srv: RunningServer, token: str | None, version: str, code: int, reason: str, error_type: int, outcome: str
) -> None:
    started = sessions_started(srv)
    before = srv.metric("remotemedia_requests_total", rpc="StreamPipeline", outcome=outcome)
    with open_ws(srv, token=token, version=version, origin=ORIGIN) as ws:
        # Nothing is sent: the refusal does not wait for a message.
        responses, close = until_close(ws)
    assert (close.code, close.reason) == (code, reason)
    assert [r.error.error_type for r in responses] == [error_type]
    assert srv.metric("remotemedia_requests_total", rpc="StreamPipeline", outcome=outcome) == before + 1
    assert sessions_started(srv) == started
    assert srv.metric(ACTIVE_STREAMS) == 0


def test_an_unlisted_origin_is_refused_before_the_upgrade(srv: RunningServer) -> None:
    before = srv.metric("remotemedia_websocket_handshakes_total", result="origin_refused")
    started = sessions_started(srv)
    with pytest.raises(InvalidStatus) as refused:
        open_ws(srv, origin="http://evil.example")
    assert refused.value.response.status_code == 403
    assert b"cors_allowed_origins" in refused.value.response.body
    assert srv.metric("remotemedia_websocket_handshakes_total", result="origin_refused") == before + 1
    assert sessions_started(srv) == started
    # The listed origin gets through.
    with open_ws(srv, origin=ORIGIN) as ws:
        send(ws, pb.StreamRequest(manifest=gain_manifest()))
        assert receive(ws).WhichOneof("response") == "ready"


def test_the_token_appears_in_no_log_line(srv: RunningServer) -> None:
    with opened(srv, gain_manifest()) as ws:
        send(ws, control(pb.StreamControl.COMMAND_CLOSE))
        until_close(ws)
    with open_ws(srv, token="wr0ng-s3cret-token") as ws:
        until_close(ws)
    sessions_end(srv)
    secrets = [TOKEN, bearer(TOKEN), "wr0ng-s3cret-token", bearer("wr0ng-s3cret-token")]
    leaked = [line for line in srv.lines if any(s in line for s in secrets)]
    assert not leaked, leaked
    assert any('"transport":"websocket"' in line for line in srv.lines)


# --- backpressure ------------------------------------------------------------------------------


def resident_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


async def test_a_client_sending_faster_than_its_pipeline_is_slowed_down_and_memory_stays_bounded(tmp_path: Path) -> None:
    # An asyncio client reads and writes independently, as browsers do. (The blocking client
    # cannot: while its sender waits for the server to read, its reader waits for the sender, and
    # the 512 KiB results the server then writes go unread.)
    frames, frame_samples = 200, 131_072  # 200 frames of 512 KiB: 100 MiB
    # The stuck chunk must outlive the wait below: a 30 s time limit instead of 5 s.
    s = start_server("--python-nodes-path", str(PLUGINS), "--default-timeout-ms", "30000")
    try:
        marker, release = tmp_path / "marker", tmp_path / "release"
        gated = manifest([node("gate", "GateNode", marker=str(marker), release=str(release))])
        async with async_connect(f"ws://{s.address}{PATH}", subprotocols=[Subprotocol("remotemedia.v1")], proxy=None, max_size=None) as ws:
            await ws.send(pb.StreamRequest(manifest=gated).SerializeToString())
            ready = pb.StreamResponse.FromString(await ws.recv(decode=False))
            assert ready.WhichOneof("response") == "ready", ready
            # The peak resident size from here on (writing 5 resets VmHWM to VmRSS).
            Path(f"/proc/{s.proc.pid}/clear_refs").write_text("5")
            baseline = resident_kib(s.proc.pid, "VmRSS")
            payload = np.zeros(frame_samples, dtype=np.float32)
            sent = 0

            async def sender() -> None:
                nonlocal sent
                for seq in range(frames):
                    # Returns once the frame is in the socket's buffer, below its write limit.
                    await ws.send(chunk(seq, payload, node_id="gate").SerializeToString())
                    sent += 1
                await ws.send(control(pb.StreamControl.COMMAND_CLOSE).SerializeToString())

            sending = asyncio.create_task(sender())
            deadline = time.monotonic() + 10
            while not marker.exists():
                assert time.monotonic() < deadline, "the first chunk never reached the gate"
                await asyncio.sleep(0.01)
            # With the pipeline stuck, the server stops reading: the sender cannot get 100 MiB out.
            done, _ = await asyncio.wait([sending], timeout=5)
            assert not done, f"all {frames} frames were taken while the pipeline was stuck"
            stuck_at = sent
            # In flight at most: the chunk at the gate, the 8 frames (4 MiB) the session reads
            # ahead of it, the connection's queue of 4, the frame being read, and what the
            # kernel's socket buffers hold (a few MiB).
            assert stuck_at <= 40, f"{stuck_at} frames of 512 KiB were taken"
            grown_mib = (resident_kib(s.proc.pid, "VmHWM") - baseline) / 1024
            assert grown_mib < 40, f"the server grew by {grown_mib:.0f} MiB while the client pushed"

            release.write_text("go")
            responses = [pb.StreamResponse.FromString(data) async for data in ws]  # ends at a 1000 close
            await asyncio.wait_for(sending, timeout=30)
            close = ws.protocol.close_rcvd
        results = [r.result.sequence for r in responses if r.WhichOneof("response") == "result"]
        assert results == list(range(frames))
        assert close is not None and (close.code, close.reason) == (1000, "OK")
        assert responses[-1].metrics.chunks_processed == frames
    finally:
        assert s.stop() == 0


def test_no_sample_bytes_reach_the_logs_at_trace_level() -> None:
    # The WebSocket library logs each frame's payload at trace level; those lines are dropped
    # whatever the filter asks for.
    s = start_server("--log-level", "trace,tungstenite=trace,tokio_tungstenite=trace")
    try:
        x = np.array([0.123456, -0.654321, 0.5, 0.25] * 40, np.float32)
        with connect(f"ws://{s.address}{PATH}", subprotocols=[Subprotocol("remotemedia.v1")], open_timeout=10) as ws:
            send(ws, pb.StreamRequest(manifest=gain_manifest()))
            assert receive(ws).WhichOneof("response") == "ready"
            send(ws, chunk(0, x))
            assert receive(ws).WhichOneof("response") == "result"
            send(ws, control(pb.StreamControl.COMMAND_CLOSE))
            until_close(ws)
    finally:
        assert s.stop() == 0
    text = "\n".join(s.lines)
    assert "tungstenite" not in text or "payload" not in text, "frame payloads logged"
    assert x[:4].tobytes().hex() not in text.replace("0x", ""), "sample bytes in the logs"
