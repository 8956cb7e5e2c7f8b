"""BandpassFilterNode: a Butterworth band-pass (scipy.signal), its state kept across chunks."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from scipy import signal

from remotemedia_nodes.audio import from_float
from remotemedia_nodes.builtin.basic import StreamLayout, audio_input, shaped
from remotemedia_nodes.declare import Above, Param, Port
from remotemedia_nodes.errors import UnsupportedAudio
from remotemedia_nodes.registry import Node, node

#: The highest rate an AudioResampleNode gives (its output_rate's bound).
MAX_RESAMPLE_RATE = 768_000


@node("BandpassFilterNode")
class BandpassFilter(Node):
    """Butterworth band-pass filter (scipy.signal), its state kept across chunks.

    Passes `low_hz` to `high_hz`, a Butterworth filter of `order` run as second-order sections;
    `high_hz` must lie below the input's Nyquist frequency. The output keeps the input's format
    and channel count. Python only.
    """

    inputs = (Port.audio("input", "audio in any format"),)
    outputs = (Port.audio("output", "the filtered audio, in the input's format"),)
    above = (Above("high_hz", "low_hz"),)
    example = {"low_hz": 300.0, "high_hz": 3400.0}

    def __init__(
        self,
        low_hz: Annotated[float, Param(0.001, 384_000, unit="Hz", doc="lower edge of the pass band")],
        high_hz: Annotated[float, Param(0.001, 384_000, unit="Hz", doc="upper edge of the pass band, above `low_hz`")],
        order: Annotated[int, Param(1, 12, doc="filter order")] = 4,
    ) -> None:
        self.low, self.high, self.order = float(low_hz), float(high_hz), order
        self.sos: np.ndarray | None = None
        self.state: np.ndarray | None = None
        self.layout = StreamLayout()

    def _check_nyquist(self, rate: int) -> None:
        """Refuses audio whose Nyquist frequency is at or below the pass band's upper edge (and
        so, `low_hz` being below it, at or below either edge): audio the node cannot take."""
        nyquist = rate / 2
        if self.high < nyquist:
            return
        fix = f"give a high_hz below {nyquist} Hz"
        needed = int(2 * self.high) + 1
        if needed <= MAX_RESAMPLE_RATE:
            fix += f" or put an AudioResampleNode with output_rate {needed} or more before it"
        raise UnsupportedAudio(
            f"high_hz {self.high} Hz is at or above the Nyquist frequency of {rate} Hz audio ({nyquist} Hz); {fix}",
            field="input.sample_rate",
        )

    def process(self, inputs: dict[str, Any]) -> dict[str, Any]:
        a = audio_input(inputs)
        self._check_nyquist(a.sample_rate)
        if self.layout.check(a):
            self.sos = signal.butter(self.order, [self.low, self.high], btype="bandpass", fs=a.sample_rate, output="sos")
            self.state = np.zeros((self.sos.shape[0], 2, a.channels))
        assert self.sos is not None
        if a.frames == 0:
            return {"output": a}
        x = a.as_float().astype(np.float64)
        y, self.state = signal.sosfilt(self.sos, x, axis=0, zi=self.state)
        return {"output": from_float(shaped(y.astype(np.float32), a.channels), a.sample_rate, a.samples.dtype.type)}
