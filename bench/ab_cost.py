"""Server CPU per stream chunk (or per unary call) of several server builds, side by side.

    python bench/ab_cost.py OLD_BINARY NEW_BINARY [--rounds 2] [--seconds 8] [--mode stream|unary|python]

Copy a release `remotemedia-server` aside before a change, build the change, and pass both:
the builds run in turn, `--rounds` times each, so machine noise falls on all of them alike.
Each run is a fresh server under the `cost` load of `bench/load.py` (200 real-time streams of
20 ms chunks through resample -> VAD over 16 connections, or back-to-back unary resample calls
of 1 s), and reports its CPU time (utime + stime from /proc) over the chunks or calls its
metrics counted, and for streams the HTTP/2 socket writes per result. `python` is the stream
load with the Python `GainNode` in place of the VAD, 20 streams by default, with the server's two
Python workers. `--phase spread` starts the streams' chunk clocks spread over one 20 ms period, as
independent live callers are, instead of in step (the default for `stream` and `unary`,
`spread` for `python`: in step, a burst of chunks keeps a worker busy back to back, while live
callers leave it a millisecond or so between jobs). Needs `loadgen` (`cargo build --release --example loadgen`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from load import cpu_seconds, loadgen, server, total  # noqa: E402


def one_run(binary: Path, mode: str, seconds: int, streams: int, phase: str) -> tuple[float, str]:
    python = mode == "python"
    flags = ("--python-workers", "2") if python else ("--python", "false")
    with server(*flags, "--max-concurrent-streams", "300", binary=binary) as s:
        if mode == "python":
            loadgen("pingpong", addr=s.address, chunks=500, runtime="cpython")  # warm-up, as below
            counted = "remotemedia_stream_chunks_total"
        elif mode == "stream":
            loadgen("pingpong", addr=s.address, chunks=500)  # warm-up: connection, the resampler's filter and plans
            counted = "remotemedia_stream_chunks_total"
        else:
            loadgen("unary", addr=s.address, seconds=2, audio_seconds=1)
            counted = "remotemedia_request_duration_seconds_count"
        before = s.scrape()
        cpu = cpu_seconds(s.proc.pid)
        if mode == "stream":
            run = loadgen("stream", addr=s.address, streams=streams, rate=50, seconds=seconds, connections=16, phase=phase)
        elif python:
            run = loadgen(
                "stream",
                addr=s.address,
                streams=streams,
                rate=50,
                seconds=seconds,
                connections=min(16, streams),
                runtime="cpython",
                phase=phase,
            )
        else:
            run = loadgen("unary", addr=s.address, seconds=seconds, audio_seconds=1)
        cpu = cpu_seconds(s.proc.pid) - cpu
        after = s.scrape()
    labels = {"rpc": "ExecutePipeline"} if mode == "unary" else {}
    n = total(after, counted, **labels) - total(before, counted, **labels)
    writes = total(after, "remotemedia_http2_writes_total") - total(before, "remotemedia_http2_writes_total")
    detail = f"{n:.0f} {'calls' if mode == 'unary' else 'chunks'}, {run['errors']} errors"
    if mode != "unary":
        detail += f", {writes / n:.2f} writes per result, p99 {run['round_trip']['p99_ms']:.1f} ms"
    return 1e6 * cpu / n, detail


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binaries", nargs="+", type=Path)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--mode", choices=["stream", "unary", "python"], default="stream")
    ap.add_argument("--streams", type=int, help="concurrent real-time streams (200; 20 with --mode python)")
    ap.add_argument("--phase", choices=["aligned", "spread"], help="the streams' chunk clocks (aligned; spread with --mode python)")
    opts = ap.parse_args()
    streams = opts.streams or (20 if opts.mode == "python" else 200)
    phase = opts.phase or ("spread" if opts.mode == "python" else "aligned")
    results: dict[Path, list[float]] = {b: [] for b in opts.binaries}
    for r in range(opts.rounds):
        for b in opts.binaries:
            us, detail = one_run(b, opts.mode, opts.seconds, streams, phase)
            results[b].append(us)
            print(f"round {r + 1}, {b}: {us:.1f} µs ({detail})", flush=True)
    unit = "call" if opts.mode == "unary" else "chunk"
    print(f"\n| build | {' | '.join(f'run {i + 1}' for i in range(opts.rounds))} | mean µs per {unit} |")
    print(f"| --- |{' --- |' * opts.rounds} --- |")
    for b, v in results.items():
        print(f"| {b} | {' | '.join(f'{x:.1f}' for x in v)} | {statistics.mean(v):.1f} |")


if __name__ == "__main__":
    main()
