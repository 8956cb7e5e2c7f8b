"""Operating the binary: signals, the probe, configuration precedence, logs."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from pathlib import Path

import numpy as np

from conftest import SERVER_BIN, RunningServer, server_env, start_server
from helpers import f32, manifest, node
from remotemedia_client import Client, pb


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sigterm_drains_and_exits_zero() -> None:
    s = start_server()
    assert s.stop(signal.SIGTERM) == 0
    messages = [r.get("message") for r in s.records()]
    assert "shutdown started; draining" in messages
    assert messages[-1] == "shutdown complete"


def test_sigint_exits_zero() -> None:
    s = start_server()
    assert s.stop(signal.SIGINT) == 0


def test_sigint_stops_a_server_started_with_sigint_ignored() -> None:
    # A background job of a non-interactive shell inherits SIGINT ignored; the server installs its
    # own handler before it announces itself, so a SIGINT sent right after that line still stops it.
    s = start_server(preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert s.stop(signal.SIGINT) == 0
    messages = [r.get("message") for r in s.records()]
    assert "signal received" in messages
    assert messages[-1] == "shutdown complete"


def test_probe_exits_zero_when_serving_and_nonzero_when_down() -> None:
    s = start_server()
    ok = subprocess.run([str(SERVER_BIN), "probe", "--addr", s.address], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    assert s.stop() == 0
    down = subprocess.run([str(SERVER_BIN), "probe", "--addr", s.address, "--timeout-ms", "500"], capture_output=True, text=True, timeout=30)
    assert down.returncode == 1
    assert "cannot connect" in down.stderr


def test_probe_defaults_to_the_configured_listen_address() -> None:
    port = free_port()
    s = start_server("--listen", f"127.0.0.1:{port}", defaults=False, env={"REMOTEMEDIA_METRICS_LISTEN": "off"})
    env = server_env({"REMOTEMEDIA_LISTEN": f"0.0.0.0:{port}"})
    ok = subprocess.run([str(SERVER_BIN), "probe"], capture_output=True, text=True, timeout=30, env=env)
    assert ok.returncode == 0, ok.stderr
    assert s.stop() == 0


def test_flag_beats_env_beats_file(tmp_path: Path) -> None:
    file_port, env_port, flag_port = free_port(), free_port(), free_port()
    cfg = tmp_path / "server.toml"
    cfg.write_text(f'listen = "127.0.0.1:{file_port}"\nmetrics_listen = "off"\n')

    s = start_server("--config", str(cfg), defaults=False)
    assert s.address == f"127.0.0.1:{file_port}"
    s.stop()
    s = start_server(defaults=False, env={"REMOTEMEDIA_CONFIG": str(cfg), "REMOTEMEDIA_LISTEN": f"127.0.0.1:{env_port}"})
    assert s.address == f"127.0.0.1:{env_port}"
    s.stop()
    s = start_server(
        "--listen", f"127.0.0.1:{flag_port}", defaults=False,
        env={"REMOTEMEDIA_CONFIG": str(cfg), "REMOTEMEDIA_LISTEN": f"127.0.0.1:{env_port}"},
    )
    assert s.address == f"127.0.0.1:{flag_port}"
    assert s.metrics_address == "off"
    s.stop()


def test_port_zero_logs_the_bound_port() -> None:
    s = start_server()
    host, port = s.address.rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    s.stop()


def test_bad_configuration_exits_2_naming_the_key(tmp_path: Path) -> None:
    bad = subprocess.run([str(SERVER_BIN), "--max-timeout-ms", "soon"], capture_output=True, text=True, timeout=30, env=server_env())
    assert bad.returncode == 2
    assert "invalid value for `max_timeout_ms` (from --max-timeout-ms)" in bad.stderr
    cfg = tmp_path / "c.toml"
    cfg.write_text("lisen = 1\n")
    bad = subprocess.run([str(SERVER_BIN), "--config", str(cfg)], capture_output=True, text=True, timeout=30, env=server_env())
    assert bad.returncode == 2
    assert "unknown configuration key `lisen`" in bad.stderr


def test_a_public_address_without_tokens_is_refused() -> None:
    out = subprocess.run(
        [str(SERVER_BIN), "--listen", "0.0.0.0:0", "--metrics-listen", "off"], capture_output=True, text=True, timeout=30, env=server_env()
    )
    assert out.returncode == 1
    assert "refusing to listen on 0.0.0.0:0 without authentication" in out.stderr


def test_logs_are_json_lines_with_request_id_and_rpc(fresh_server: RunningServer) -> None:
    req = pb.ExecuteRequest(manifest=manifest([node("g", "GainNode")]), audio_inputs={"g": f32(np.zeros(16))})
    with Client(fresh_server.address) as client:
        client.execute(req)
    rec = fresh_server.wait_for(lambda r: r.get("message") == "ExecutePipeline finished")
    assert rec["rpc"] == "ExecutePipeline"
    assert len(rec["request_id"]) == 32
    assert {"timestamp", "level", "message"} <= rec.keys()
    for line in fresh_server.lines:
        json.loads(line)
