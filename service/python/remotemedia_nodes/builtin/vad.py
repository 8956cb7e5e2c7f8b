"""Python twin of VADNode: the same DC blocker, frame features and segmentation, in numpy."""

from __future__ import annotations

from collections import deque
from typing import Any, Literal

import numpy as np
from scipy import signal

from remotemedia_nodes.builtin.basic import StreamLayout, audio_input
from remotemedia_nodes.declare import Port
from remotemedia_nodes.errors import UnsupportedAudio
from remotemedia_nodes.registry import Node, node

NOISE_MARGIN_DB = 6.0
NOISE_WINDOW_MS = 1500
ADAPT_WINDOW_MS = 3000
MAX_PAD_MS = 2000
DC_CUTOFF_HZ = 5.0
MAX_FLATNESS = 0.3
MIN_BAND_RATIO = 0.3
BAND_LOW_HZ, BAND_HIGH_HZ = 150.0, 4000.0
FLOOR_DB = -120.0
#: Lowest input rate: the speech band (150 Hz to 4 kHz) must fit under Nyquist.
MIN_RATE = 8_000
#: Highest input rate: each frame is one FFT of the frame's length, so the rate bounds its
#: memory and work (as the native node's bound).
MAX_RATE = 768_000


class _SlidingMin:
    """The minimum of the last `size` values pushed (a monotonic queue)."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self.pushed = 0
        self.queue: deque[tuple[int, float]] = deque()

    def push(self, value: float) -> None:
        while self.queue and self.queue[-1][1] >= value:
            self.queue.pop()
        self.queue.append((self.pushed, value))
        self.pushed += 1
        while self.queue and self.queue[0][0] + self.size < self.pushed:
            self.queue.popleft()

    def min(self) -> float | None:
        return self.queue[0][1] if self.queue else None

    def full_min(self) -> float | None:
        return self.min() if self.pushed >= self.size else None


@node("VADNode")
class Vad(Node):
    """Voice activity: passes `input` through on `output` and reports `segments`."""

    outputs = (Port.audio("output"), Port.data("segments"))

    def __init__(
        self,
        threshold_db: float = -30.0,
        frame_ms: Literal[10, 20, 30] = 30,
        min_speech_ms: int = 90,
        min_silence_ms: int = 300,
        speech_pad_ms: int = 0,
    ) -> None:
        self.threshold_db = float(threshold_db)
        self.frame_ms = frame_ms
        self.min_speech = max(1, -(-min_speech_ms // frame_ms))
        self.min_silence = max(1, -(-min_silence_ms // frame_ms))
        self.pad_ms = speech_pad_ms
        self.rate = 0
        self.layout = StreamLayout()
        self.buffer = np.zeros(0, dtype=np.float32)
        self.quiet = _SlidingMin(NOISE_WINDOW_MS // frame_ms)
        self.all = _SlidingMin(ADAPT_WINDOW_MS // frame_ms)
        self.frames_done = 0
        self.samples_done = 0
        self.run_start: int | None = None
        self.open: list[float] | None = None  # [start frame, last speech frame, power sum, count]
        self.closing: deque[tuple[int, int, float]] = deque()  # (start, end sample, energy_db)
        self.emitted_end = 0
        self.ready: list[dict[str, float]] = []
        self.dc_state: np.ndarray | None = None

    def _setup(self, rate: int) -> None:
        self.rate = rate
        self.frame_len = max(1, rate * self.frame_ms // 1000)
        self.pad = rate * self.pad_ms // 1000
        # y[n] = x[n] - x[n-1] + r·y[n-1]: a one-pole high-pass at DC_CUTOFF_HZ.
        self.dc_r = float(np.exp(-2 * np.pi * DC_CUTOFF_HZ / rate))
        self.nfft = max(64, 1 << (self.frame_len - 1).bit_length())
        self.window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(self.frame_len) / self.frame_len)).astype(np.float32)
        bin_hz = rate / self.nfft
        nyq = self.nfft // 2
        lo = min(max(int(np.ceil(BAND_LOW_HZ / bin_hz)), 1), nyq)
        hi = min(max(int(np.floor(min(BAND_HIGH_HZ, rate / 2) / bin_hz)), lo + 1), nyq + 1)
        self.band = slice(lo, hi)

    def _dc_block(self, x: np.ndarray) -> np.ndarray:
        """The DC blocker, started at the first sample's level (no start-up transient)."""
        if len(x) == 0:
            return x
        if self.dc_state is None:
            self.dc_state = np.array([-float(x[0])])
        y, self.dc_state = signal.lfilter([1.0, -1.0], [1.0, -self.dc_r], x.astype(np.float64), zi=self.dc_state)
        return y.astype(np.float32)

    def _features(self, frame: np.ndarray) -> tuple[float, float, float, float]:
        frame = frame.astype(np.float64)
        ms = float(np.mean(frame**2)) if len(frame) else 0.0
        energy_db = max(10 * np.log10(ms), FLOOR_DB) if ms > 0 else FLOOR_DB
        spectrum = np.abs(np.fft.rfft(frame * self.window[: len(frame)], self.nfft)) ** 2
        total = float(spectrum[1:].sum())
        band = spectrum[self.band].astype(np.float64)
        band_sum = float(band.sum())
        flatness = min(float(np.exp(np.mean(np.log(band + 1e-20))) / (band_sum / len(band) + 1e-20)), 1.0) if band_sum > 0 else 1.0
        ratio = band_sum / total if total > 0 else 0.0
        band_db = max(10 * np.log10(ms * ratio), FLOOR_DB) if band_sum > 0 and ms * ratio > 0 else FLOOR_DB
        return energy_db, band_db, flatness, ratio

    def _seen(self) -> int:
        return self.samples_done + len(self.buffer)

    def _noise_floor(self) -> float | None:
        q = self.quiet.min()
        return q if q is not None else self.all.full_min()

    def _frame(self, frame: np.ndarray) -> None:
        energy_db, band_db, flatness, ratio = self._features(frame)
        floor = self._noise_floor()
        above_floor = floor is None or band_db >= floor + NOISE_MARGIN_DB
        speech = energy_db >= self.threshold_db and above_floor and flatness <= MAX_FLATNESS and ratio >= MIN_BAND_RATIO
        if not speech:
            self.quiet.push(band_db)
        self.all.push(band_db)
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
            end = min((int(last) + 1) * self.frame_len, self._seen())
            self.closing.append((int(start) * self.frame_len, end, round(10 * np.log10(total / n), 2)))
            self.open = None

    def _release(self, everything: bool) -> None:
        """Emits the closed segments whose end padding has been seen (all when `everything`),
        padded on both sides without overlapping each other, the open segment or the audio's end."""
        seen = self._seen()
        open_start = int(self.open[0]) * self.frame_len if self.open is not None else None
        while self.closing:
            start, end, energy_db = self.closing[0]
            padded_end = end + self.pad
            padding_seen = padded_end <= seen and self.run_start is None
            if not everything and open_start is None and not padding_seen:
                break
            self.closing.popleft()
            out_end = min(padded_end, seen)
            following = self.closing[0][0] if self.closing else open_start
            if following is not None:
                out_end = min(out_end, end + min(following - end, 2 * self.pad) // 2)
            out_start = min(max(start - self.pad, self.emitted_end, 0), start)
            self.emitted_end = out_end
            self.ready.append({"start_s": out_start / self.rate, "end_s": out_end / self.rate, "energy_db": energy_db})

    def process(self, inputs: dict[str, Any]) -> dict[str, Any]:
        a = audio_input(inputs)
        if a.sample_rate < MIN_RATE:
            raise UnsupportedAudio(
                f"input sample_rate {a.sample_rate} Hz is below the {MIN_RATE} Hz the speech band needs; "
                f"put an AudioResampleNode with output_rate {MIN_RATE} or more before it",
                field="input.sample_rate",
            )
        if a.sample_rate > MAX_RATE:
            raise UnsupportedAudio(
                f"input sample_rate {a.sample_rate} Hz is above the {MAX_RATE} Hz a VADNode takes; "
                f"put an AudioResampleNode with output_rate {MAX_RATE} or less before it",
                field="input.sample_rate",
            )
        if self.layout.check(a):
            self._setup(a.sample_rate)
        mono = self._dc_block(a.as_float().mean(axis=1).astype(np.float32))
        self.buffer = np.concatenate([self.buffer, mono])
        while len(self.buffer) >= self.frame_len:
            frame, self.buffer = self.buffer[: self.frame_len], self.buffer[self.frame_len :]
            self._frame(frame)
            self.samples_done += self.frame_len
        self._release(False)
        out: dict[str, Any] = {"output": a}
        if self.ready:
            out["segments"], self.ready = self.ready, []
        return out

    def flush(self) -> dict[str, Any]:
        if self.rate and len(self.buffer) * 2 >= self.frame_len:
            self._frame(self.buffer)
        if self.rate:
            self._close()
            self.samples_done += len(self.buffer)
            self.buffer = self.buffer[:0]
            self._release(True)
        segments, self.ready = self.ready, []
        return {"segments": segments}
