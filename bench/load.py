"""Load benchmarks of the real server (release build), printed as Markdown for BENCHMARKS.md.

    python bench/load.py              # everything, about five minutes
    python bench/load.py --quick      # shorter runs and 200 streams, about a minute
    python bench/load.py --only unary,ghz,concurrent,serialization,pingpong,streams,cost,transports

What runs, each against a fresh `remotemedia-server` on a free port:
- unary: one client (`loadgen unary`, a tonic client) sending back-to-back ExecutePipeline
  calls that resample 1 s of 48 kHz mono f32 to 16 kHz; latency percentiles.
- ghz: ghz at 16 concurrent clients (16 connections) with the same serialized request against
  our server and against `bench/baseline_server.py` (grpcio + soxr), one after the other in the
  same run; requests per second and latency of both. ghz builds every request through dynamic
  protobuf messages and needs about a core of its own at this rate, so on a 2-core machine it
  measures the pair (driver + server) more than the server.
- concurrent: the same comparison driven by `loadgen unary --concurrency 16` (a tonic client
  that reuses one encoded request), which leaves the servers most of the CPU.
- serialization: the same call with 1, 5 and 10 s buffers; the server's own metrics give the
  share of time spent on the wire format: protobuf decode/encode
  (`remotemedia_codec_duration_seconds`) plus request/response conversion
  (`remotemedia_conversion_duration_seconds`), over the RPC time
  (`remotemedia_request_duration_seconds`).
- pingpong: one stream of 20 ms chunks through resample + VAD, each chunk sent when the
  previous result arrived; round trip per chunk.
- streams: N real-time streams (50 chunks/s each, 20 ms of 48 kHz audio per chunk through
  resample → VAD) for S seconds over 16 connections: errors, order, round trip per chunk, and
  the server's RSS growth per open stream. Twice: the streams sending in step (each period's
  chunks all at once), then with their chunk clocks spread over the period, as live callers'.
- cost: the server's CPU time (utime + stime from /proc) per stream chunk, over the chunks its
  metrics counted for 200 real-time streams, and per unary call (resample 1 s 48 -> 16 kHz, one
  client), each beside its reference, the nodes' own work as criterion times it in the same run
  (`cargo bench --bench nodes -- 'reference|1s_high_with_setup'`): 1 s through resample -> VAD
  in one call on warm nodes, / 50, and one unary resample with setup. The grpcio + soxr
  baseline's CPU per call is measured the same way, with the same client.
- transports: StreamPipeline over WebSocket against gRPC HTTP/2, one server, one after the
  other: pingpong round trips on each, then 200 real-time streams on each (WebSocket: a
  connection per stream, as browsers have; gRPC: 16 connections), with the server's CPU time
  per chunk (utime + stime from /proc over the chunks its metrics counted).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from remotemedia_client import pb  # noqa: E402

TARGET = ROOT / "service" / "target" / "release"
SERVER = TARGET / "remotemedia-server"
LOADGEN = TARGET / "examples" / "loadgen"
TOOLS = ROOT / ".tools" / "bin"
GHZ = Path(os.environ.get("GHZ", TOOLS / "ghz"))


def build() -> None:
    subprocess.run(
        ["cargo", "build", "--release", "--locked", "--manifest-path", str(ROOT / "service" / "Cargo.toml"), "--bin", "remotemedia-server", "--example", "loadgen"],
        check=True,
        cwd=ROOT / "service",  # service/.cargo/config.toml pins PYO3_PYTHON to the project's venv
    )


class Server:
    def __init__(self, proc: subprocess.Popen[str], address: str, metrics: str) -> None:
        self.proc, self.address, self.metrics_address = proc, address, metrics

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with urllib.request.urlopen(f"http://{self.metrics_address}/metrics", timeout=10) as r:
            text = r.read().decode()
        out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out


def total(scrape: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in scrape.items() if n == name and want <= set(ls))


@contextmanager
def server(*args: str, binary: Path = SERVER) -> Iterator[Server]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMOTEMEDIA_")}
    proc = subprocess.Popen(
        [str(binary), "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", *args],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        rec = json.loads(line)
        if str(rec.get("message", "")).startswith("remotemedia-server listening"):
            break
    else:
        raise SystemExit(f"server exited with {proc.wait()}")
    # The server logs one JSON line per request (the default level); keep the pipe drained.
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    try:
        yield Server(proc, rec["address"], rec["metrics_address"])
    finally:
        proc.terminate()
        proc.wait(timeout=30)


class Baseline:
    def __init__(self, proc: subprocess.Popen[str], address: str) -> None:
        self.proc, self.address = proc, address


@contextmanager
def baseline() -> Iterator[Baseline]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "baseline_server.py"), "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on "):
        raise SystemExit(f"baseline server failed: {line!r}")
    try:
        yield Baseline(proc, line.split()[-1])
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def loadgen(mode: str, **flags: object) -> dict:
    cmd = [str(LOADGEN), mode]
    for k, v in flags.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def resample_request(seconds: int) -> bytes:
    t = np.arange(48_000 * seconds) / 48_000
    x = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 3000 * t)).astype("<f4")
    buf = pb.AudioBuffer(samples=x.tobytes(), sample_rate=48_000, channels=1, format=pb.AUDIO_FORMAT_F32, num_samples=x.size)
    manifest = pb.PipelineManifest(version="v1", nodes=[pb.NodeManifest(id="rs", node_type="AudioResampleNode", params='{"output_rate": 16000}')])
    return pb.ExecuteRequest(manifest=manifest, audio_inputs={"rs": buf}).SerializeToString()


def ghz(address: str, request_file: Path, seconds: int, concurrency: int) -> dict:
    cmd = [
        str(GHZ), "--insecure",
        "--proto", str(ROOT / "proto" / "remotemedia" / "v1" / "service.proto"),
        "--import-paths", str(ROOT / "proto"),
        "--call", "remotemedia.v1.PipelineService/ExecutePipeline",
        "--binary-file", str(request_file),
        "--concurrency", str(concurrency), "--connections", str(concurrency),
        "--duration", f"{seconds}s", "--max-recv-message-size", "64MB",
        "--format", "json", address,
    ]  # fmt: skip
    report = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    dist = {d["percentage"]: d["latency"] / 1e6 for d in report.get("latencyDistribution") or []}
    return {
        "rps": report["rps"],
        "count": report["count"],
        "errors": sum(v for k, v in (report.get("statusCodeDistribution") or {}).items() if k != "OK"),
        "p50_ms": dist.get(50),
        "p99_ms": dist.get(99),
    }


def run_unary(opts: argparse.Namespace, results: dict) -> None:
    with server() as s:
        results["unary"] = loadgen("unary", addr=s.address, seconds=opts.seconds, audio_seconds=1)


def run_ghz(opts: argparse.Namespace, results: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        req = Path(tmp) / "resample-1s.bin"
        req.write_bytes(resample_request(1))
        with server() as s:
            ghz(s.address, req, 2, 16)  # warm-up: connections, the resampler's filter and plans
            ours = ghz(s.address, req, opts.seconds, 16)
        with baseline() as b:
            ghz(b.address, req, 2, 16)
            theirs = ghz(b.address, req, opts.seconds, 16)
    results["ghz"] = {"ours": ours, "baseline": theirs, "ratio": ours["rps"] / theirs["rps"]}


def run_concurrent(opts: argparse.Namespace, results: dict) -> None:
    flags = {"seconds": opts.seconds, "audio_seconds": 1, "concurrency": 16, "connections": 16}
    with server() as s:
        loadgen("unary", **{**flags, "seconds": 2}, addr=s.address)  # warm-up
        ours = loadgen("unary", **flags, addr=s.address)
    with baseline() as b:
        loadgen("unary", **{**flags, "seconds": 2}, addr=b.address)
        theirs = loadgen("unary", **flags, addr=b.address)
    results["concurrent"] = {"ours": ours, "baseline": theirs, "ratio": ours["rps"] / theirs["rps"]}


def run_serialization(opts: argparse.Namespace, results: dict) -> None:
    rows = []
    for audio_seconds in (1, 5, 10):
        with server() as s:
            before = s.scrape()
            run = loadgen("unary", addr=s.address, seconds=max(3, opts.seconds // 2), audio_seconds=audio_seconds)
            after = s.scrape()
        delta = {name: total(after, name, **labels) - total(before, name, **labels) for name, labels in [
            ("remotemedia_codec_duration_seconds_sum", {}),
            ("remotemedia_conversion_duration_seconds_sum", {"rpc": "ExecutePipeline"}),
            ("remotemedia_request_duration_seconds_sum", {"rpc": "ExecutePipeline"}),
        ]}  # fmt: skip
        wire = delta["remotemedia_codec_duration_seconds_sum"] + delta["remotemedia_conversion_duration_seconds_sum"]
        rows.append({
            "audio_seconds": audio_seconds,
            "requests": run["latency"]["count"],
            "p50_ms": run["latency"]["p50_ms"],
            "serialization_over_rpc_time": wire / delta["remotemedia_request_duration_seconds_sum"],
            "codec_ms_per_request": 1e3 * delta["remotemedia_codec_duration_seconds_sum"] / max(1, run["latency"]["count"]),
            "handler_serialization_over_wall": run["server_serialization_over_wall"],
        })  # fmt: skip
    results["serialization"] = rows


def run_pingpong(opts: argparse.Namespace, results: dict) -> None:
    with server() as s:
        results["pingpong"] = loadgen("pingpong", addr=s.address, chunks=opts.chunks)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_transports(opts: argparse.Namespace, results: dict) -> None:
    streams = 200

    def measured(s: Server, mode: str, **flags: object) -> dict:
        chunks_before = total(s.scrape(), "remotemedia_stream_chunks_total")
        cpu_before = cpu_seconds(s.proc.pid)
        run = loadgen(mode, addr=s.address, **flags)
        cpu = cpu_seconds(s.proc.pid) - cpu_before
        chunks = total(s.scrape(), "remotemedia_stream_chunks_total") - chunks_before
        run["server_cpu_us_per_chunk"] = 1e6 * cpu / chunks if chunks else float("nan")
        run["server_chunks"] = chunks
        return run

    out: dict = {"pingpong": {}, "streams": {}}
    with server("--max-concurrent-streams", str(streams + 100)) as s:
        for transport in ("grpc", "websocket"):
            loadgen("pingpong", addr=s.address, chunks=500, transport=transport)  # warm-up
        for transport in ("grpc", "websocket"):
            out["pingpong"][transport] = measured(s, "pingpong", chunks=opts.chunks, transport=transport)
        for transport in ("grpc", "websocket"):
            out["streams"][transport] = measured(
                s, "stream", streams=streams, rate=50, seconds=opts.transport_seconds, connections=16, transport=transport
            )
    results["transports"] = out


def run_streams(opts: argparse.Namespace, results: dict) -> None:
    """The real-time streams twice: in step (every stream's chunk of a period sent at once, the
    burstiest load), then with their chunk clocks spread over the period, as live callers are."""
    results["streams"] = []
    for phase in ("aligned", "spread"):
        with server("--max-concurrent-streams", str(opts.streams + 100)) as s:
            results["streams"].append(
                loadgen(
                    "stream",
                    addr=s.address,
                    streams=opts.streams,
                    rate=50,
                    seconds=opts.stream_seconds,
                    connections=16,
                    server_pid=s.proc.pid,
                    phase=phase,
                )
            )


def criterion_median(group: str, name: str) -> float:
    """The median criterion measured for `group/name`, in seconds."""
    estimates = json.loads((ROOT / "service" / "target" / "criterion" / group / name / "new" / "estimates.json").read_text())
    return estimates["median"]["point_estimate"] / 1e9


def run_cost(opts: argparse.Namespace, results: dict) -> None:
    subprocess.run(
        ["cargo", "bench", "--locked", "--manifest-path", str(ROOT / "service" / "Cargo.toml"), "--bench", "nodes", "--", "reference|1s_high_with_setup"],
        check=True,
        cwd=ROOT / "service",
        stdout=subprocess.DEVNULL,
    )
    chunk_reference = criterion_median("reference", "resample_vad_1s_in_one_call") / 50
    executor_chunk = criterion_median("reference", "resample_vad_1s_as_50_chunks_through_the_executor") / 50
    call_reference = criterion_median("resample_48k_to_16k", "1s_high_with_setup")
    streams, seconds = 200, opts.cost_seconds
    out: dict = {"streams": streams, "seconds": seconds}
    with server("--max-concurrent-streams", str(streams + 100)) as s:
        loadgen("pingpong", addr=s.address, chunks=500)  # warm-up: connection, the resampler's filter and plans
        chunks, cpu = total(s.scrape(), "remotemedia_stream_chunks_total"), cpu_seconds(s.proc.pid)
        run = loadgen("stream", addr=s.address, streams=streams, rate=50, seconds=seconds, connections=16)
        cpu = cpu_seconds(s.proc.pid) - cpu
        chunks = total(s.scrape(), "remotemedia_stream_chunks_total") - chunks
        out["stream"] = {
            "chunks": chunks,
            "errors": run["errors"],
            "out_of_order": run["out_of_order"],
            "p99_ms": run["round_trip"]["p99_ms"],
            "server_cpu_us": 1e6 * cpu / chunks,
            "reference_us": 1e6 * chunk_reference,
            "executor_us": 1e6 * executor_chunk,
        }
        loadgen("unary", addr=s.address, seconds=2, audio_seconds=1)  # warm-up
        out["unary"] = unary_cost(s.proc.pid, s.address, opts.seconds)
    with baseline() as b:
        loadgen("unary", addr=b.address, seconds=2, audio_seconds=1)
        out["baseline"] = unary_cost(b.proc.pid, b.address, opts.seconds)
    out["unary"]["reference_us"] = 1e6 * call_reference
    results["cost"] = out


def unary_cost(pid: int, address: str, seconds: int) -> dict:
    """CPU time of server `pid` per unary call over `seconds` of back-to-back calls."""
    cpu = cpu_seconds(pid)
    run = loadgen("unary", addr=address, seconds=seconds, audio_seconds=1)
    cpu = cpu_seconds(pid) - cpu
    calls = run["latency"]["count"] + run["errors"] + 50  # loadgen's 50 warm-up calls count too
    return {"calls": calls, "errors": run["errors"], "p50_ms": run["latency"]["p50_ms"], "server_cpu_us": 1e6 * cpu / calls}


def cost_markdown(c: dict) -> str:
    st, u, b = c["stream"], c["unary"], c["baseline"]
    stream = (
        f"| per stream chunk, 20 ms through resample → VAD ({c['streams']} streams × 50 chunks/s, {st['chunks']:.0f} chunks; "
        f"{st['errors']} errors, {st['out_of_order']} out of order, p99 {st['p99_ms']:.1f} ms) | {st['server_cpu_us']:.1f} µs | "
        f"{st['reference_us']:.2f} µs | {st['server_cpu_us'] / st['reference_us']:.1f}× | ≤ 3× |"
    )
    executor = (
        f"| the same chunk through the executor in process, result message included (criterion) | {st['executor_us']:.2f} µs | "
        f"{st['reference_us']:.2f} µs | {st['executor_us'] / st['reference_us']:.2f}× | |"
    )
    unary = (
        f"| per unary call, resample 1 s 48 → 16 kHz, one client ({u['calls']} calls) | {u['server_cpu_us']:.1f} µs | "
        f"{u['reference_us']:.1f} µs | {u['server_cpu_us'] / u['reference_us']:.2f}× | ≤ 1.25× |"
    )
    base = (
        f"| grpcio + soxr baseline, the same calls ({b['calls']} calls) | {b['server_cpu_us']:.1f} µs | | "
        f"baseline ÷ ours = {b['server_cpu_us'] / u['server_cpu_us']:.2f}× | ≥ 3× |"
    )
    rows = ["| server CPU | measured | reference: the nodes' own work | ratio | goal |", "| --- | --- | --- | --- | --- |", stream, executor, unary, base]
    return "\n".join(rows)


def markdown(results: dict) -> str:
    out = []
    if "unary" in results:
        u = results["unary"]["latency"]
        out.append(f"| unary ExecutePipeline, resample 1 s 48 → 16 kHz, one client | p50 ≤ 0.3 ms, p99 ≤ 1 ms | p50 {u['p50_ms']:.3f} ms, p99 {u['p99_ms']:.3f} ms ({u['count']} calls) |")
    if "ghz" in results:
        g = results["ghz"]
        out.append(
            f"| the same at 16 concurrent clients (ghz), ours vs grpcio + soxr | ≥ 5× | {g['ours']['rps']:.0f} vs {g['baseline']['rps']:.0f} req/s = {g['ratio']:.2f}× "
            f"(p50 {g['ours']['p50_ms']:.2f} vs {g['baseline']['p50_ms']:.2f} ms; errors {g['ours']['errors']} / {g['baseline']['errors']}) |"
        )
    if "concurrent" in results:
        c = results["concurrent"]
        o, b = c["ours"], c["baseline"]
        out.append(
            f"| the same at 16 concurrent clients (loadgen), ours vs grpcio + soxr | ≥ 5× | {o['rps']:.0f} vs {b['rps']:.0f} req/s = {c['ratio']:.2f}× "
            f"(p50 {o['latency']['p50_ms']:.2f} vs {b['latency']['p50_ms']:.2f} ms; errors {o['errors']} / {b['errors']}) |"
        )
    if "pingpong" in results:
        p = results["pingpong"]["round_trip"]
        out.append(f"| streaming 20 ms chunks through resample + VAD, round trip | p50 ≤ 0.2 ms, p99 ≤ 1 ms | p50 {p['p50_ms']:.3f} ms, p99 {p['p99_ms']:.3f} ms ({p['count']} chunks) |")
    for st in results.get("streams", []):
        rt = st["round_trip"]
        rss = st.get("rss_per_stream_bytes")
        sent = "sent in step" if st["phase"] == "aligned" else "clocks spread over the period"
        out.append(
            f"| {st['streams']} real-time streams × 50 chunks/s for {st['seconds']:.0f} s, {sent} | zero errors, p99 ≤ 20 ms, ≤ 1 MB RSS/stream | "
            f"{st['errors']} errors, {st['out_of_order']} out of order, {st['results']} results; p50 {rt['p50_ms']:.2f} ms, p99 {rt['p99_ms']:.2f} ms; "
            f"{(rss or 0) / 1024:.0f} KiB RSS/stream |"
        )
    if "serialization" in results:
        cells = ", ".join(f"{r['audio_seconds']} s: {100 * r['serialization_over_rpc_time']:.1f} %" for r in results["serialization"])
        out.append(f"| serialization / RPC time (server metrics), 1-10 s buffers | ≤ 10 % | {cells} |")
    table = "| what | goal | measured |\n| --- | --- | --- |\n" + "\n".join(out)
    if "cost" in results:
        table += "\n\n" + cost_markdown(results["cost"])
    if "transports" in results:
        table += "\n\n" + transports_markdown(results["transports"])
    return table


def transports_markdown(t: dict) -> str:
    rows = ["| StreamPipeline, 20 ms chunks through resample + VAD | gRPC HTTP/2 | WebSocket | WebSocket ÷ gRPC |", "| --- | --- | --- | --- |"]
    for part, label in (("pingpong", "one stream, ping-pong"), ("streams", "200 real-time streams")):
        g, w = t[part]["grpc"], t[part]["websocket"]
        for key, what in (("p50_ms", "round trip p50"), ("p99_ms", "round trip p99")):
            a, b = g["round_trip"][key], w["round_trip"][key]
            rows.append(f"| {label}: {what} | {a:.3f} ms | {b:.3f} ms | {b / a:.2f}× |")
        a, b = g["server_cpu_us_per_chunk"], w["server_cpu_us_per_chunk"]
        rows.append(f"| {label}: server CPU per chunk | {a:.1f} µs | {b:.1f} µs | {b / a:.2f}× |")
        rows.append(f"| {label}: chunks, errors | {g['round_trip']['count']}, {g['errors']} | {w['round_trip']['count']}, {w['errors']} | |")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short runs and 200 streams")
    ap.add_argument("--only", default="unary,ghz,concurrent,serialization,pingpong,streams,cost,transports")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    opts = ap.parse_args()
    opts.seconds = 5 if opts.quick else 15
    opts.chunks = 2_000 if opts.quick else 10_000
    opts.streams = 200 if opts.quick else 1_000
    opts.stream_seconds = 10 if opts.quick else 60
    opts.cost_seconds = 10 if opts.quick else 20
    opts.transport_seconds = 5 if opts.quick else 20
    if not opts.no_build:
        build()
    if "ghz" in opts.only.split(",") and not GHZ.exists():
        raise SystemExit(f"{GHZ} is missing: run `make bench-tools`")
    results: dict = {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count()}
    steps = {
        "unary": run_unary,
        "ghz": run_ghz,
        "concurrent": run_concurrent,
        "serialization": run_serialization,
        "pingpong": run_pingpong,
        "streams": run_streams,
        "cost": run_cost,
        "transports": run_transports,
    }
    for name in opts.only.split(","):
        print(f"running {name} ...", file=sys.stderr, flush=True)
        steps[name](opts, results)
    if opts.json:
        opts.json.write_text(json.dumps(results, indent=2))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
