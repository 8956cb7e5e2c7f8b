"""LoudnessNode: ITU-R BS.1770 integrated loudness (pyloudnorm's K-weighting and gating), reported as `lufs`."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pyloudnorm
import scipy.signal

from remotemedia_nodes.builtin.basic import StreamLayout, audio_input
from remotemedia_nodes.declare import Port
from remotemedia_nodes.errors import UnsupportedAudio
from remotemedia_nodes.registry import Node, node

#: Input rates taken, in Hz: the K-weighting's 1.5 kHz shelf needs a Nyquist frequency well
#: above it; the top is the resampler's.
MIN_RATE, MAX_RATE = 8_000, 768_000
#: BS.1770 channel weights (L, R, C, Ls, Rs): at most five channels.
CHANNEL_GAINS = (1.0, 1.0, 1.0, 1.41, 1.41)
#: Gating blocks of 400 ms overlapping by 75 %: a new block every 100 ms (pyloudnorm's defaults).
BLOCK_S, STEP = 0.4, 0.25
#: Absolute gate, in LUFS; the relative gate is 10 LU below the absolutely gated loudness.
ABSOLUTE_GATE = -70.0


@node("LoudnessNode")
class Loudness(Node):
    """ITU-R BS.1770 integrated loudness, reported at the end of the audio.

    Passes the audio through and, when the input ends (a request, or a stream's close), reports
    its integrated loudness on data port `lufs` (LUFS; null for silence and for audio shorter
    than one 0.4 s gating block, which has no measurable loudness). The audio is K-weighted as
    it arrives (pyloudnorm's filters, with their state kept across chunks) and only the energy
    of each 100 ms step is kept, so a stream of any length holds a few bytes per second; the
    result equals pyloudnorm's `Meter.integrated_loudness` on the whole audio. Takes 8 to
    768 kHz and at most 5 channels (L, R, C, Ls, Rs). Python only.
    """

    inputs = (Port.audio("input", "audio at 8 to 768 kHz, at most 5 channels (L, R, C, Ls, Rs)"),)
    outputs = (
        Port.audio("output", "the input audio, unchanged"),
        Port.data("lufs", "integrated loudness in LUFS, or null for silence or under 0.4 s of audio"),
    )

    def __init__(self) -> None:
        self.layout = StreamLayout()
        #: Each K-weighting stage: (b, a, passband gain, filter state per channel).
        self.stages: list[tuple[np.ndarray, np.ndarray, float, np.ndarray]] = []
        self.frames = 0
        #: Sum of squares of the K-weighted audio per channel, for each completed 100 ms step.
        self.steps: list[np.ndarray] = []
        self.current: np.ndarray | None = None

    def process(self, inputs: dict[str, Any]) -> dict[str, Any]:
        a = audio_input(inputs)
        if not MIN_RATE <= a.sample_rate <= MAX_RATE:
            raise UnsupportedAudio(
                f"input sample_rate {a.sample_rate} Hz is outside the {MIN_RATE}..={MAX_RATE} Hz it takes; "
                f"put an AudioResampleNode with output_rate 48000 before it",
                field="input.sample_rate",
            )
        if a.channels > len(CHANNEL_GAINS):
            raise UnsupportedAudio(
                f"input has {a.channels} channels; LoudnessNode takes at most {len(CHANNEL_GAINS)} (L, R, C, Ls, Rs); "
                f"put a ChannelMixerNode before it",
                field="input.channels",
            )
        if self.layout.check(a):
            meter = pyloudnorm.Meter(a.sample_rate)
            self.stages = [
                (f.b, f.a, f.passband_gain, np.zeros((max(len(f.a), len(f.b)) - 1, a.channels)))
                for f in meter._filters.values()  # the meter's K-weighting stages, as it applies them
            ]
            self.current = np.zeros(a.channels)
        self._weigh(a.as_float().astype(np.float64))
        return {"output": a}

    def _weigh(self, x: np.ndarray) -> None:
        """K-weights `x` (frames, channels) and adds its energy to the 100 ms steps."""
        for k, (b, a, gain, state) in enumerate(self.stages):
            filtered, state = scipy.signal.lfilter(b, a, x, axis=0, zi=state)
            x = gain * filtered
            self.stages[k] = (b, a, gain, state)
        rate = self.layout.rate
        assert self.current is not None
        while len(x):
            end = self._boundary(len(self.steps) + 1, rate)
            take = min(end - self.frames, len(x))
            self.current += np.square(x[:take]).sum(axis=0)
            self.frames += take
            x = x[take:]
            if self.frames == end:
                self.steps.append(self.current)
                self.current = np.zeros_like(self.current)

    @staticmethod
    def _boundary(k: int, rate: int) -> int:
        """First frame of 100 ms step `k`, computed as pyloudnorm computes block bounds."""
        return int(BLOCK_S * (k * STEP) * rate)

    def flush(self) -> dict[str, Any]:
        if self.current is None:
            return {}
        rate = self.layout.rate
        if self.frames < BLOCK_S * rate:
            return {"lufs": None}
        steps = np.array([*self.steps, self.current])  # (steps, channels); the last one partial
        blocks = int(np.round((self.frames / rate - BLOCK_S) / (BLOCK_S * STEP))) + 1
        per_block = round(1 / STEP)
        padded = np.vstack([steps, np.zeros((max(0, blocks + per_block - 1 - len(steps)), steps.shape[1]))])
        # Mean square per block and channel: the sum of its four steps over the block's length.
        z = np.stack([padded[j : j + per_block].sum(axis=0) for j in range(blocks)]) / (BLOCK_S * rate)
        lufs = gated_loudness(z, np.array(CHANNEL_GAINS[: z.shape[1]]))
        return {"lufs": float(lufs) if np.isfinite(lufs) else None}


def gated_loudness(z: np.ndarray, gains: np.ndarray) -> float:
    """BS.1770-4 gating over blocks' mean squares `z` (blocks, channels), as pyloudnorm's
    `Meter.integrated_loudness` does it: an absolute gate at -70 LUFS, then a relative gate
    10 LU below the loudness of the blocks that passed it. -inf when no block passes."""
    with warnings.catch_warnings(), np.errstate(divide="ignore"):
        warnings.simplefilter("ignore", category=RuntimeWarning)
        block = -0.691 + 10.0 * np.log10(z @ gains)
        above_absolute = block >= ABSOLUTE_GATE
        relative = -0.691 + 10.0 * np.log10(z[above_absolute].mean(axis=0) @ gains) - 10.0
        kept = (block > relative) & (block > ABSOLUTE_GATE)
        mean = np.nan_to_num(z[kept].mean(axis=0)) if kept.any() else np.zeros(z.shape[1])
        return float(-0.691 + 10.0 * np.log10(mean @ gains))
