"""Python twin of AudioChunkerNode."""

from __future__ import annotations

from typing import Any

import numpy as np

from remotemedia_nodes.audio import Audio
from remotemedia_nodes.builtin.basic import StreamLayout, audio_input
from remotemedia_nodes.declare import Exclusive
from remotemedia_nodes.registry import Node, node, reserve_output


@node("AudioChunkerNode")
class AudioChunker(Node):
    """Emits whole chunks of `chunk_samples` frames (or `chunk_ms`); the remainder on flush."""

    exclusive = (Exclusive.one_of("chunk_samples", "chunk_ms"),)

    def __init__(self, chunk_samples: int | None = None, chunk_ms: int | None = None) -> None:
        self.frames = chunk_samples
        self.ms = chunk_ms
        self.pending: np.ndarray | None = None
        self.rate = 0
        self.layout = StreamLayout()

    def process(self, inputs: dict[str, Any]) -> dict[str, Any]:
        a = audio_input(inputs)
        if self.layout.check(a):
            self.rate = a.sample_rate
            if self.frames is None:
                self.frames = max(1, -(-a.sample_rate * int(self.ms) // 1000))
            self.pending = a.samples[:0].copy()
        assert self.pending is not None
        # What the node holds between calls counts against the run's memory limit with this
        # call's output, as the native node counts it.
        reserve_output(self.pending.nbytes + a.samples.nbytes)
        self.pending = np.concatenate([self.pending, a.samples])
        whole = len(self.pending) // self.frames * self.frames
        out, self.pending = self.pending[:whole], self.pending[whole:]
        return {"output": Audio(out, self.rate)}

    def flush(self) -> dict[str, Any]:
        if self.pending is None:
            return {}
        out, self.pending = self.pending, self.pending[:0]
        return {"output": Audio(out, self.rate)}
