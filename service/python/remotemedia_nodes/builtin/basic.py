"""Python twins of PassThroughNode, GainNode, FormatConverterNode and ChannelMixerNode.

A twin takes the parameters of its native node (names, required ones and defaults; the server
checks this at start-up), and the server validates every request against the native
declaration, whichever runtime runs it, so a twin's ``__init__`` receives checked values.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from remotemedia_nodes.audio import Audio, from_float
from remotemedia_nodes.declare import Exclusive, Port
from remotemedia_nodes.errors import InvalidInput, UnsupportedAudio
from remotemedia_nodes.registry import Node, node, reserve_output

_FORMATS = {"f32": np.float32, "i16": np.int16, "i32": np.int32}
#: The sample formats' names, as the native nodes spell them in messages.
FORMAT_NAMES = {dtype: name for name, dtype in _FORMATS.items()}


def audio_input(inputs: dict[str, Any]) -> Audio:
    """The `input` audio, refused when missing or not finite (as the native nodes do). Empty
    audio is valid: a node given none returns an empty `output` in its output layout."""
    audio = inputs.get("input")
    if not isinstance(audio, Audio):
        raise InvalidInput("missing input port `input`", field="input")
    if audio.samples.dtype == np.float32 and not np.all(np.isfinite(audio.samples)):
        index = int(np.flatnonzero(~np.isfinite(audio.samples.reshape(-1)))[0])
        raise InvalidInput(f"input sample {index} is {_shown(float(audio.samples.reshape(-1)[index]))}; audio must be finite", field="input")
    return audio


def _shown(sample: float) -> str:
    """A non-finite sample as the native nodes write it: `NaN`, `inf`, `-inf`."""
    return "NaN" if np.isnan(sample) else f"{sample}"


class StreamLayout:
    """The sample rate, channel count and sample format a stream's first chunk fixed, as the
    native nodes' ``check::StreamLayout``: a later chunk with another one
    is refused with ``UnsupportedAudio`` (VALIDATION), in the native nodes' words. One per node
    instance, so a unary call gets a fresh one. Empty chunks fix the layout too: they carry a
    rate and channels. Check what a node refuses whatever the layout (a rate it cannot take)
    first, so that a refused first chunk fixes nothing."""

    def __init__(self) -> None:
        self.first: tuple[int, int, type] | None = None

    @property
    def rate(self) -> int:
        assert self.first is not None, "no chunk yet"
        return self.first[0]

    @property
    def channels(self) -> int:
        assert self.first is not None, "no chunk yet"
        return self.first[1]

    def check(self, audio: Audio) -> bool:
        """Records the first chunk's layout and returns True; returns False for a later chunk
        of the same layout and refuses one of another."""
        dtype = audio.samples.dtype.type
        if self.first is None:
            self.first = (int(audio.sample_rate), audio.channels, dtype)
            return True
        rate, channels, first_dtype = self.first
        if audio.sample_rate != rate:
            raise UnsupportedAudio(
                f"input sample_rate changed from {rate} Hz to {audio.sample_rate} Hz within the stream",
                field="input.sample_rate",
            )
        if audio.channels != channels:
            raise UnsupportedAudio(
                f"input channels changed from {channels} to {audio.channels} within the stream", field="input.channels"
            )
        if dtype is not first_dtype:
            raise UnsupportedAudio(
                f"input format changed from {FORMAT_NAMES[first_dtype]} to {FORMAT_NAMES[dtype]} within the stream",
                field="input.format",
            )
        return False


def shaped(x: np.ndarray, channels: int) -> np.ndarray:
    """Frames × channels as mono 1-D when there is one channel (how outputs are returned)."""
    return x[:, 0] if channels == 1 and x.ndim == 2 else x


@node("PassThroughNode")
class PassThrough(Node):
    """Forwards `input` to `output` and `data` to `data`."""

    inputs = (Port.audio("input"), Port.data("data"))
    outputs = (Port.audio("output"), Port.data("data"))

    def __init__(self) -> None:
        # A stream's layout is fixed by its first chunk, here as at the nodes that read samples.
        self.layout = StreamLayout()

    def process(self, inputs: dict[str, Any]) -> dict[str, Any]:
        if isinstance(inputs.get("input"), Audio):
            self.layout.check(inputs["input"])
        return {("output" if k == "input" else k): v for k, v in inputs.items()}


@node("GainNode")
class Gain(Node):
    """Scales audio by `gain_db` decibels or a linear `gain`, keeping its format."""

    exclusive = (Exclusive.at_most_one_of("gain_db", "gain"),)

    def __init__(self, gain_db: float | None = None, gain: float | None = None) -> None:
        self.factor = float(gain) if gain is not None else 10 ** (float(gain_db or 0.0) / 20)
        self.layout = StreamLayout()

    def process(self, inputs: dict[str, Any]) -> dict[str, Any]:
        a = audio_input(inputs)
        self.layout.check(a)
        if a.samples.dtype == np.int32:
            # In float64, which holds 32-bit integers exactly (float32 would move most of them).
            scaled = np.round(a.samples.astype(np.float64) * self.factor)
            return {"output": Audio(np.clip(scaled, -(2**31), 2**31 - 1).astype(np.int32), a.sample_rate)}
        y = a.as_float() * np.float32(self.factor)
        return {"output": from_float(shaped(y, a.channels), a.sample_rate, a.samples.dtype.type)}


@node("FormatConverterNode")
class FormatConverter(Node):
    """Converts between f32, i16 and i32 (round to nearest, saturate; integers scale by 2^15 / 2^31)."""

    def __init__(self, target_format: Literal["f32", "i16", "i32"]) -> None:
        self.target = _FORMATS[target_format]
        self.layout = StreamLayout()

    def process(self, inputs: dict[str, Any]) -> dict[str, Any]:
        a = audio_input(inputs)
        self.layout.check(a)
        src, dst = a.samples.dtype.type, self.target
        if src is dst:
            return {"output": a}
        if np.dtype(dst).itemsize > a.samples.dtype.itemsize:
            # Widening doubles the audio: the memory limit is checked before the copy is made.
            reserve_output(a.samples.size * np.dtype(dst).itemsize)
        if src is np.int16 and dst is np.int32:
            return {"output": Audio(a.samples.astype(np.int32) << 16, a.sample_rate)}
        if src is np.int32 and dst is np.int16:
            rounded = np.round(a.samples.astype(np.float64) / 65536.0)
            return {"output": Audio(np.clip(rounded, -32768, 32767).astype(np.int16), a.sample_rate)}
        if dst is np.float32:
            return {"output": Audio(shaped(a.as_float(), a.channels), a.sample_rate)}
        return {"output": from_float(a.samples, a.sample_rate, dst)}


@node("ChannelMixerNode")
class ChannelMixer(Node):
    """Downmixes by averaging channels `i % M == j`, upmixes by duplicating channel `j % N`."""

    def __init__(self, output_channels: int) -> None:
        self.m = output_channels
        self.layout = StreamLayout()

    def process(self, inputs: dict[str, Any]) -> dict[str, Any]:
        a = audio_input(inputs)
        self.layout.check(a)
        n, m = a.channels, self.m
        if n == m:
            return {"output": a}
        x = a.samples if a.samples.ndim == 2 else a.samples[:, None]
        if m > n:
            # Up to 256 channels from one: the memory limit is checked before the copy is made.
            reserve_output(x.shape[0] * m * x.dtype.itemsize)
            return {"output": Audio(np.ascontiguousarray(x[:, [j % n for j in range(m)]]), a.sample_rate)}
        if x.dtype == np.int32:
            # The exact average of 32-bit integers, rounded half to even, as the native node does.
            wide = x.astype(np.float64)
            mixed = np.stack([wide[:, j::m].sum(axis=1) / wide[:, j::m].shape[1] for j in range(m)], axis=1)
            return {"output": Audio(shaped(np.round(mixed).astype(np.int32), m), a.sample_rate)}
        f = a.as_float()
        y = np.stack([f[:, j::m].mean(axis=1) for j in range(m)], axis=1)
        return {"output": from_float(shaped(y, m), a.sample_rate, a.samples.dtype.type)}


def require_audio(audio: Audio, node_name: str, sample_rate: int, channels: int = 1) -> None:
    """Refuses audio at another rate or channel count with ``UnsupportedAudio``, naming what the
    node needs and the node that converts to it."""
    if audio.sample_rate != sample_rate:
        raise UnsupportedAudio(
            f"{node_name} needs {sample_rate} Hz audio, got {audio.sample_rate} Hz; "
            f"put an AudioResampleNode with output_rate {sample_rate} before it",
            field="input.sample_rate",
        )
    if audio.channels != channels:
        raise UnsupportedAudio(
            f"{node_name} needs {'mono' if channels == 1 else f'{channels}-channel'} audio, got {audio.channels} channels; "
            f"put a ChannelMixerNode with output_channels {channels} before it",
            field="input.channels",
        )
