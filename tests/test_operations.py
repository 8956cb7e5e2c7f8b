"""Operating the binary: signals, the probe, configuration precedence, logs."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import GRPCURL, PLUGINS, SERVER_BIN, RunningServer, assert_stops_before_serving, server_env, start_server
from helpers import f32, manifest, node
from remotemedia_client import Client, Pipeline, RetryPolicy, pb
from remotemedia_client import Node as ClientNode
from remotemedia_client._proto.remotemedia.v1 import service_pb2_grpc


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


def test_a_signal_while_python_nodes_import_stops_the_server_before_it_serves(tmp_path: Path) -> None:
    # A plug-in whose import waits on a FIFO nobody opens: start-up stays in the Python runtime's
    # imports until the signal stops it.
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    gate, importing = tmp_path / "gate", tmp_path / "importing"
    os.mkfifo(gate)
    (plugins / "slow_import.py").write_text(f"open({str(importing)!r}, 'w').close()\nwith open({str(gate)!r}) as fifo:\n    fifo.read()\n")
    argv = [str(SERVER_BIN), "--listen", "127.0.0.1:0", "--python-nodes-path", str(plugins)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=server_env())
    wait_for_file(importing, "the plug-in's import")
    assert_stops_before_serving(proc, signal.SIGTERM, "shutdown requested while starting; stopped before serving")


def test_the_lifecycle_lines_show_at_any_level_filter() -> None:
    # Port 0 is usable at `warn` too: the listening line (with the bound address) passes the
    # filter, and so do the shutdown lines; the other INFO lines (the Python start-up) do not.
    s = start_server("--log-level", "warn")
    assert s.stop(signal.SIGTERM) == 0
    messages = [r.get("message") for r in s.records() if r.get("level") == "INFO"]
    assert str(messages[0]).startswith("remotemedia-server listening on 127.0.0.1:"), messages
    assert messages[1:] == ["signal received", "shutdown started; draining", "shutdown complete"], messages


def test_log_level_off_logs_nothing() -> None:
    port = free_port()
    argv = [str(SERVER_BIN), "--listen", f"127.0.0.1:{port}", "--metrics-listen", "off", "--python", "false", "--log-level", "off"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=server_env())
    try:
        probe = [str(SERVER_BIN), "probe", "--addr", f"127.0.0.1:{port}", "--timeout-ms", "500"]
        deadline = time.monotonic() + 30
        while subprocess.run(probe, capture_output=True, timeout=30).returncode != 0:
            assert time.monotonic() < deadline, "the server never served"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out == "", out


def test_probe_exits_zero_when_serving_and_nonzero_when_down() -> None:
    s = start_server()
    ok = subprocess.run([str(SERVER_BIN), "probe", "--addr", s.address], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    assert s.stop() == 0
    down = subprocess.run(
        [str(SERVER_BIN), "probe", "--addr", s.address, "--timeout-ms", "500"], capture_output=True, text=True, timeout=30
    )
    assert down.returncode == 1
    assert "cannot connect" in down.stderr
    for bad in ("abc", "-5", "0", "1e3"):
        refused = subprocess.run(
            [str(SERVER_BIN), "probe", "--addr", s.address, f"--timeout-ms={bad}"], capture_output=True, text=True, timeout=30
        )
        assert refused.returncode == 2, (bad, refused.stderr)
        assert f"invalid value for `--timeout-ms`: expected a whole number of milliseconds above 0, got `{bad}`" in refused.stderr
        assert refused.stdout == "", "a probe's usage error is no server's refused configuration"
    usage = subprocess.run([str(SERVER_BIN), "probe", "--addr"], capture_output=True, text=True, timeout=30)
    assert usage.returncode == 2 and "--addr" in usage.stderr and usage.stdout == "", usage.stdout


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
        "--listen",
        f"127.0.0.1:{flag_port}",
        defaults=False,
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


@pytest.mark.parametrize("level", ["verbose", "info,verbose", "remotemedia=loud"])
def test_a_log_level_that_names_no_level_exits_2(level: str) -> None:
    # `verbose` parses as a tracing target: the server used to start logging nothing at all,
    # not even the line with the address it bound.
    bad = subprocess.run(
        [str(SERVER_BIN), "--listen", "127.0.0.1:0", "--log-level", level], capture_output=True, text=True, timeout=30, env=server_env()
    )
    assert bad.returncode == 2, bad.stdout
    assert f"invalid value for `log_level` (from --log-level): expected a level (trace, debug, info, warn, error, off)" in bad.stderr
    assert f"got `{level}`" in bad.stderr


def test_bad_configuration_exits_2_naming_the_key(tmp_path: Path) -> None:
    bad = subprocess.run([str(SERVER_BIN), "--max-timeout-ms", "soon"], capture_output=True, text=True, timeout=30, env=server_env())
    assert bad.returncode == 2
    assert "invalid value for `max_timeout_ms` (from --max-timeout-ms)" in bad.stderr
    # The log on standard output says it too, for a pipeline that reads only the JSON lines.
    [line] = [json.loads(line) for line in bad.stdout.splitlines()]
    assert (line["level"], line["message"]) == ("ERROR", "configuration refused; the server did not start"), line
    assert "invalid value for `max_timeout_ms` (from --max-timeout-ms)" in line["error"]
    cfg = tmp_path / "c.toml"
    cfg.write_text("lisen = 1\n")
    bad = subprocess.run([str(SERVER_BIN), "--config", str(cfg)], capture_output=True, text=True, timeout=30, env=server_env())
    assert bad.returncode == 2
    assert "unknown configuration key `lisen`" in bad.stderr
    assert "unknown configuration key `lisen`" in json.loads(bad.stdout)["error"]
    # In the format asked for, when the flag or the environment asks for one.
    bad = subprocess.run(
        [str(SERVER_BIN), "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
        env=server_env({"REMOTEMEDIA_LOG_FORMAT": "pretty"}),
    )
    assert bad.returncode == 2
    assert "ERROR" in bad.stdout and "configuration refused" in bad.stdout and not bad.stdout.startswith("{"), bad.stdout


def test_a_refusal_never_shows_a_token_and_stays_bounded(tmp_path: Path) -> None:
    # A token that is not UTF-8 in the environment: refused by name, not a panic showing it.
    env = {k.encode(): v.encode() for k, v in server_env().items()}
    bad = subprocess.run(
        [str(SERVER_BIN), "--listen", "127.0.0.1:0"],
        capture_output=True,
        timeout=30,
        env={**env, b"REMOTEMEDIA_AUTH_TOKENS": b"sec\xe9ret-tok"},
    )
    assert bad.returncode == 2, bad.stderr
    assert b"environment variable REMOTEMEDIA_AUTH_TOKENS" in bad.stderr and b"not valid UTF-8" in bad.stderr
    assert b"ret-tok" not in bad.stdout + bad.stderr and b"panicked" not in bad.stderr
    # Another program's variable that is not UTF-8 is none of the server's business.
    ok = subprocess.run(
        [str(SERVER_BIN), "--python", "false", "catalogue"], capture_output=True, timeout=60, env={**env, b"OTHER": b"\xff"}
    )
    assert ok.returncode == 0 and json.loads(ok.stdout)["node_types"], ok.stderr
    # A TOML error names the line, never quotes it (it may hold a token).
    cfg = tmp_path / "c.toml"
    cfg.write_text('listen = "127.0.0.1:0"\nauth_tokens = "tok-5e3d-unterminated\n')
    bad = subprocess.run([str(SERVER_BIN), "--config", str(cfg)], capture_output=True, text=True, timeout=30, env=server_env())
    assert bad.returncode == 2
    assert "not valid TOML at line 2" in bad.stderr, bad.stderr
    assert "tok-5e3d" not in bad.stdout + bad.stderr
    # `catalogue` keeps its standard output for the catalogue.
    bad = subprocess.run([str(SERVER_BIN), "--config", str(cfg), "catalogue"], capture_output=True, text=True, timeout=30, env=server_env())
    assert bad.returncode == 2 and bad.stdout == "", bad.stdout
    # A huge bad value is cut.
    bad = subprocess.run([str(SERVER_BIN), "--listen", "x" * 120_000], capture_output=True, text=True, timeout=30, env=server_env())
    assert bad.returncode == 2 and len(bad.stderr) < 5_000 and len(bad.stdout) < 5_000, (len(bad.stderr), len(bad.stdout))


def test_a_public_address_without_tokens_is_refused() -> None:
    out = subprocess.run(
        [str(SERVER_BIN), "--listen", "0.0.0.0:0", "--metrics-listen", "off"], capture_output=True, text=True, timeout=30, env=server_env()
    )
    assert out.returncode == 2  # a configuration refusal, as an unknown key is
    assert "refusing to listen on 0.0.0.0:0 without authentication" in out.stderr
    refused = [r for r in map(json.loads, out.stdout.splitlines()) if r["level"] == "ERROR"]
    assert [r["message"] for r in refused] == ["configuration refused; the server did not start"], out.stdout
    assert "refusing to listen on 0.0.0.0:0 without authentication" in refused[0]["error"]


def test_a_command_line_that_does_not_parse_is_refused_in_the_log_too() -> None:
    bad = subprocess.run([str(SERVER_BIN), "--auth-tokenz=s3cret-tok"], capture_output=True, text=True, timeout=30, env=server_env())
    assert bad.returncode == 2 and "unexpected argument" in bad.stderr
    [line] = [json.loads(line) for line in bad.stdout.splitlines()]
    assert (line["level"], line["message"]) == ("ERROR", "configuration refused; the server did not start"), line
    assert line["error"] == "unexpected argument found", "the arguments themselves are not logged (a token may be among them)"
    usage = subprocess.run([str(SERVER_BIN), "--help"], capture_output=True, text=True, timeout=30, env=server_env())
    assert usage.returncode == 0 and "Usage" in usage.stdout and not usage.stdout.startswith("{")


def test_logs_are_json_lines_with_request_id_and_rpc(fresh_server: RunningServer) -> None:
    req = pb.ExecuteRequest(manifest=manifest([node("g", "GainNode")]), audio_inputs={"g": f32(np.zeros(16))})
    with Client(fresh_server.address) as client:
        client.execute(req)
    rec = fresh_server.wait_for(lambda r: r.get("message") == "ExecutePipeline finished")
    assert rec["rpc"] == "ExecutePipeline"
    assert len(rec["request_id"]) == 32
    assert {"timestamp", "level", "message"} <= rec.keys()
    assert "error" not in rec, "a call that succeeded has no error field, not an empty one"
    for line in fresh_server.lines:
        json.loads(line)


def test_an_unknown_method_is_named_and_a_long_one_is_cut(fresh_server: RunningServer) -> None:
    method = "M" * 6000
    with grpc.insecure_channel(fresh_server.address) as channel:
        call = channel.unary_unary(f"/remotemedia.v1.PipelineService/{method}", request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as e:
            call(b"", timeout=30)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert e.value.details().startswith("call one of ExecutePipeline, StreamPipeline, GetVersion: `MMMM"), e.value.details()[:200]
    assert len(e.value.details()) < 400, "the method is quoted cut"
    rec = fresh_server.wait_for(lambda r: str(r.get("rpc", "")).startswith("MMMM"))
    assert len(rec["rpc"]) <= 128 and "more bytes" in rec["rpc"], rec["rpc"]
    assert all(method not in line for line in fresh_server.lines), "never logged whole"


@pytest.mark.parametrize(
    ("sent", "kept"), [("client-id-42", True), ("x" * 8000, False), ("has space", False)], ids=["usable", "too long", "not visible ASCII"]
)
def test_the_request_id_in_the_logs_is_the_one_echoed(fresh_server: RunningServer, sent: str, kept: bool) -> None:
    # An 8000-character id used to be echoed whole but logged cut to 64 characters.
    req = pb.ExecuteRequest(manifest=manifest([node("g", "GainNode")]), audio_inputs={"g": f32(np.zeros(16))})
    with grpc.insecure_channel(fresh_server.address) as channel:
        _, call = service_pb2_grpc.PipelineServiceStub(channel).ExecutePipeline.with_call(
            req, metadata=(("x-request-id", sent),), timeout=30
        )
    echoed = dict(call.initial_metadata())["x-request-id"]
    assert (echoed == sent) == kept and (kept or len(echoed) == 32), echoed
    fresh_server.wait_for(lambda r: r.get("message") == "ExecutePipeline finished" and r.get("request_id") == echoed)


def watch_health(address: str, seen: "queue.Queue[object]") -> None:
    """Opens a Health/Watch stream and reports each status, then how it ended."""
    channel = grpc.insecure_channel(address)
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        for update in stub.Watch(health_pb2.HealthCheckRequest(service="")):
            seen.put(update.status)
    except grpc.RpcError as e:
        seen.put(e.code())
    else:
        seen.put("ended")


@pytest.mark.parametrize("grace_ms", [1000, 10000])
def test_idle_health_watches_do_not_hold_the_shutdown(grace_ms: int) -> None:
    s = start_server("--grace-period-ms", str(grace_ms))
    watches = [queue.Queue() for _ in range(2)]
    threads = [threading.Thread(target=watch_health, args=(s.address, q), daemon=True) for q in watches]
    for t in threads:
        t.start()
    for q in watches:
        assert q.get(timeout=10) == health_pb2.HealthCheckResponse.SERVING
    started = time.monotonic()
    assert s.stop(signal.SIGTERM) == 0
    took = time.monotonic() - started
    for q in watches:
        assert q.get(timeout=10) == health_pb2.HealthCheckResponse.NOT_SERVING, "the watch sees NOT_SERVING first"
        assert q.get(timeout=10) == grpc.StatusCode.UNAVAILABLE
    messages = [r.get("message") for r in s.records()]
    assert "connections did not close in time; closed them" not in messages
    # Nothing was in flight: the shutdown is not held for the grace period.
    assert took < min(grace_ms / 1000, 5.0), took


def test_an_operator_probing_with_grpcurl_during_the_drain_is_answered(tmp_path: Path) -> None:
    # grpcurl asks reflection before any call. Reflection calls opened during the drain were
    # cut before they could answer ("shutting down", so Health/Check could not be probed), and
    # tonic-reflection's task panicked on the dropped response stream (plain text on stderr).
    s, ended = draining_with_a_call_held(tmp_path)

    def grpcurl(*args: str) -> str:
        out = subprocess.run([str(GRPCURL), "-plaintext", s.address, *args], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return out.stdout

    for _ in range(3):
        assert "remotemedia.v1.PipelineService" in grpcurl("list").split()
        assert json.loads(grpcurl("grpc.health.v1.Health/Check")) == {"status": "NOT_SERVING"}
        assert "ExecutePipeline" in grpcurl("describe", "remotemedia.v1.PipelineService")
    assert s.stop(signal.SIGINT, timeout=20) == 1
    assert ended.get(timeout=10) != "no error"
    stderr = s.proc.stderr.read() if s.proc.stderr else ""
    assert "panicked" not in stderr, stderr


@contextlib.contextmanager
def results_backed_up(s: RunningServer, chunks: int = 400) -> Iterator[None]:
    """A stream of `chunks` GainNode chunks whose client reads nothing, held open; entered once
    its results have backed up: with a small receive window (no BDP growth) the session has 8 of
    them queued (its response buffer) past the one in flight, and waits to send the next."""
    hold = threading.Event()

    def requests() -> Iterator[pb.StreamRequest]:
        yield pb.StreamRequest(manifest=manifest([node("g", "GainNode")]))
        for i in range(chunks):
            yield pb.StreamRequest(audio_chunk=pb.AudioChunk(node_id="g", buffer=f32(np.zeros(16_000, np.float32)), sequence=i))
        hold.wait(60)

    options = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)]
    channel = grpc.insecure_channel(s.address, options=options)
    call = service_pb2_grpc.PipelineServiceStub(channel).StreamPipeline(requests())  # never read
    try:
        deadline = time.monotonic() + 30
        while s.metric("remotemedia_stream_chunks_total") < 9:
            assert time.monotonic() < deadline, "the results did not back up"
            time.sleep(0.01)
        yield
    finally:
        hold.set()
        call.cancel()
        channel.close()


def test_a_stream_whose_client_reads_nothing_ends_as_unavailable_when_the_grace_period_ends() -> None:
    # Its results fill the connection; the session waits to send one until the grace period
    # is over. It used to wait on until the connection was closed under it, and to count as the
    # client's leaving (CANCELLED), its "finished" line sometimes lost as the process exited.
    s = start_server("--grace-period-ms", "1000")
    chunks = 400
    with results_backed_up(s, chunks):
        s.proc.send_signal(signal.SIGTERM)
        finished = s.wait_for(lambda r: r.get("message") == "StreamPipeline finished", timeout=20)
        assert finished["code"] == "Unavailable", finished
        assert finished["chunks"] < chunks, "the client's reading nothing held the session"
        assert s.proc.wait(timeout=20) == 0


def test_a_draining_server_takes_no_new_chunk_from_a_busy_stream() -> None:
    # The client keeps its Python node busy (20 ms a chunk, chunks always waiting): the session
    # reads messages ahead while a chunk runs, and those skipped the drain, so chunks kept being
    # served through the whole grace period and the stream was then cut as the grace ran out.
    # Now the chunk in flight finishes and the stream ends as draining ones do, at once.
    s = start_server("--grace-period-ms", "8000", "--python-nodes-path", str(PLUGINS))
    stop = threading.Event()

    def requests() -> Iterator[pb.StreamRequest]:
        yield pb.StreamRequest(manifest=manifest([node("spin", "SpinNode", seconds=0.02)]))
        for i in range(2_000):
            if stop.is_set():
                return
            yield pb.StreamRequest(audio_chunk=pb.AudioChunk(node_id="spin", buffer=f32(np.zeros(320, np.float32)), sequence=i))

    channel = grpc.insecure_channel(s.address)
    call = service_pb2_grpc.PipelineServiceStub(channel).StreamPipeline(requests(), timeout=60)
    try:
        results, after_signal, signalled = 0, 0, None
        with pytest.raises(grpc.RpcError) as ended:
            for response in call:
                if response.WhichOneof("response") != "result":
                    continue
                results += 1
                if signalled is None and results == 20:
                    s.proc.send_signal(signal.SIGTERM)
                    signalled = time.monotonic()
                elif signalled is not None:
                    after_signal += 1
        assert signalled is not None
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE, ended.value
        assert "grace period ran out" not in (ended.value.details() or ""), ended.value.details()
        assert after_signal <= 3, f"{after_signal} chunks were served after SIGTERM"
        assert time.monotonic() - signalled < 4, "the stream ended at once, not when the grace period ran out"
        assert s.proc.wait(timeout=20) == 0
    finally:
        stop.set()
        call.cancel()
        channel.close()


def test_a_stream_whose_client_stops_reading_ends_at_the_idle_timeout_and_frees_its_slot() -> None:
    # Over gRPC a client that stops reading keeps its connection alive (HTTP/2 flow control,
    # pings), and the session waited to send a result for as long as the connection lasted:
    # past the idle timeout and the maximum duration, holding its pipeline, model leases and
    # slot of max_concurrent_streams. Now reading nothing for the idle timeout ends it.
    s = start_server("--stream-idle-timeout-ms", "1500", "--max-concurrent-streams", "1")
    try:
        with results_backed_up(s):
            finished = s.wait_for(lambda r: r.get("message") == "StreamPipeline finished", timeout=20)
            assert finished["code"] == "ResourceExhausted", finished
            assert finished["elapsed_ms"] < 10_000, finished
            assert s.metric("remotemedia_active_streams") == 0
            assert s.metric("remotemedia_limit_rejections_total", limit="stream_idle_timeout_ms") == 1
            # Its slot is free: with max_concurrent_streams 1, another client streams at once.
            with Client(s.address, timeout=30) as client, client.stream(Pipeline.chain(ClientNode("GainNode", "g2")), sample_rate=16_000) as other:
                other.send(np.zeros(160, np.float32))
                assert next(other).sequence == 0
    finally:
        assert s.stop() == 0


def execute_in_background(address: str, req: pb.ExecuteRequest, timeout: float) -> "queue.Queue[object]":
    """Calls ExecutePipeline on a thread of its own; the queue gets "no error" or the call's
    status code when it ends."""
    ended: "queue.Queue[object]" = queue.Queue()

    def call() -> None:
        try:
            with grpc.insecure_channel(address) as channel:
                service_pb2_grpc.PipelineServiceStub(channel).ExecutePipeline(req, timeout=timeout)
            ended.put("no error")
        except grpc.RpcError as e:
            ended.put(e.code())

    threading.Thread(target=call, daemon=True).start()
    return ended


def wait_for_file(path: Path, what: str) -> None:
    """Waits (up to 30 s) for the marker file a test node writes when it starts running."""
    deadline = time.monotonic() + 30
    while not path.exists():
        assert time.monotonic() < deadline, f"{what} never started"
        time.sleep(0.01)


def draining_with_a_call_held(tmp_path: Path) -> tuple[RunningServer, "queue.Queue[object]"]:
    """A server (60 s grace period) draining after SIGTERM while a call it runs spins on; the
    queue gets how that call ended."""
    s = start_server("--grace-period-ms", "60000", "--python-nodes-path", str(PLUGINS))
    spin = manifest([node("spin", "SpinNode", seconds=-1, marker=str(tmp_path / "spinning"))])
    ended = execute_in_background(s.address, pb.ExecuteRequest(manifest=spin, audio_inputs={"spin": f32(np.zeros(16))}), 120)
    wait_for_file(tmp_path / "spinning", "the spinning node")
    s.proc.send_signal(signal.SIGTERM)
    s.wait_for(lambda rec: rec.get("message") == "signal received")
    return s, ended


def test_a_sigint_during_the_grace_period_ends_it_at_once(tmp_path: Path) -> None:
    s, ended = draining_with_a_call_held(tmp_path)
    # The first signal drains: the running call holds the exit for the 60 s grace period. A
    # repeated SIGTERM (supervisors resend it) changes nothing: had it ended the process, the
    # exit status below would be -15, not the 1 of the SIGINT.
    s.proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    assert s.stop(signal.SIGINT, timeout=20) == 1
    assert time.monotonic() - started < 10
    second = s.wait_for(lambda rec: str(rec.get("message", "")).startswith("second signal received"), timeout=5)
    assert second["level"] == "WARN" and second["signal"] == "SIGINT", second
    assert ended.get(timeout=10) != "no error"


def test_shutdown_follows_the_grace_period_when_work_outlasts_it(tmp_path: Path) -> None:
    s = start_server("--grace-period-ms", "1000", "--python-nodes-path", str(PLUGINS), "--python-workers", "2")
    spin = manifest([node("spin", "SpinNode", seconds=-1, marker=str(tmp_path / "unary"))])
    req = pb.ExecuteRequest(manifest=spin, audio_inputs={"spin": f32(np.zeros(16))})
    ended: "queue.Queue[tuple[str, object]]" = queue.Queue()

    def call() -> None:
        try:
            with grpc.insecure_channel(s.address) as channel:
                service_pb2_grpc.PipelineServiceStub(channel).ExecutePipeline(req, timeout=30)
            ended.put(("unary", "no error"))
        except grpc.RpcError as e:
            ended.put(("unary", e.code()))

    def stream() -> None:
        gate = threading.Event()
        spun = manifest([node("spin", "SpinNode", seconds=-1, marker=str(tmp_path / "stream"))])
        chunk = pb.StreamRequest(audio_chunk=pb.AudioChunk(node_id="spin", buffer=f32(np.zeros(16)), sequence=0))

        def requests() -> Iterator[pb.StreamRequest]:
            yield pb.StreamRequest(manifest=spun)
            yield chunk
            gate.wait(30)  # the client stays, its chunk running, until the server ends the stream

        kinds = []
        try:
            with grpc.insecure_channel(s.address) as channel:
                for r in service_pb2_grpc.PipelineServiceStub(channel).StreamPipeline(requests(), timeout=30):
                    kinds.append(r.WhichOneof("response"))
            ended.put(("stream", ("no error", kinds)))
        except grpc.RpcError as e:
            ended.put(("stream", (e.code(), kinds)))
        finally:
            gate.set()

    for f in (call, stream):
        threading.Thread(target=f, daemon=True).start()
    wait_for_file(tmp_path / "unary", "the spinning unary call")
    wait_for_file(tmp_path / "stream", "the spinning stream")
    started = time.monotonic()
    assert s.stop(signal.SIGTERM) == 0
    took = time.monotonic() - started
    assert 1.0 <= took < 4.0, f"shutdown took {took:.2f} s with a 1 s grace period"
    results = dict(ended.get(timeout=10) for _ in range(2))
    # Cut by the shutdown, not abandoned by their clients: UNAVAILABLE, which clients retry
    # elsewhere; the stream gets its final metrics first, as a draining stream does.
    assert results["unary"] == grpc.StatusCode.UNAVAILABLE, results
    assert results["stream"] == (grpc.StatusCode.UNAVAILABLE, ["ready", "metrics"]), results


def test_a_native_call_holding_the_gil_does_not_hold_the_exit(tmp_path: Path) -> None:
    # The process used to live on until the call returned (minutes here), long after the
    # shutdown had answered every client: the runtime waited for a blocking task that waited
    # for the GIL.
    s = start_server("--grace-period-ms", "500", "--python-nodes-path", str(PLUGINS))
    marker = tmp_path / "summing"
    ended = execute_in_background(s.address, gil_hog(marker), 60)
    wait_for_file(marker, "the node")
    started = time.monotonic()
    assert s.stop(signal.SIGTERM, timeout=60) == 0
    took = time.monotonic() - started
    assert took < 10, f"the process exited {took:.1f} s after SIGTERM with a 0.5 s grace period"
    assert ended.get(timeout=10) == grpc.StatusCode.UNAVAILABLE


def gil_hog(marker: Path, **limits: int) -> pb.ExecuteRequest:
    """A request for a GilHogNode: a native call that holds the GIL for minutes once it has
    written `marker`."""
    req = pb.ExecuteRequest(manifest=manifest([node("hog", "GilHogNode", marker=str(marker))]), audio_inputs={"hog": f32(np.zeros(16))})
    if limits:
        req.resource_limits.CopyFrom(pb.ResourceLimits(**limits))
    return req


def hold_the_gil(address: str, marker: Path) -> tuple[service_pb2_grpc.PipelineServiceStub, grpc.Future]:
    """Starts a GilHogNode call (30 s time limit) and waits until it holds the GIL; returns the
    stub and the call, which the caller keeps (a dropped future cancels the call)."""
    stub = service_pb2_grpc.PipelineServiceStub(grpc.insecure_channel(address))
    pending = stub.ExecutePipeline.future(gil_hog(marker, max_timeout_ms=30_000), timeout=120)
    wait_for_file(marker, "the node")
    return stub, pending


def stream_held_open(stub: service_pb2_grpc.PipelineServiceStub, m: pb.PipelineManifest, release: threading.Event) -> Any:
    """A StreamPipeline call that sends manifest `m`, then keeps its side open until `release`
    is set (a minute at most)."""

    def requests() -> Iterator[pb.StreamRequest]:
        yield pb.StreamRequest(manifest=m)
        release.wait(60)

    return stub.StreamPipeline(requests(), timeout=60)


def test_the_time_limit_covers_building_python_nodes_that_wait_for_the_gil(tmp_path: Path) -> None:
    # A request whose Python node could not be built while another node's native call held
    # the GIL used to wait for that call (minutes), its time limit unenforced.
    s = start_server("--python-nodes-path", str(PLUGINS), "--python-workers", "2", "--default-timeout-ms", "1000")
    try:
        stub, pending = hold_the_gil(s.address, tmp_path / "summing")
        gain = manifest([node("g", "GainNode", runtime=pb.RUNTIME_HINT_CPYTHON, gain=2.0)])
        resp = stub.ExecutePipeline(
            pb.ExecuteRequest(manifest=gain, audio_inputs={"g": f32(np.ones(16))}, resource_limits=pb.ResourceLimits(max_timeout_ms=1000)),
            timeout=30,
        )
        assert resp.error.error_type == pb.ERROR_TYPE_RESOURCE_LIMIT, resp
        assert resp.error.message == "execution exceeded its time limit of 1000 ms (while its nodes were being built)"
        assert json.loads(resp.error.context)["limit"] == "max_timeout_ms"
        # A stream's build is bounded by its chunks' time limit (the server's default here); it
        # used to wait for the GIL as long as the client's deadline allowed.
        with pytest.raises(grpc.RpcError) as opened:
            for _ in stub.StreamPipeline(iter([pb.StreamRequest(manifest=gain)]), timeout=30):
                pass
        assert opened.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, opened.value
        assert "execution exceeded its time limit of 1000 ms (while its nodes were being built)" in opened.value.details()
        assert not pending.done(), "answered while the other call still held the GIL"
    finally:
        assert s.stop(signal.SIGTERM, timeout=60) == 0


def test_calls_still_being_built_when_the_grace_period_ends_are_cut_short_with_it(tmp_path: Path) -> None:
    # Their Python nodes wait for the GIL another node's native call holds: a stream built on
    # past the grace period (ending later at its time limit) and a unary call was not told why.
    s = start_server("--python-nodes-path", str(PLUGINS), "--python-workers", "2", "--grace-period-ms", "1000")
    stub, pending = hold_the_gil(s.address, tmp_path / "summing")
    gain = manifest([node("g", "GainNode", runtime=pb.RUNTIME_HINT_CPYTHON, gain=2.0)])
    opened = threading.Event()
    stream = stream_held_open(stub, gain, opened)
    unary = stub.ExecutePipeline.future(pb.ExecuteRequest(manifest=gain, audio_inputs={"g": f32(np.ones(16))}), timeout=60)
    try:
        deadline = time.monotonic() + 20
        while s.metric("remotemedia_active_streams") != 1 or s.metric("remotemedia_active_executions") != 2:
            assert time.monotonic() < deadline, "the calls being built are not counted"
            time.sleep(0.01)
        s.proc.send_signal(signal.SIGTERM)
        with pytest.raises(grpc.RpcError) as cut:
            for _ in stream:
                pass
        for error in (cut.value, unary.exception(timeout=30)):
            assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE, error
            assert "shut down before this call finished" in error.details(), error.details()
        assert s.proc.wait(timeout=30) == 0
    finally:
        opened.set()
        pending.cancel()


def test_a_stream_being_built_counts_as_open_and_ends_when_its_client_leaves(tmp_path: Path) -> None:
    # While its Python node waited for the GIL, a stream was not in remotemedia_active_streams
    # (though max_concurrent_streams counted it), and a client cancelling it was ignored until
    # the build ended.
    s = start_server("--python-nodes-path", str(PLUGINS), "--python-workers", "2", "--default-timeout-ms", "30000")
    try:
        stub, pending = hold_the_gil(s.address, tmp_path / "summing")
        gain = manifest([node("g", "GainNode", runtime=pb.RUNTIME_HINT_CPYTHON, gain=2.0)])
        leave = threading.Event()
        stream = stream_held_open(stub, gain, leave)
        deadline = time.monotonic() + 20
        while s.metric("remotemedia_active_streams") != 1:
            assert time.monotonic() < deadline, "the stream being built is not counted as open"
            time.sleep(0.01)
        stream.cancel()
        leave.set()
        while s.metric("remotemedia_requests_total", rpc="StreamPipeline", code="CANCELLED") != 1:
            assert time.monotonic() < deadline, "the cancelled stream was not ended while its build waited"
            time.sleep(0.01)
        assert s.metric("remotemedia_active_streams") == 0
        assert not pending.done(), "the build was still waiting for the GIL"
    finally:
        assert s.stop(signal.SIGTERM, timeout=60) == 0


def test_what_a_node_prints_goes_to_stderr_and_leaves_the_json_lines_whole() -> None:
    # A node's print() used to land on stdout, fused with the server's next JSON line.
    s = start_server("--python-nodes-path", str(PLUGINS))
    try:
        req = pb.ExecuteRequest(
            manifest=manifest([node("p", "PrintNode", text="HELLO-FROM-A-NODE")]), audio_inputs={"p": f32(np.zeros(16))}
        )
        with grpc.insecure_channel(s.address) as channel:
            resp = service_pb2_grpc.PipelineServiceStub(channel).ExecutePipeline(req, timeout=30)
        assert resp.WhichOneof("outcome") == "result", resp.error
    finally:
        assert s.stop() == 0
    assert s.lines and all(json.loads(line)["message"] for line in s.lines), "stdout holds JSON lines only"
    assert not any("HELLO-FROM-A-NODE" in line for line in s.lines)
    assert s.proc.stderr is not None
    assert s.proc.stderr.read().count("HELLO-FROM-A-NODE") == 2


def test_expected_client_errors_are_not_logged_at_error() -> None:
    s = start_server("--auth-tokens", "right-token", "--max-message-bytes", "1000000", "--python-nodes-path", str(PLUGINS))
    stub = service_pb2_grpc.PipelineServiceStub(grpc.insecure_channel(s.address))
    auth = (("authorization", "Bearer right-token"),)
    with pytest.raises(grpc.RpcError):
        stub.ExecutePipeline(pb.ExecuteRequest(), timeout=10, metadata=(("authorization", "Bearer wrong"),))
    with pytest.raises(grpc.RpcError):
        stub.ExecutePipeline(pb.ExecuteRequest(), timeout=10)
    with pytest.raises(grpc.RpcError):
        stub.ExecutePipeline(pb.ExecuteRequest(audio_inputs={"g": f32(np.zeros(500_000))}), timeout=30, metadata=auth)
    spin = pb.ExecuteRequest(manifest=manifest([node("spin", "SpinNode", seconds=1.0)]), audio_inputs={"spin": f32(np.zeros(16))})
    with pytest.raises(grpc.RpcError):
        stub.ExecutePipeline(spin, timeout=0.2, metadata=auth)
    unknown = pb.ExecuteRequest(manifest=manifest([node("g", "GainNod")]), audio_inputs={"g": f32(np.zeros(16))})
    assert stub.ExecutePipeline(unknown, timeout=10, metadata=auth).WhichOneof("outcome") == "error"
    out = subprocess.run([str(GRPCURL), "-plaintext", s.address, "describe", "no.such.Service"], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert s.stop() == 0
    records = s.records()
    assert not [r for r in records if r.get("level") == "ERROR"], records
    refused = [r for r in records if r.get("message") == "request refused"]
    assert len(refused) == 2 and all(r["level"] == "INFO" for r in refused)


def test_a_tokens_file_without_tokens_stops_start_up(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# the team's tokens\n\n   # one per line\n")
    out = subprocess.run(
        [str(SERVER_BIN), "--auth-tokens-file", str(tokens), "--listen", "127.0.0.1:0", "--metrics-listen", "off"],
        capture_output=True,
        text=True,
        timeout=30,
        env=server_env(),
    )
    assert out.returncode == 2, out.stdout
    assert "auth_tokens_file" in out.stderr and "holds no token" in out.stderr
    on_public = subprocess.run(
        [str(SERVER_BIN), "--auth-tokens-file", str(tokens), "--listen", "0.0.0.0:0", "--metrics-listen", "off"],
        capture_output=True,
        text=True,
        timeout=30,
        env=server_env(),
    )
    assert on_public.returncode == 2
    assert "configure auth_tokens or auth_tokens_file" not in on_public.stderr, "it was configured; say what is wrong with it"


def test_pretty_logs_in_a_pipe_have_no_colour_codes() -> None:
    proc = subprocess.Popen(
        [str(SERVER_BIN), "--log-format", "pretty", "--listen", "127.0.0.1:0", "--metrics-listen", "off"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=server_env(),
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "listening on" in line:
            break
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=30)
    text = "".join(lines) + rest
    assert proc.returncode == 0
    assert "listening on" in text and "shutdown complete" in text
    assert "\x1b[" not in text, repr(text[:300])


def test_a_port_taken_by_the_other_listener_names_which_listener_failed() -> None:
    # gRPC and metrics on one port: the second bind fails, and says it was the metrics one.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    addr = f"127.0.0.1:{port}"
    out = subprocess.run(
        [str(SERVER_BIN), "--listen", addr, "--metrics-listen", addr], capture_output=True, text=True, timeout=30, env=server_env()
    )
    assert out.returncode == 1
    assert f"cannot listen on {addr} (metrics_listen)" in out.stderr, out.stderr


def test_large_requests_give_their_memory_back() -> None:
    # Four requests of 50 s of four-channel audio (37 MiB of samples each, plus the resampled
    # output). glibc's malloc would serve the later ones from a heap it keeps, and the server's
    # RSS grew by about 36 MiB a request; with large blocks kept in their own mappings each
    # request's memory goes back when it ends.
    def rss_mib(pid: int) -> float:
        return int(Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()[0]) / 1024

    s = start_server()
    try:
        unbounded = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
        stub = service_pb2_grpc.PipelineServiceStub(grpc.insecure_channel(s.address, options=unbounded))
        audio = (np.random.default_rng(0).standard_normal((48_000 * 50, 4)) * 0.1).astype(np.float32)
        resample = manifest([node("r", "AudioResampleNode", output_rate=16_000)])

        def request(frames: int) -> pb.ExecuteRequest:
            return pb.ExecuteRequest(manifest=resample, audio_inputs={"r": f32(audio[:frames].ravel(), channels=4, rate=48_000)})

        stub.ExecutePipeline(request(48_000), timeout=60)
        before, after = rss_mib(s.proc.pid), []
        for _ in range(4):
            assert not stub.ExecutePipeline(request(len(audio)), timeout=120).HasField("error")
            after.append(rss_mib(s.proc.pid))
        assert max(after) - before < 24, f"RSS {before:.0f} MiB before, {[round(a) for a in after]} MiB after each request"
    finally:
        assert s.stop() == 0


def test_a_misspelt_environment_variable_is_warned_about_at_start_up() -> None:
    # A misspelt key in the TOML file is refused; a misspelt variable cannot be (the
    # environment holds others' REMOTEMEDIA_ names too), but it is not ignored silently.
    s = start_server(env={"REMOTEMEDIA_MAX_TIMEOT_MS": "5", "REMOTEMEDIA_NOTHING_LIKE_A_KEY": "x"})
    try:
        warned = [r for r in s.records() if r.get("level") == "WARN" and "names no setting" in r.get("message", "")]
        assert {(r["variable"], r.get("meant")) for r in warned} == {
            ("REMOTEMEDIA_MAX_TIMEOT_MS", "REMOTEMEDIA_MAX_TIMEOUT_MS"),
            ("REMOTEMEDIA_NOTHING_LIKE_A_KEY", None),
        }, warned
        assert "did you mean REMOTEMEDIA_MAX_TIMEOUT_MS?" in next(r["message"] for r in warned if r.get("meant"))
    finally:
        assert s.stop() == 0
