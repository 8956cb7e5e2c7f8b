"""Audio as nodes see it: a numpy array of frames × channels and its sample rate."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: The sample types a buffer may hold.
DTYPES = (np.float32, np.int16, np.int32)


@dataclass(frozen=True)
class Audio:
    """Audio samples, ``samples[frame, channel]``, at ``sample_rate`` Hz.

    Input audio is a read-only view of the server's buffer (no copy). Output audio may be any
    of float32, int16 or int32, shaped ``(frames,)`` for mono or ``(frames, channels)``.
    """

    samples: np.ndarray
    sample_rate: int

    def __post_init__(self) -> None:
        if self.samples.dtype.type not in DTYPES:
            raise TypeError(f"audio samples must be float32, int16 or int32, got {self.samples.dtype}")
        if self.samples.ndim not in (1, 2):
            raise TypeError(f"audio samples must be 1-D or frames × channels, got shape {self.samples.shape}")
        if int(self.sample_rate) <= 0:
            raise ValueError(f"sample_rate must be > 0, got {self.sample_rate}")

    @property
    def frames(self) -> int:
        return int(self.samples.shape[0])

    @property
    def channels(self) -> int:
        return 1 if self.samples.ndim == 1 else int(self.samples.shape[1])

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate

    def as_float(self) -> np.ndarray:
        """The samples as float32 in [-1, 1], frames × channels (integers scaled by 2^15 or 2^31)."""
        x = self.samples if self.samples.ndim == 2 else self.samples[:, None]
        if x.dtype == np.int16:
            return x.astype(np.float32) / np.float32(32768)
        if x.dtype == np.int32:
            return (x.astype(np.float64) / 2147483648.0).astype(np.float32)
        return x


def from_float(x: np.ndarray, sample_rate: int, dtype: type = np.float32) -> Audio:
    """Audio of `dtype` from float samples, rounding to nearest and saturating for integers."""
    x = np.asarray(x, dtype=np.float32)
    if dtype is np.float32:
        return Audio(np.ascontiguousarray(x), sample_rate)
    scale = 32768.0 if dtype is np.int16 else 2147483648.0
    info = np.iinfo(dtype)
    y = np.clip(np.round(np.nan_to_num(x.astype(np.float64)) * scale), info.min, info.max).astype(dtype)
    return Audio(y, sample_rate)
