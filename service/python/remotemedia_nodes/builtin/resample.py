"""Python twin of AudioResampleNode, built on soxr's streaming resampler."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import soxr

from remotemedia_nodes.audio import from_float
from remotemedia_nodes.builtin.basic import StreamLayout, audio_input, shaped
from remotemedia_nodes.errors import UnsupportedAudio
from remotemedia_nodes.registry import Node, node, reserve_output

# soxr's levels that keep the flat passband docs/nodes.md gives each quality (within 0.1 dB up
# to 0.75, 0.85 and 0.92 of the lower Nyquist frequency); soxr's own "LQ" loses 0.2 to 0.3 dB
# at 0.75 (tests/test_audio_quality.py measures both runtimes).
_QUALITY = {"low": "MQ", "medium": "HQ", "high": "VHQ"}
#: The input rates taken, in Hz, as the native node's (its `output_rate` and `input_rate`
#: parameters are declared with the same bounds, which the server checks).
MIN_RATE, MAX_RATE = 1_000, 768_000


def output_frames(frames: int, input_rate: int, output_rate: int) -> int:
    """round(frames × output_rate / input_rate) with halves rounded up, as the native node
    rounds; in integers, so it is exact at any length."""
    return (2 * frames * output_rate + input_rate) // (2 * input_rate)


@node("AudioResampleNode")
class AudioResample(Node):
    """Resamples to `output_rate` (soxr; delay-free, exactly round(n × out / in) frames)."""

    def __init__(self, output_rate: int, input_rate: int | None = None, quality: Literal["low", "medium", "high"] = "high") -> None:
        self.output_rate = output_rate
        self.input_rate = input_rate
        self.quality = _QUALITY[str(quality).lower()]
        self.stream: soxr.ResampleStream | None = None
        self.layout = StreamLayout()
        #: The first chunk's sample type, which the output keeps.
        self.dtype: type = np.float32
        self.frames_in = 0
        self.frames_out = 0

    def _emit(self, y: np.ndarray) -> dict[str, Any]:
        self.frames_out += len(y)
        return {"output": from_float(shaped(y, self.layout.channels), self.output_rate, self.dtype)}

    def process(self, inputs: dict[str, Any]) -> dict[str, Any]:
        a = audio_input(inputs)
        if self.input_rate is not None and a.sample_rate != self.input_rate:
            raise UnsupportedAudio(f"input audio is {a.sample_rate} Hz but parameter input_rate is {self.input_rate} Hz", field="input.sample_rate")
        if not MIN_RATE <= a.sample_rate <= MAX_RATE:
            raise UnsupportedAudio(f"input sample_rate {a.sample_rate} Hz is outside {MIN_RATE}..={MAX_RATE} Hz", field="input.sample_rate")
        if self.output_rate > a.sample_rate:
            # Upsampling multiplies the audio (768x from 1 kHz), resampled as f32 and then written
            # in the input's format: the memory limit is checked before either is made.
            frames = -(-a.frames * self.output_rate // a.sample_rate)
            reserve_output(frames * a.channels * (4 + a.samples.dtype.itemsize))
        if self.layout.check(a):
            self.dtype = a.samples.dtype.type
            self.stream = soxr.ResampleStream(a.sample_rate, self.output_rate, a.channels, dtype="float32", quality=self.quality)
        self.frames_in += a.frames
        assert self.stream is not None
        return self._emit(self.stream.resample_chunk(np.ascontiguousarray(a.as_float())))

    def flush(self) -> dict[str, Any]:
        if self.stream is None:
            return {}
        channels = self.layout.channels
        tail = self.stream.resample_chunk(np.zeros((0, channels), dtype=np.float32), last=True)
        want = output_frames(self.frames_in, self.layout.rate, self.output_rate) - self.frames_out
        if len(tail) > want:
            tail = tail[: max(want, 0)]
        elif len(tail) < want:
            tail = np.concatenate([tail, np.zeros((want - len(tail), channels), dtype=np.float32)])
        return self._emit(tail)
