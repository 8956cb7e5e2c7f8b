"""Audio as numpy: :class:`AudioBuffer` converts between arrays, sound files and the wire.

The wire carries little-endian interleaved samples (``remotemedia.v1.AudioBuffer``); numpy
arrays are shaped frames × channels (or 1-D for mono), dtype float32, int16 or int32.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import soundfile

from remotemedia_client import pb
from remotemedia_client.errors import ValidationError, Violation

SampleFormat = Literal["f32", "i16", "i32"]

_DTYPES: dict[str, np.dtype[Any]] = {
    "f32": np.dtype("<f4"),
    "i16": np.dtype("<i2"),
    "i32": np.dtype("<i4"),
}
_TO_PB = {"f32": pb.AUDIO_FORMAT_F32, "i16": pb.AUDIO_FORMAT_I16, "i32": pb.AUDIO_FORMAT_I32}
_FROM_PB: dict[int, SampleFormat] = {pb.AUDIO_FORMAT_F32: "f32", pb.AUDIO_FORMAT_I16: "i16", pb.AUDIO_FORMAT_I32: "i32"}
# soundfile reads and writes these dtypes; the names double as its `dtype` argument.
_SOUNDFILE_DTYPE: dict[str, str] = {"f32": "float32", "i16": "int16", "i32": "int32"}
MAX_CHANNELS = 256


def _format_of(dtype: np.dtype[Any]) -> SampleFormat | None:
    for name, want in _DTYPES.items():
        if dtype.kind == want.kind and dtype.itemsize == want.itemsize:
            return name  # type: ignore[return-value]
    return None


def _bad(description: str) -> ValidationError:
    return ValidationError(description, violations=[Violation(field="audio", description=description)])


class AudioBuffer:
    """Multi-channel audio: a frames × channels numpy array and its sample rate.

    >>> buf = AudioBuffer.from_numpy(np.zeros(480, dtype=np.float32), 48_000)
    >>> buf.channels, buf.frames, buf.format, buf.duration
    (1, 480, 'f32', 0.01)
    """

    __slots__ = ("_sample_rate", "_samples")

    def __init__(self, samples: npt.NDArray[Any], sample_rate: int) -> None:
        """Prefer :meth:`from_numpy`; this takes a 2-D little-endian array as is."""
        self._samples = samples
        self._sample_rate = sample_rate

    # --- construction -----------------------------------------------------------------------

    @classmethod
    def from_numpy(cls, array: npt.ArrayLike, sample_rate: int) -> AudioBuffer:
        """Wraps an array of samples: 1-D (mono) or frames × channels.

        float32, int16 and int32 are kept as they are; float64 is converted to float32. Any other
        dtype, a sample rate that is not positive, no channels, more than 256 channels, or NaN/Inf
        samples raise :class:`ValidationError`.
        """
        arr = np.asarray(array)
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        fmt = _format_of(arr.dtype)
        if fmt is None:
            raise _bad(f"samples must be float32, int16 or int32 (or float64, converted to float32), got {arr.dtype}")
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
            raise _bad(f"sample_rate must be a positive integer, got {sample_rate!r}")
        if arr.ndim == 1:
            arr = arr.reshape(-1, 1)
        elif arr.ndim != 2:
            raise _bad(f"samples must be 1-D (mono) or frames × channels, got shape {arr.shape}")
        if not 1 <= arr.shape[1] <= MAX_CHANNELS:
            raise _bad(f"channels must be between 1 and {MAX_CHANNELS}, got {arr.shape[1]}")
        if fmt == "f32" and arr.size and not np.isfinite(arr).all():
            index = int(np.flatnonzero(~np.isfinite(arr.reshape(-1)))[0])
            raise _bad(f"samples must be finite; sample {index} is {arr.reshape(-1)[index]}")
        arr = np.ascontiguousarray(arr, dtype=_DTYPES[fmt])
        return cls(arr, int(sample_rate))

    @classmethod
    def from_pb(cls, buffer: pb.AudioBuffer) -> AudioBuffer:
        """Reads a wire buffer without copying its bytes (the array is read-only)."""
        fmt = _FROM_PB.get(buffer.format)
        if fmt is None:
            raise _bad(f"unknown audio format {buffer.format}")
        dtype = _DTYPES[fmt]
        if buffer.channels < 1 or buffer.sample_rate <= 0:
            raise _bad(f"channels ({buffer.channels}) and sample_rate ({buffer.sample_rate}) must be positive")
        if len(buffer.samples) != buffer.num_samples * dtype.itemsize or buffer.num_samples % buffer.channels:
            raise _bad(f"{len(buffer.samples)} bytes do not hold {buffer.num_samples} {fmt} samples in {buffer.channels} channels")
        arr = np.frombuffer(buffer.samples, dtype=dtype).reshape(-1, buffer.channels)
        return cls(arr, buffer.sample_rate)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, dtype: SampleFormat = "f32") -> AudioBuffer:
        """Reads a sound file (WAV, FLAC, anything libsndfile reads) through soundfile."""

        data, rate = soundfile.read(os.fspath(path), dtype=_SOUNDFILE_DTYPE[dtype], always_2d=True)
        return cls.from_numpy(data, int(rate))

    @staticmethod
    def iter_file(path: str | os.PathLike[str], *, chunk_ms: float = 20, dtype: SampleFormat = "f32") -> Iterator[AudioBuffer]:
        """Reads a sound file in chunks of ``chunk_ms`` (the last one may be shorter)."""

        with soundfile.SoundFile(os.fspath(path)) as f:
            frames = max(1, round(f.samplerate * chunk_ms / 1000))
            rate = int(f.samplerate)
            for block in f.blocks(blocksize=frames, dtype=_SOUNDFILE_DTYPE[dtype], always_2d=True):
                if len(block):
                    yield AudioBuffer.from_numpy(block, rate)

    def to_file(self, path: str | os.PathLike[str], *, subtype: str | None = None) -> None:
        """Writes a sound file; the container follows the extension (``.wav``, ``.flac``).

        ``subtype`` is soundfile's (``"PCM_16"``, ``"FLOAT"``, ...); by default WAV keeps the
        sample format (float32 → FLOAT, int16 → PCM_16, int32 → PCM_32) and FLAC, which has no
        float samples, uses PCM_24 for float32 and int32.
        """

        name = os.fspath(path)
        if subtype is None:
            flac = name.lower().endswith(".flac")
            subtype = {"f32": "PCM_24" if flac else "FLOAT", "i16": "PCM_16", "i32": "PCM_24" if flac else "PCM_32"}[self.format]
        soundfile.write(name, self._samples, self._sample_rate, subtype=subtype)

    # --- views ------------------------------------------------------------------------------

    def to_numpy(self, *, always_2d: bool = False) -> npt.NDArray[Any]:
        """The samples: 1-D for mono (unless ``always_2d``), else frames × channels.

        Buffers received from the server are read-only views of the response; ``.copy()`` them
        to modify in place.
        """
        if self.channels == 1 and not always_2d:
            return self._samples.reshape(-1)
        return self._samples

    def to_pb(self) -> pb.AudioBuffer:
        """The wire form: little-endian interleaved bytes."""
        return pb.AudioBuffer(
            samples=self._samples.tobytes(),
            sample_rate=self._sample_rate,
            channels=self.channels,
            format=_TO_PB[self.format],
            num_samples=self._samples.size,
        )

    @staticmethod
    def concatenate(buffers: list[AudioBuffer]) -> AudioBuffer:
        """Joins buffers of one rate, channel count and format end to end."""
        if not buffers:
            raise ValueError("nothing to concatenate")
        first = buffers[0]
        for b in buffers[1:]:
            if (b.sample_rate, b.channels, b.format) != (first.sample_rate, first.channels, first.format):
                raise ValueError(
                    f"cannot join {b.format} {b.channels} ch {b.sample_rate} Hz onto "
                    f"{first.format} {first.channels} ch {first.sample_rate} Hz"
                )
        return AudioBuffer(np.concatenate([b._samples for b in buffers]), first.sample_rate)

    @property
    def samples(self) -> npt.NDArray[Any]:
        """The frames × channels array."""
        return self._samples

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def channels(self) -> int:
        return int(self._samples.shape[1])

    @property
    def frames(self) -> int:
        """Samples per channel."""
        return int(self._samples.shape[0])

    @property
    def num_samples(self) -> int:
        """Samples in all channels (what the wire's ``num_samples`` counts)."""
        return int(self._samples.size)

    @property
    def format(self) -> SampleFormat:
        fmt = _format_of(self._samples.dtype)
        assert fmt is not None, "constructors only build buffers of the three formats"
        return fmt

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self._sample_rate

    def __len__(self) -> int:
        return self.frames

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AudioBuffer):
            return NotImplemented
        return (
            self._sample_rate == other._sample_rate
            and self._samples.dtype == other._samples.dtype
            and np.array_equal(self._samples, other._samples)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"AudioBuffer({self.frames} frames × {self.channels} ch, {self.format}, {self._sample_rate} Hz)"
