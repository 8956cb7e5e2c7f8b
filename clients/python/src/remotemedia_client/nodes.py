"""Typed helpers for the service's built-in nodes, with their parameters spelled out.

Each class is a :class:`~remotemedia_client.pipeline.Node` whose constructor names the node's
parameters (docs/nodes.md, docs/python-nodes.md); parameters left at ``None`` take the
service's default. :func:`check_params` applies the same rules the service applies (types,
ranges, required and unknown parameters) to any node of a built-in type, typed or generic, so
a pipeline is checked before it is sent.
"""

from __future__ import annotations

from typing import Any, Literal

from remotemedia_client._params import ALIASES, BUILTIN_NODE_TYPES, check_params
from remotemedia_client.pipeline import Node, Runtime

Quality = Literal["low", "medium", "high"]
TargetFormat = Literal["f32", "i16", "i32"]


def _given(**params: Any) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


class AudioResampleNode(Node):
    """Resamples to ``output_rate`` Hz (rubato; ``quality`` low/medium/high, default high).

    ``input_rate``, when given, makes the node refuse input at any other rate.
    """

    def __init__(
        self,
        id: str | None = None,
        *,
        output_rate: int,
        input_rate: int | None = None,
        quality: Quality | None = None,
        runtime: Runtime | str = Runtime.AUTO,
    ) -> None:
        super().__init__(
            "AudioResampleNode", id, runtime=runtime, params=_given(output_rate=output_rate, input_rate=input_rate, quality=quality)
        )


class VADNode(Node):
    """Voice activity detection: passes audio through on ``output`` and reports speech on
    ``segments`` (``[{"start_s", "end_s", "energy_db"}]``).

    ``threshold_db`` -100..0 (default -30), ``frame_ms`` 10/20/30 (default 30),
    ``min_speech_ms`` 0..10000 (default 90), ``min_silence_ms`` 0..10000 (default 300).
    """

    def __init__(
        self,
        id: str | None = None,
        *,
        threshold_db: float | None = None,
        frame_ms: Literal[10, 20, 30] | None = None,
        min_speech_ms: int | None = None,
        min_silence_ms: int | None = None,
        runtime: Runtime | str = Runtime.AUTO,
    ) -> None:
        super().__init__(
            "VADNode",
            id,
            runtime=runtime,
            params=_given(threshold_db=threshold_db, frame_ms=frame_ms, min_speech_ms=min_speech_ms, min_silence_ms=min_silence_ms),
        )


class FormatConverterNode(Node):
    """Converts samples to ``target_format`` (``"f32"``, ``"i16"`` or ``"i32"``)."""

    def __init__(self, id: str | None = None, *, target_format: TargetFormat, runtime: Runtime | str = Runtime.AUTO) -> None:
        super().__init__("FormatConverterNode", id, runtime=runtime, params={"target_format": target_format})


class ChannelMixerNode(Node):
    """Mixes to ``output_channels`` (1..256): downmix by averaging, upmix by duplication."""

    def __init__(self, id: str | None = None, *, output_channels: int, runtime: Runtime | str = Runtime.AUTO) -> None:
        super().__init__("ChannelMixerNode", id, runtime=runtime, params={"output_channels": output_channels})


class AudioChunkerNode(Node):
    """Re-frames a stream into chunks of ``chunk_samples`` frames or ``chunk_ms`` ms (give
    one), flushing the remainder when the stream closes."""

    def __init__(
        self,
        id: str | None = None,
        *,
        chunk_samples: int | None = None,
        chunk_ms: int | None = None,
        runtime: Runtime | str = Runtime.AUTO,
    ) -> None:
        super().__init__("AudioChunkerNode", id, runtime=runtime, params=_given(chunk_samples=chunk_samples, chunk_ms=chunk_ms))


class GainNode(Node):
    """Applies ``gain_db`` (-120..60 dB) or a linear ``gain`` (0..1000); give at most one."""

    def __init__(
        self,
        id: str | None = None,
        *,
        gain_db: float | None = None,
        gain: float | None = None,
        runtime: Runtime | str = Runtime.AUTO,
    ) -> None:
        super().__init__("GainNode", id, runtime=runtime, params=_given(gain_db=gain_db, gain=gain))


class PassThroughNode(Node):
    """Forwards ``input`` to ``output`` and ``data`` to ``data``: a join point and a tap."""

    def __init__(self, id: str | None = None, *, runtime: Runtime | str = Runtime.AUTO) -> None:
        super().__init__("PassThroughNode", id, runtime=runtime)


class BandpassFilterNode(Node):
    """Butterworth band-pass from ``low_hz`` to ``high_hz`` of ``order`` 1..12 (default 4).
    Python only (scipy), run by the server's embedded interpreter."""

    def __init__(
        self,
        id: str | None = None,
        *,
        low_hz: float,
        high_hz: float,
        order: int | None = None,
        runtime: Runtime | str = Runtime.AUTO,
    ) -> None:
        super().__init__("BandpassFilterNode", id, runtime=runtime, params=_given(low_hz=low_hz, high_hz=high_hz, order=order))


class LoudnessNode(Node):
    """Passes audio through and reports ITU-R BS.1770 integrated loudness on data port
    ``lufs`` (``None`` for silence; needs at least 0.4 s). Python only (pyloudnorm)."""

    def __init__(self, id: str | None = None, *, runtime: Runtime | str = Runtime.AUTO) -> None:
        super().__init__("LoudnessNode", id, runtime=runtime)


__all__ = [
    "ALIASES",
    "BUILTIN_NODE_TYPES",
    "AudioChunkerNode",
    "AudioResampleNode",
    "BandpassFilterNode",
    "ChannelMixerNode",
    "FormatConverterNode",
    "GainNode",
    "LoudnessNode",
    "PassThroughNode",
    "VADNode",
    "check_params",
]
