"""Integration-test fixtures: the real ``remotemedia-server`` binary on port 0."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SERVER_BIN = Path(os.environ.get("REMOTEMEDIA_SERVER_BIN", REPO / "service" / "target" / "debug" / "remotemedia-server"))
GRPCURL = Path(os.environ.get("GRPCURL", REPO / ".tools" / "bin" / "grpcurl"))
PLUGINS = Path(__file__).resolve().parent / "plugins"
READY_TIMEOUT = 120.0


class RunningServer:
    """A server process, its bound addresses and everything it logged."""

    def __init__(self, proc: subprocess.Popen[str], lines: list[str], events: queue.Queue[str | None]) -> None:
        self.proc = proc
        self.env: dict[str, str] = {}
        self.lines = lines
        self._events = events
        ready = self.wait_for(lambda rec: str(rec.get("message", "")).startswith("remotemedia-server listening"))
        self.address: str = ready["address"]
        self.metrics_address: str = ready.get("metrics_address", "off")

    def wait_for(self, pred: Any, timeout: float = READY_TIMEOUT) -> dict[str, Any]:
        """Reads log records until one satisfies `pred`; fails if the process exits first."""
        while True:
            try:
                line = self._events.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no matching log line within {timeout}s; log so far:\n" + "\n".join(self.lines)) from None
            if line is None:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise AssertionError(f"server exited ({self.proc.wait()}) before the expected log line:\n{err}\n" + "\n".join(self.lines))
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if pred(rec):
                return rec

    def records(self) -> list[dict[str, Any]]:
        out = []
        for line in list(self.lines):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
        return out

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://{self.metrics_address}/metrics", timeout=5) as r:
            return r.read().decode()

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        total = 0.0
        for line in self.metrics().splitlines():
            if line.startswith("#") or not line.startswith(name):
                continue
            series, _, value = line.rpartition(" ")
            if series != name and not series.startswith(name + "{"):
                continue
            if all(f'{k}="{v}"' in series for k, v in labels.items()):
                total += float(value)
        return total

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMOTEMEDIA_")}
    env.update(extra or {})
    return env


def start_server(*args: str, env: dict[str, str] | None = None, defaults: bool = True, preexec_fn: Any = None) -> RunningServer:
    if not SERVER_BIN.exists():
        raise AssertionError(f"{SERVER_BIN} is missing; run `make build` (make test does)")
    base = ["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"] if defaults else []
    return start_process([str(SERVER_BIN), *base, *args], env, preexec_fn=preexec_fn)


def assert_stops_before_serving(proc: subprocess.Popen[str], signum: int, expected: str) -> None:
    """Sends `signum` to a server that is still starting (its stdout unread past that point) and
    checks that it stopped there: exit status 0, the log line `expected`, no listening line."""
    try:
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    messages = [json.loads(line).get("message", "") for line in out.splitlines() if line.startswith("{")]
    assert expected in messages, out
    assert not any(m.startswith("remotemedia-server listening") for m in messages), "it never served"


def start_process(argv: list[str], env: dict[str, str] | None, preexec_fn: Any = None) -> RunningServer:
    """Starts `argv` (a server command line) with `env` over an environment free of
    REMOTEMEDIA_* variables, and waits for its listening line."""
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=server_env(env),
        preexec_fn=preexec_fn,
    )
    lines: list[str] = []
    events: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            events.put(line)
        events.put(None)

    threading.Thread(target=pump, daemon=True).start()
    running = RunningServer(proc, lines, events)
    running.env = server_env(env)
    return running


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    s = start_server()
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def plugin_server() -> Iterator[RunningServer]:
    """A server that also loads the test-only plug-in nodes of tests/plugins."""
    s = start_server("--python-nodes-path", str(PLUGINS))
    yield s
    assert s.stop() == 0


@pytest.fixture()
def fresh_server() -> Iterator[RunningServer]:
    s = start_server()
    yield s
    s.stop()
