"""A half-open circuit breaker lets one trial call through; whatever ends that trial (its
result, the run's time limit, the client's deadline, a stream's cancel), the breaker does not
stay open for good: a trial cut short gives its turn to the next call."""

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

COOLDOWN_MS = 300


@pytest.fixture(scope="module")
def srv() -> Iterator[RunningServer]:
    s = start_server("--python-nodes-path", str(PLUGINS), "--breaker-cooldown-ms", str(COOLDOWN_MS))
    yield s
    assert s.stop() == 0


class Toggle:
    """A ToggleNode pipeline: it fails while `fail` exists, else writes `marker` and waits."""

    def __init__(self, tmp: Path, seconds: float = 0.0) -> None:
        self.fail, self.marker, self.seconds = tmp / "fail", tmp / "running", seconds

    def request(self, **limits: int) -> pb.ExecuteRequest:
        m = manifest([node("t", "ToggleNode", fail=str(self.fail), marker=str(self.marker), seconds=self.seconds)])
        return pb.ExecuteRequest(manifest=m, audio_inputs={"t": f32(np.ones(160, np.float32))}, resource_limits=pb.ResourceLimits(**limits))


def stub(srv: RunningServer) -> service_pb2_grpc.PipelineServiceStub:
    return service_pb2_grpc.PipelineServiceStub(grpc.insecure_channel(srv.address))


def open_breaker(srv: RunningServer, tmp: Path) -> None:
    """Fails ToggleNode five times, which opens its breaker, then waits out the cool-down."""
    toggle = Toggle(tmp)
    toggle.fail.write_text("")
    for _ in range(5):
        resp = stub(srv).ExecutePipeline(toggle.request(), timeout=10)
        assert "toggled to fail" in resp.error.message, resp
    skipped = stub(srv).ExecutePipeline(toggle.request(), timeout=10)
    assert "circuit breaker for ToggleNode is open" in skipped.error.message, skipped
    time.sleep(COOLDOWN_MS / 1000)
    toggle.fail.unlink()


def assert_recovers(srv: RunningServer, tmp: Path) -> None:
    """The next call is the trial: it runs, succeeds and closes the breaker."""
    for _ in range(3):
        resp = stub(srv).ExecutePipeline(Toggle(tmp).request(), timeout=10)
        assert resp.WhichOneof("outcome") == "result", resp.error


def test_a_trial_cut_by_the_time_limit_gives_its_turn_to_the_next_call(srv: RunningServer, tmp_path: Path) -> None:
    open_breaker(srv, tmp_path)
    resp = stub(srv).ExecutePipeline(Toggle(tmp_path, seconds=1.0).request(max_timeout_ms=100), timeout=10)
    assert resp.error.error_type == pb.ERROR_TYPE_RESOURCE_LIMIT, resp
    assert_recovers(srv, tmp_path)


def test_a_trial_cut_by_the_clients_deadline_gives_its_turn_to_the_next_call(srv: RunningServer, tmp_path: Path) -> None:
    open_breaker(srv, tmp_path)
    with pytest.raises(grpc.RpcError) as cut:
        stub(srv).ExecutePipeline(Toggle(tmp_path, seconds=1.0).request(), timeout=0.2)
    assert cut.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
    assert_recovers(srv, tmp_path)


def test_a_trial_cut_by_a_streams_cancel_gives_its_turn_to_the_next_call(srv: RunningServer, tmp_path: Path) -> None:
    open_breaker(srv, tmp_path)
    toggle = Toggle(tmp_path, seconds=1.0)
    outbox: queue.Queue[pb.StreamRequest | None] = queue.Queue()
    done = threading.Event()

    def requests() -> Iterator[pb.StreamRequest]:
        while (r := outbox.get()) is not None:
            yield r
        done.wait(10)

    call = stub(srv).StreamPipeline(requests(), timeout=10)
    try:
        outbox.put(pb.StreamRequest(manifest=toggle.request().manifest))
        assert next(call).WhichOneof("response") == "ready"
        outbox.put(pb.StreamRequest(audio_chunk=pb.AudioChunk(node_id="t", buffer=f32(np.ones(160, np.float32)), sequence=0)))
        deadline = time.monotonic() + 10
        while not toggle.marker.exists():
            assert time.monotonic() < deadline, "the trial chunk never reached the node"
            time.sleep(0.005)
        outbox.put(pb.StreamRequest(control=pb.StreamControl(command=pb.StreamControl.COMMAND_CANCEL)))
        with pytest.raises(grpc.RpcError) as cut:
            list(call)
        assert cut.value.code() == grpc.StatusCode.CANCELLED  # type: ignore[attr-defined]
    finally:
        done.set()
        outbox.put(None)
    assert_recovers(srv, tmp_path)
