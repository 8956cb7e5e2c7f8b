"""Python twin of VADNode: the same frame features and segmentation, in numpy."""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from remotemedia_nodes.builtin.basic import audio_input
from remotemedia_nodes.errors import InvalidInput, ParamError
from remotemedia_nodes.registry import Node, node

NOISE_MARGIN_DB = 6.0
NOISE_WINDOW_MS = 1500
MAX_FLATNESS = 0.3
MIN_BAND_RATIO = 0.3
BAND_LOW_HZ, BAND_HIGH_HZ = 150.0, 4000.0
FLOOR_DB = -120.0


@node("VADNode")
class Vad(Node):
    """Voice activity: passes `input` through on `output` and reports `segments`."""

    def __init__(self, threshold_db: float = -30.0, frame_ms: int = 30, min_speech_ms: int = 90, min_silence_ms: int = 300) -> None:
        if frame_ms not in (10, 20, 30):
            raise ParamError("frame_ms", f"must be 10, 20 or 30, got {frame_ms}")
        if not -100 <= float(threshold_db) <= 0:
            raise ParamError("threshold_db", f"must be a number between -100 and 0, got {threshold_db}")
        for name, v in (("min_speech_ms", min_speech_ms), ("min_silence_ms", min_silence_ms)):
            if not isinstance(v, int) or not 0 <= v <= 10_000:
                raise ParamError(name, f"must be an integer between 0 and 10000, got {v}")
        self.threshold_db = float(threshold_db)
        self.frame_ms = frame_ms
        self.min_speech = max(1, -(-min_speech_ms // frame_ms))
        self.min_silence = max(1, -(-min_silence_ms // frame_ms))
        self.rate = 0
        self.buffer = np.zeros(0, dtype=np.float32)
        self.recent: deque[float] = deque(maxlen=NOISE_WINDOW_MS // frame_ms)
        self.frames_done = 0
        self.samples_done = 0
        self.run_start: int | None = None
        self.open: list[float] | None = None  # [start frame, last speech frame, power sum, count]
        self.closed: list[dict[str, float]] = []

    def _setup(self, rate: int) -> None:
        self.rate = rate
        self.frame_len = max(1, rate * self.frame_ms // 1000)
        self.nfft = max(64, 1 << (self.frame_len - 1).bit_length())
        self.window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(self.frame_len) / self.frame_len)).astype(np.float32)
        bin_hz = rate / self.nfft
        nyq = self.nfft // 2
        lo = min(max(int(np.ceil(BAND_LOW_HZ / bin_hz)), 1), nyq)
        hi = min(max(int(np.floor(min(BAND_HIGH_HZ, rate / 2) / bin_hz)), lo + 1), nyq + 1)
        self.band = slice(lo, hi)

    def _features(self, frame: np.ndarray) -> tuple[float, float, float, float]:
        ms = float(np.mean(frame.astype(np.float64) ** 2))
        energy_db = max(10 * np.log10(ms), FLOOR_DB) if ms > 0 else FLOOR_DB
        spectrum = np.abs(np.fft.rfft(frame * self.window[: len(frame)], self.nfft)) ** 2
        total = float(spectrum[1:].sum())
        band = spectrum[self.band].astype(np.float64)
        band_sum = float(band.sum())
        flatness = min(float(np.exp(np.mean(np.log(band + 1e-20))) / (band_sum / len(band) + 1e-20)), 1.0) if band_sum > 0 else 1.0
        ratio = band_sum / total if total > 0 else 0.0
        band_db = max(10 * np.log10(ms * ratio), FLOOR_DB) if band_sum > 0 and ms * ratio > 0 else FLOOR_DB
        return energy_db, band_db, flatness, ratio

    def _seconds(self, frames: int) -> float:
        return min(frames * self.frame_len, self.samples_done + len(self.buffer)) / self.rate

    def _frame(self, frame: np.ndarray) -> None:
        energy_db, band_db, flatness, ratio = self._features(frame)
        floor = min([band_db, *self.recent])
        speech = energy_db >= self.threshold_db and band_db >= floor + NOISE_MARGIN_DB and flatness <= MAX_FLATNESS and ratio >= MIN_BAND_RATIO
        if not speech:
            self.recent.append(band_db)
        i = self.frames_done
        self.frames_done += 1
        power = 10 ** (energy_db / 10)
        if speech:
            if self.open is not None:
                self.open[1], self.open[2], self.open[3] = i, self.open[2] + power, self.open[3] + 1
            else:
                start = self.run_start if self.run_start is not None else i
                self.run_start = start
                if i + 1 - start >= self.min_speech:
                    self.open = [start, i, power, 1]
                    self.run_start = None
        else:
            self.run_start = None
            if self.open is not None and i - self.open[1] >= self.min_silence:
                self._close()

    def _close(self) -> None:
        if self.open is not None:
            start, last, total, n = self.open
            self.closed.append({
                "start_s": self._seconds(int(start)),
                "end_s": self._seconds(int(last) + 1),
                "energy_db": round(10 * np.log10(total / n), 2),
            })
            self.open = None

    def process(self, inputs: dict[str, Any]) -> dict[str, Any]:
        a = audio_input(inputs, "VADNode")
        if a.sample_rate < 8000:
            raise InvalidInput(f"VADNode: input sample_rate {a.sample_rate} Hz is below the 8000 Hz the speech band needs")
        if not self.rate:
            self._setup(a.sample_rate)
        elif a.sample_rate != self.rate:
            raise InvalidInput(f"VADNode: input sample_rate changed from {self.rate} to {a.sample_rate} Hz within the stream")
        mono = a.as_float().mean(axis=1).astype(np.float32)
        self.buffer = np.concatenate([self.buffer, mono])
        while len(self.buffer) >= self.frame_len:
            frame, self.buffer = self.buffer[: self.frame_len], self.buffer[self.frame_len :]
            self._frame(frame)
            self.samples_done += self.frame_len
        out: dict[str, Any] = {"output": a}
        if self.closed:
            out["segments"], self.closed = self.closed, []
        return out

    def flush(self) -> dict[str, Any]:
        if self.rate and len(self.buffer) * 2 >= self.frame_len:
            self._frame(self.buffer)
        self.samples_done += len(self.buffer)
        self.buffer = self.buffer[:0]
        self._close()
        segments, self.closed = self.closed, []
        return {"segments": segments}
