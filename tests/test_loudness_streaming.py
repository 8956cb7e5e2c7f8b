"""LoudnessNode measures streams of any length in bounded memory and still gives exactly
pyloudnorm's integrated loudness of the whole audio."""

from __future__ import annotations

import numpy as np
import pyloudnorm
import pytest

from remotemedia_nodes import Audio, UnsupportedAudio
from remotemedia_nodes.builtin.loudness import Loudness

RNG = np.random.default_rng(7)


def speechlike(seconds: float, rate: int, channels: int) -> np.ndarray:
    """Noise bursts at changing levels with pauses, so both gates have blocks to drop."""
    n = int(seconds * rate)
    x = RNG.normal(0, 1, (n, channels)) * 0.1
    envelope = np.repeat(RNG.choice([0.0, 0.05, 0.3, 1.0], size=n // (rate // 4) + 1), rate // 4)[:n]
    return (x * envelope[:, None]).astype(np.float32)


@pytest.mark.parametrize(
    ("rate", "channels", "seconds", "chunk_s"),
    [(48_000, 1, 7.3, 0.02), (16_000, 2, 3.05, 0.013), (44_100, 5, 2.0, 0.5), (8_000, 1, 0.41, 0.1), (96_000, 2, 1.234, 1.234)],
)
def test_chunked_measure_equals_pyloudnorm_on_the_whole_audio(rate: int, channels: int, seconds: float, chunk_s: float) -> None:
    x = speechlike(seconds, rate, channels)
    node = Loudness()
    step = max(1, int(chunk_s * rate))
    for i in range(0, len(x), step):
        assert node.process({"input": Audio(x[i : i + step], rate)})["output"].frames == len(x[i : i + step])
    got = node.flush()["lufs"]
    whole = x.astype(np.float64)
    expected = pyloudnorm.Meter(rate).integrated_loudness(whole if channels > 1 else whole[:, 0])
    assert got == pytest.approx(expected, abs=1e-6)


def test_the_state_kept_does_not_grow_with_the_audio() -> None:
    node = Loudness()
    chunk = speechlike(1.0, 48_000, 2)
    for _ in range(60):
        node.process({"input": Audio(chunk, 48_000)})
    # One pair of sums per 100 ms step: 600 steps for a minute, not 5.76 M samples.
    assert len(node.steps) == 600 and node.steps[0].shape == (2,)
    assert node.flush()["lufs"] is not None


@pytest.mark.parametrize(("rate", "channels"), [(4_000, 1), (1_000_000, 1), (48_000, 6)])
def test_audio_the_meter_cannot_measure_is_refused(rate: int, channels: int) -> None:
    with pytest.raises(UnsupportedAudio, match="put an AudioResampleNode|put a ChannelMixerNode"):
        Loudness().process({"input": Audio(np.zeros((rate // 10, channels), np.float32), rate)})


def test_silence_and_audio_under_one_block_have_no_loudness() -> None:
    for seconds in (0.2, 2.0):
        node = Loudness()
        node.process({"input": Audio(np.zeros((int(seconds * 16_000), 1), np.float32), 16_000)})
        assert node.flush() == {"lufs": None}
