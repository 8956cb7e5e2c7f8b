"""Times the native nodes (criterion, `cargo bench --bench nodes`) and the Python tools a user
would otherwise pick, on the same signals, and prints the ratios as a Markdown table.

    python bench/compare_python.py            # runs the criterion benches first
    python bench/compare_python.py --no-cargo # reuses service/target/criterion results

Python timings are the median of repeated `timeit` runs in this process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import timeit
from pathlib import Path

import numpy as np
import soxr
import webrtcvad
from scipy.signal import resample_poly

ROOT = Path(__file__).resolve().parents[1]
CRITERION = ROOT / "service" / "target" / "criterion"


def signal(rate: int, frames: int) -> np.ndarray:
    """The benches' test signal: 440 Hz + 3 kHz tones and a little noise."""
    t = np.arange(frames) / rate
    noise = np.random.default_rng(7).uniform(-0.5, 0.5, frames)
    return (0.4 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3000 * t) + 0.01 * noise).astype(np.float32)


def seconds(fn, number: int) -> float:
    """Median time of one call over 7 repeats of `number` calls."""
    runs = timeit.repeat(fn, number=number, repeat=7)
    return float(np.median(runs)) / number


def criterion_seconds(group: str, name: str | None = None) -> float:
    path = CRITERION / group / (name or "") / "new" / "estimates.json" if name else CRITERION / group / "new" / "estimates.json"
    data = json.loads(path.read_text())
    return float(data["median"]["point_estimate"]) * 1e-9


def fmt(s: float) -> str:
    return f"{s * 1e6:,.1f} µs" if s < 1e-3 else f"{s * 1e3:,.2f} ms"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-cargo", action="store_true", help="use existing criterion results")
    opts = ap.parse_args()
    if not opts.no_cargo:
        subprocess.run(["cargo", "bench", "--manifest-path", str(ROOT / "service" / "Cargo.toml"), "--bench", "nodes"], check=True)

    x48 = signal(48_000, 48_000)
    frame = (signal(16_000, 480) * 32767).astype(np.int16).tobytes()
    vad = webrtcvad.Vad(2)
    ints = (signal(16_000, 1_000_000) * 32767).astype(np.int16)

    rows = [
        (
            "resample 1 s 48 → 16 kHz, high (unary: setup + process + flush)",
            criterion_seconds("resample_48k_to_16k", "1s_high_with_setup"),
            [("soxr HQ", seconds(lambda: soxr.resample(x48, 48_000, 16_000, quality="HQ"), 200)),
             ("soxr VHQ", seconds(lambda: soxr.resample(x48, 48_000, 16_000, quality="VHQ"), 200)),
             ("scipy resample_poly", seconds(lambda: resample_poly(x48, 1, 3), 200))],
        ),
        (
            "resample 1 s 48 → 16 kHz, high, streamed in 20 ms chunks",
            criterion_seconds("resample_48k_to_16k", "1s_high_streamed_in_20ms_chunks"),
            [("soxr HQ stream", seconds(lambda: stream_soxr(x48), 100))],
        ),
        (
            "VAD, one 30 ms frame at 16 kHz",
            criterion_seconds("vad_one_30ms_frame_16k"),
            [("py-webrtcvad", seconds(lambda: vad.is_speech(frame, 16_000), 20_000))],
        ),
        (
            "i16 → f32, 1 M samples",
            criterion_seconds("format_1M_samples", "i16_to_f32"),
            [("numpy astype/32768", seconds(lambda: ints.astype(np.float32) / np.float32(32768), 200))],
        ),
    ]
    print("| operation | RemoteMedia | Python tool | Python | Python ÷ ours |")
    print("| --- | --- | --- | --- | --- |")
    for name, ours, others in rows:
        for tool, theirs in others:
            print(f"| {name} | {fmt(ours)} | {tool} | {fmt(theirs)} | {theirs / ours:.2f}× |")
    return 0


def stream_soxr(x: np.ndarray) -> None:
    r = soxr.ResampleStream(48_000, 16_000, 1, dtype="float32", quality="HQ")
    for i in range(0, len(x), 960):
        r.resample_chunk(x[i : i + 960], last=i + 960 >= len(x))


if __name__ == "__main__":
    sys.exit(main())
