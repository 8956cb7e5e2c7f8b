"""The Python client logs through structlog and prints nothing until the application asks."""

from __future__ import annotations

import json
import subprocess
import sys

# Nothing listens on port 9: the call fails with UNAVAILABLE, is retried once, and fails again.
CALL = """
from remotemedia_client import Client, RetryPolicy, ServiceUnavailableError, enable_logging
{setup}
try:
    Client("127.0.0.1:9", token="never-logged", retry=RetryPolicy(max_attempts=2, initial_backoff=0.01)).nodes()
except ServiceUnavailableError:
    print("unavailable")
"""


def run(setup: str) -> subprocess.CompletedProcess[str]:
    code = CALL.format(setup=setup)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)


def test_nothing_is_printed_by_default() -> None:
    done = run("")
    assert done.stdout == "unavailable\n" and done.stderr == ""


def test_enable_logging_prints_the_retries_as_json_lines() -> None:
    done = run('enable_logging("DEBUG", json=True)')
    assert done.stdout == "unavailable\n"
    events = [json.loads(line) for line in done.stderr.splitlines()]
    retry = next(e for e in events if e["event"] == "retrying")
    assert retry["rpc"] == "GetVersion" and retry["attempt"] == 1 and retry["code"] == "UNAVAILABLE" and retry["level"] == "info"
    assert any(e["event"] == "call failed" and e["attempt"] == 2 for e in events)
    assert "never-logged" not in done.stderr
