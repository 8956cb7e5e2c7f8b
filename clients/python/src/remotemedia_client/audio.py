"""Audio as numpy: :class:`AudioBuffer` converts between arrays, sound files and the wire.

The wire carries little-endian interleaved samples (``remotemedia.v1.AudioBuffer``); numpy
arrays are shaped frames × channels (or 1-D for mono), dtype float32, int16 or int32.
"""

from __future__ import annotations

import os
import re
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
#: A 2-D array with more columns than this, and fewer rows than columns, is taken for
#: channels × frames and refused unless ``channels_first`` says which layout it is. Up to 7.1
#: (8 channels) a short frames × channels array (the last chunk of a file) passes as it is.
LAYOUT_CHECK_CHANNELS = 8


def _format_of(dtype: np.dtype[Any]) -> SampleFormat | None:
    for name, want in _DTYPES.items():
        if dtype.kind == want.kind and dtype.itemsize == want.itemsize:
            return name  # type: ignore[return-value]
    return None


def sound_file_format(path: str | os.PathLike[str], *, subtype: str | None = None, format: str | None = None) -> str:
    """The soundfile format :meth:`AudioBuffer.to_file` writes ``path`` in: ``format``, else the
    one its extension names (``"OGG"`` for ``x.ogg``). Raises ``ValueError`` naming the choices
    when that is no format soundfile writes, or ``subtype`` is not one the format takes."""
    name = os.fspath(path)
    container = (format or os.path.splitext(name)[1].lstrip(".")).upper()
    formats = soundfile.available_formats()
    if container not in formats:
        raise ValueError(
            f"cannot tell which sound file format to write for {name!r}: "
            f"use an extension or a format soundfile writes ({', '.join(sorted(formats))})"
        )
    if subtype is not None and not soundfile.check_format(container, subtype.upper()):
        choices = ", ".join(soundfile.available_subtypes(container))
        raise ValueError(f"{container} files cannot hold subtype {subtype!r}; {container} takes: {choices}")
    return container


def _looks_channels_first(shape: tuple[int, ...]) -> bool:
    rows, cols = shape
    return cols > LAYOUT_CHECK_CHANNELS and rows < cols


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
    def from_numpy(cls, array: npt.ArrayLike, sample_rate: int, *, channels_first: bool | None = None) -> AudioBuffer:
        """Wraps samples: a 1-D array (mono) or a 2-D array shaped frames × channels.

        ``array`` may be a numpy array or a plain list of floats (a list of lists is read as
        rows of the 2-D layout). float32, int16 and int32 are kept as they are; float64 is
        converted to float32.

        ``channels_first`` states the layout of a 2-D array: ``True`` for channels × frames (what
        torchaudio and librosa return; it is transposed), ``False`` for frames × channels. Left
        ``None``, frames × channels is assumed, and an array with more than
        :data:`LAYOUT_CHECK_CHANNELS` columns and fewer rows than columns (``(2, 16000)``) is
        refused as most likely channels-first: say which layout it is.

        Raises :class:`ValidationError` for any other dtype (plain Python ints included, which
        carry no sample format), a sample rate that is not a positive integer, a channels-first
        looking array, no channels, more than 256 channels, or NaN/Inf samples.
        """
        try:
            arr = np.asarray(array)
        except ValueError as e:
            raise _bad(f"samples must be a numpy array or a list of numbers; {e}") from None
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        fmt = _format_of(arr.dtype)
        if fmt is None:
            hint = ""
            if not isinstance(array, np.ndarray) and arr.dtype.kind in "iu":
                hint = " (a list of Python ints has no sample format: pass floats in [-1, 1], or np.array(values, dtype=np.int16))"
            raise _bad(f"samples must be float32, int16 or int32 (or float64, converted to float32), got {arr.dtype}{hint}")
        # The wire's sample_rate is a uint32.
        if channels_first is not None and not isinstance(channels_first, bool):
            raise TypeError(f"channels_first must be True, False or None, got {channels_first!r}")
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or not 0 < sample_rate <= 0xFFFF_FFFF:
            raise _bad(f"sample_rate must be a positive integer (Hz, at most 4294967295), got {sample_rate!r}")
        if arr.ndim == 1:
            arr = arr.reshape(-1, 1)
        elif arr.ndim != 2:
            raise _bad(f"samples must be 1-D (mono) or frames × channels, got shape {arr.shape}")
        elif channels_first:
            arr = arr.T
        elif channels_first is None and _looks_channels_first(arr.shape):
            rows, cols = arr.shape
            raise _bad(
                f"samples of shape {arr.shape} look channels-first ({rows} channels × {cols} frames, as torchaudio and "
                f"librosa return them), but arrays are read as frames × channels: pass audio.T, or "
                f"AudioBuffer.from_numpy(audio, rate, channels_first=True); channels_first=False takes them as "
                f"{cols} channels of {rows} frames"
            )
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
        """Reads a sound file (WAV, FLAC, anything libsndfile reads) through soundfile;
        ``FileNotFoundError`` if there is none at ``path``."""

        data, rate = soundfile.read(existing(path), dtype=_soundfile_dtype(dtype), always_2d=True)
        return cls.from_numpy(data, int(rate), channels_first=False)

    @staticmethod
    def iter_file(path: str | os.PathLike[str], *, chunk_ms: float = 20, dtype: SampleFormat = "f32") -> Iterator[AudioBuffer]:
        """Reads a sound file in chunks of ``chunk_ms`` (the last one may be shorter; an empty
        file is one empty chunk).

        Raises ``ValueError`` for a ``chunk_ms`` that is not a positive, finite number or an
        unknown ``dtype``, before the file is opened."""

        if isinstance(chunk_ms, bool) or not isinstance(chunk_ms, (int, float)) or not 0 < chunk_ms < float("inf"):
            raise ValueError(f"chunk_ms must be a positive, finite number of milliseconds, got {chunk_ms!r}")
        sample_type = _soundfile_dtype(dtype)
        return _file_blocks(existing(path), chunk_ms, sample_type)

    def to_file(self, path: str | os.PathLike[str], *, subtype: str | None = None, format: str | None = None) -> None:
        """Writes a sound file in any format soundfile writes (WAV, FLAC, OGG, AIFF, MP3, ...):
        ``format`` (soundfile's name, ``"OGG"``), else the one the extension names.

        ``subtype`` is soundfile's (``"PCM_16"``, ``"FLOAT"``, ``"VORBIS"``, ...). By default the
        sample format is kept where the format can hold it (float32 → FLOAT, int16 → PCM_16,
        int32 → PCM_32; FLAC, which has no float samples, takes PCM_24 for float32 and int32),
        and otherwise the format's own default is used (VORBIS for OGG). Raises ``ValueError``
        naming the choices when the format or the subtype is not one soundfile writes.
        """

        name = os.fspath(path)
        container = sound_file_format(name, subtype=subtype, format=format)
        if subtype is None:
            flac = container == "FLAC"
            subtype = {"f32": "PCM_24" if flac else "FLOAT", "i16": "PCM_16", "i32": "PCM_24" if flac else "PCM_32"}[self.format]
            if not soundfile.check_format(container, subtype):
                subtype = soundfile.default_subtype(container)
            if subtype is None:
                choices = ", ".join(soundfile.available_subtypes(container))
                raise ValueError(f"{container} files have no default subtype; name one of: {choices}")
        soundfile.write(name, self._samples, self._sample_rate, subtype=subtype.upper(), format=container)

    @staticmethod
    def file_format(path: str | os.PathLike[str]) -> SampleFormat:
        """The sample format that holds a sound file's samples without loss or waste: ``"i16"``
        for 8- and 16-bit integer files (and μ-law, A-law, ADPCM), ``"i32"`` for 20- to 32-bit
        integer files, ``"f32"`` for float and lossy formats (FLOAT, DOUBLE, VORBIS, MP3, ...)."""

        subtype = soundfile.info(existing(path)).subtype
        bits = re.fullmatch(r"(?:PCM|ALAC|DPCM|DWVW)_(?:S|U)?(\d+)", subtype)
        if bits is not None:
            return "i16" if int(bits.group(1)) <= 16 else "i32"
        if subtype in ("ULAW", "ALAW") or subtype.endswith("ADPCM") or subtype.startswith(("G72", "GSM")):
            return "i16"
        return "f32"

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
        if not all(isinstance(b, AudioBuffer) for b in buffers):
            raise TypeError("concatenate joins AudioBuffers only")
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


def existing(path: str | os.PathLike[str]) -> str:
    """``path`` as a string; ``FileNotFoundError`` naming it if no file is there (libsndfile
    would only say "System error")."""
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise FileNotFoundError(f"no such sound file: {name!r}")
    return name


def _soundfile_dtype(dtype: object) -> str:
    """soundfile's name for sample format ``dtype``; ``ValueError`` naming the formats if unknown."""
    try:
        return _SOUNDFILE_DTYPE[dtype]  # type: ignore[index]
    except (KeyError, TypeError):
        raise ValueError(f"dtype must be one of {', '.join(map(repr, _SOUNDFILE_DTYPE))}, got {dtype!r}") from None


def _file_blocks(path: str, chunk_ms: float, dtype: str) -> Iterator[AudioBuffer]:
    with soundfile.SoundFile(path) as f:
        frames = max(1, round(f.samplerate * chunk_ms / 1000))
        rate = int(f.samplerate)
        if f.frames == 0:
            # One empty chunk, so that a stream of an empty file still answers with its
            # outputs' rates and channels (as a request of it does), rather than with nothing.
            yield AudioBuffer.from_numpy(np.zeros((0, f.channels), dtype=dtype), rate, channels_first=False)
            return
        start = 0
        # Read block by block rather than through SoundFile.blocks, which refuses a format that
        # cannot seek (GSM 6.10, G.721 and NMS ADPCM in WAV) unless told the length.
        while len(block := f.read(frames, dtype=dtype, always_2d=True)):
            try:
                yield AudioBuffer.from_numpy(block, rate, channels_first=False)
            except ValidationError as e:
                # The chunk's own sample index would point at the wrong place in the file.
                where = f"{path}, frames {start} to {start + len(block) - 1} ({start / rate:.3f} s)"
                raise ValidationError.of([Violation(v.field, f"{v.description} (in {where})", v.node_id) for v in e.violations]) from None
            start += len(block)
