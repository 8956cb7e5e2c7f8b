"""A test-only plug-in node declared the way a user would declare one: the catalogue tests
expect the server to serve this declaration and both clients to check it with no change."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np

from remotemedia_nodes import Audio, InvalidInput, Node, Param, Port, from_float, node


@node("EchoNode")
class Echo(Node):
    """Repeats the audio after a delay, mixed in at a gain.

    `mono` mixes the echo into the input's channel; `stereo` returns two channels, the dry input
    on the left and the input with its echo on the right. The delay line carries across chunks.
    """

    inputs = (Port.audio("input", "mono audio"),)
    outputs = (Port.audio("output", "the audio with its echo"), Port.data("echoes", "frames echoed so far"))

    def __init__(
        self,
        gain: Annotated[float, Param(0.0, 1.0, doc="level of the echo")],
        delay_ms: Annotated[int, Param(1, 2000, unit="ms", doc="echo delay")] = 250,
        mode: Annotated[Literal["mono", "stereo"], Param(doc="where the echo goes")] = "mono",
    ) -> None:
        self.gain, self.delay_ms, self.mode = float(gain), delay_ms, mode
        self.line: np.ndarray | None = None
        self.echoed = 0

    def process(self, inputs: dict[str, Any]) -> dict[str, Any]:
        a = inputs.get("input")
        if not isinstance(a, Audio) or a.channels != 1:
            raise InvalidInput("EchoNode: input `input` must be mono audio")
        x = a.as_float().reshape(-1).astype(np.float32)
        if self.line is None:
            self.line = np.zeros(max(1, a.sample_rate * self.delay_ms // 1000), dtype=np.float32)
        joined = np.concatenate([self.line, x])
        delayed = joined[: len(x)]
        self.line = joined[len(x) :]
        wet = x + self.gain * delayed
        self.echoed += len(x)
        out = wet if self.mode == "mono" else np.stack([x, wet], axis=1)
        return {"output": from_float(out, a.sample_rate), "echoes": {"frames": self.echoed}}
