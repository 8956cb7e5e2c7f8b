"""LoudnessNode: ITU-R BS.1770 integrated loudness (pyloudnorm), reported as `lufs`."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyloudnorm

from remotemedia_nodes.builtin.basic import StreamLayout, audio_input
from remotemedia_nodes.declare import Port
from remotemedia_nodes.registry import Node, node


@node("LoudnessNode")
class Loudness(Node):
    """ITU-R BS.1770 integrated loudness (pyloudnorm), reported at the end of the audio.

    Passes the audio through and, when the input ends (a request, or a stream's close), reports
    its integrated loudness on data port `lufs` (LUFS; null for silence and for audio shorter
    than one 0.4 s gating block, which has no measurable loudness). Python only.
    """

    inputs = (Port.audio("input", "audio at any rate"),)
    outputs = (
        Port.audio("output", "the input audio, unchanged"),
        Port.data("lufs", "integrated loudness in LUFS, or null for silence or under 0.4 s of audio"),
    )

    def __init__(self) -> None:
        self.parts: list[np.ndarray] = []
        self.layout = StreamLayout("LoudnessNode")

    def process(self, inputs: dict[str, Any]) -> dict[str, Any]:
        a = audio_input(inputs, "LoudnessNode")
        self.layout.check(a)
        self.parts.append(a.as_float().astype(np.float64))
        return {"output": a}

    def flush(self) -> dict[str, Any]:
        if not self.parts:
            return {}
        x = np.concatenate(self.parts)
        self.parts = []
        rate = self.layout.rate
        if len(x) < 0.4 * rate:
            return {"lufs": None}
        lufs = pyloudnorm.Meter(rate).integrated_loudness(x if x.shape[1] > 1 else x[:, 0])
        return {"lufs": float(lufs) if np.isfinite(lufs) else None}
