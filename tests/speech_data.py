"""Recorded speech for the model tests: read speech that the `moonshine-voice` wheel on PyPI ships
in its assets, fetched by `make test-data` (never committed).

    python tests/speech_data.py fetch   # what `make test-data` runs

The fetch downloads the pinned wheel with pip (no dependencies, nothing installed), checks that
its licence is still the one recorded here and that every recording is byte for byte the one
the tests were written against (SHA-256), and writes the recordings, the wheel's licence text
and a PROVENANCE file to ``tests/data/speech/``.

Licence: the wheel is MIT-licensed (``License: MIT`` in its metadata, ``Copyright (c) 2025
Moonshine AI`` in ``moonshine_voice-0.1.5.dist-info/licenses/LICENSE``), and it ships the
recordings under that licence with no separate notice for them. ``two_cities.wav`` is a reading
of the opening of Charles Dickens' *A Tale of Two Cities* (1859, public domain), whose text is
:data:`TWO_CITIES_TEXT`.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import soundfile
import soxr  # type: ignore[import-untyped]

WHEEL = "moonshine-voice==0.1.5"
LICENSE = "MIT"
DIR = Path(__file__).resolve().parent / "data" / "speech"

#: The recordings used, with their SHA-256: mono 16-bit PCM WAV, read speech.
RECORDINGS = {
    "two_cities.wav": "f3348494d77cb74a02862f5e685ed09faf3e75832c5cc5c80703282c2cd8b52e",  # 44.4 s, 48 kHz
    "beckett.wav": "e5a26b3d29e5b0bc8dbd72c11d16a3808a4ec0ac45b21f12a27d2a2fe5c5ae61",  # 10.0 s, 16 kHz
    "endgame_nagg_nell.wav": "78f44dc6d3da32ecab0c37f391700f0569f4612b8e0be2ecbaf33e1d3d566474",  # 28.3 s, 24 kHz, two voices
    "clone-test.wav": "ff0313f1b99468ac425304ba7f8deada003efbada014863a475cb8bda87a6191",  # 4.1 s, 16 kHz
}

#: What two_cities.wav reads (the novel's first paragraph, as far as the recording goes).
TWO_CITIES_TEXT = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, "
    "it was the season of Darkness, it was the spring of hope, it was the winter of despair, we had "
    "everything before us, we had nothing before us, we were all going direct to Heaven, we were all going "
    "direct the other way - in short, the period was so far like the present period, that some of its "
    "noisiest authorities insisted on its being received, for good or for evil, in the superlative degree "
    "of comparison only."
)


def path(name: str) -> Path:
    """The fetched recording `name`; fails with what to run when it is missing."""
    p = DIR / name
    if not p.exists():
        raise FileNotFoundError(f"{p} is missing: run `make test-data` (make test does) to fetch the recorded speech")
    return p


def load_16k(name: str) -> np.ndarray:
    """Recording `name` as mono int16 samples at 16 kHz (resampled with soxr when needed)."""
    x, rate = soundfile.read(path(name), dtype="float32")
    if rate != 16000:
        x = soxr.resample(x, rate, 16000, quality="VHQ")
    samples: np.ndarray = np.clip(np.round(x * 32768), -32768, 32767).astype(np.int16)
    return samples


def words(text: str) -> list[str]:
    """Lower-case words, punctuation dropped (how transcripts are compared)."""
    cleaned = "".join(c if c.isalnum() or c in " '" else " " for c in text.lower())
    return cleaned.split()


def fetch() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:", "--dest", tmp, WHEEL],
            check=True,
        )
        wheel = next(Path(tmp).glob("moonshine_voice-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            info = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
            metadata = z.read(info).decode()
            declared = next((line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("License:")), None)
            if declared != LICENSE:
                raise SystemExit(f"{WHEEL} now declares licence {declared!r}, not {LICENSE!r}: check it before using its recordings")
            license_text = z.read(next(n for n in z.namelist() if n.endswith("licenses/LICENSE"))).decode()
            DIR.mkdir(parents=True, exist_ok=True)
            for name, digest in RECORDINGS.items():
                data = z.read(f"moonshine_voice/assets/{name}")
                found = hashlib.sha256(data).hexdigest()
                if found != digest:
                    raise SystemExit(f"{name} in {WHEEL} has SHA-256 {found}, not the recorded {digest}")
                (DIR / name).write_bytes(data)
        (DIR / "LICENSE").write_text(license_text)
        (DIR / "PROVENANCE").write_text(
            f"Fetched from the PyPI wheel {wheel.name} ({WHEEL}), moonshine_voice/assets/.\n"
            f"Licence: {declared} (the wheel's dist-info licence, copied to LICENSE here).\n"
            + "".join(f"{name} sha256 {digest}\n" for name, digest in RECORDINGS.items())
        )
    print(f"recorded speech in {DIR}: {', '.join(RECORDINGS)} ({LICENSE}, from {WHEEL})")


if __name__ == "__main__":
    if sys.argv[1:] != ["fetch"]:
        raise SystemExit("usage: python tests/speech_data.py fetch")
    fetch()
