"""The Python client's numpy audio, sound files and retry decisions (no server)."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile

from remotemedia_client import (
    AudioBuffer,
    DeadlineExceededError,
    PipelineCancelledError,
    ResourceLimitError,
    RetryPolicy,
    ServiceUnavailableError,
    ValidationError,
    pb,
)
from remotemedia_client._core import Attempts


@pytest.mark.parametrize(
    ("dtype", "fmt", "wire"),
    [("<f4", "f32", pb.AUDIO_FORMAT_F32), ("<i2", "i16", pb.AUDIO_FORMAT_I16), ("<i4", "i32", pb.AUDIO_FORMAT_I32)],
)
def test_arrays_go_to_the_wire_little_endian_interleaved_and_back(dtype: str, fmt: str, wire: int) -> None:
    frames = np.arange(12).reshape(6, 2).astype(dtype)
    buf = AudioBuffer.from_numpy(frames, 44_100)
    assert (buf.format, buf.channels, buf.frames, buf.num_samples) == (fmt, 2, 6, 12)
    message = buf.to_pb()
    assert message.format == wire and message.channels == 2 and message.num_samples == 12 and message.sample_rate == 44_100
    assert message.samples == frames.astype(dtype).tobytes()  # interleaved: frame 0 left, frame 0 right, ...
    back = AudioBuffer.from_pb(message)
    assert back == buf and back.to_numpy().dtype == np.dtype(dtype)


def test_mono_is_1d_unless_asked_and_big_endian_and_float64_are_converted() -> None:
    mono = AudioBuffer.from_numpy(np.array([0.5, -0.5]), 8_000)
    assert mono.format == "f32" and mono.to_numpy().shape == (2,) and mono.to_numpy(always_2d=True).shape == (2, 1)
    swapped = AudioBuffer.from_numpy(np.array([1, 2, 3], dtype=">i2"), 8_000)
    assert swapped.to_pb().samples == np.array([1, 2, 3], dtype="<i2").tobytes()


@pytest.mark.parametrize(
    ("array", "rate", "message"),
    [
        (np.zeros(4, np.int64), 8_000, "float32, int16 or int32"),
        (np.zeros(4, np.float32), 0, "positive integer"),
        (np.zeros((2, 2, 2), np.float32), 8_000, r"1-D \(mono\) or frames × channels"),
        (np.zeros((4, 0), np.float32), 8_000, "channels must be between 1 and 256"),
        (np.array([0.0, np.nan], np.float32), 8_000, "sample 1 is nan"),
    ],
)
def test_arrays_the_service_would_refuse_raise_validation_error(array: np.ndarray, rate: int, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AudioBuffer.from_numpy(array, rate)


@pytest.mark.parametrize("frames", [160, 16_000])
def test_a_channels_first_array_is_refused_with_what_to_do(frames: int) -> None:
    left, right = np.zeros(frames, np.float32), np.full(frames, 0.5, np.float32)
    stacked = np.stack([left, right])  # (2, frames), as torchaudio and librosa return
    with pytest.raises(ValidationError) as info:
        AudioBuffer.from_numpy(stacked, 16_000)
    message = str(info.value)
    assert f"shape (2, {frames}) look channels-first" in message
    assert "audio.T" in message and "channels_first=True" in message


def test_the_layout_can_be_stated_and_short_frames_by_channels_chunks_pass() -> None:
    left, right = np.zeros(160, np.float32), np.full(160, 0.5, np.float32)
    stereo = AudioBuffer.from_numpy(np.stack([left, right]), 16_000, channels_first=True)
    assert (stereo.frames, stereo.channels) == (160, 2)
    np.testing.assert_array_equal(stereo.to_numpy()[:, 1], right)
    assert stereo.to_pb().samples[:8] == np.array([0.0, 0.5], "<f4").tobytes()  # interleaved L, R
    wide = AudioBuffer.from_numpy(np.zeros((2, 160), np.float32), 16_000, channels_first=False)
    assert (wide.frames, wide.channels) == (2, 160)
    # The last chunk of a file may have fewer frames than channels: up to 8 channels, it passes.
    assert AudioBuffer.from_numpy(np.zeros((1, 2), np.float32), 48_000).channels == 2
    assert AudioBuffer.from_numpy(np.zeros((2, 8), np.int16), 48_000).channels == 8


def test_a_file_with_more_channels_than_its_last_chunk_has_frames_reads_whole(tmp_path: Path) -> None:
    path = tmp_path / "array.wav"
    soundfile.write(path, np.zeros((321, 16), np.float32), 16_000)
    chunks = list(AudioBuffer.iter_file(path, chunk_ms=20))
    assert [(c.frames, c.channels) for c in chunks] == [(320, 16), (1, 16)]


def test_bad_chunk_sizes_and_sample_formats_of_a_file_are_refused_naming_them(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    soundfile.write(path, np.zeros(1600, np.float32), 16_000)
    for chunk_ms in (0, -5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="chunk_ms must be a positive, finite number of milliseconds"):
            AudioBuffer.iter_file(path, chunk_ms=chunk_ms)  # refused at the call, not at the first chunk
    with pytest.raises(ValueError, match=r"dtype must be one of 'f32', 'i16', 'i32', got 'f64'"):
        AudioBuffer.iter_file(path, dtype="f64")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"dtype must be one of 'f32', 'i16', 'i32', got 'f64'"):
        AudioBuffer.from_file(path, dtype="f64")  # type: ignore[arg-type]


def test_plain_lists_are_samples_and_lists_of_ints_say_what_to_pass() -> None:
    mono = AudioBuffer.from_numpy([0.5, -0.5, 0.25], 8_000)
    assert (mono.format, mono.frames, mono.channels) == ("f32", 3, 1)
    frames = AudioBuffer.from_numpy([[0.5, -0.5], [0.25, 0.0]], 8_000)
    assert (frames.frames, frames.channels) == (2, 2)
    with pytest.raises(ValidationError, match=r"a list of Python ints has no sample format.*np\.int16"):
        AudioBuffer.from_numpy([0, 1000, -1000], 8_000)
    with pytest.raises(ValidationError, match="a numpy array or a list of numbers"):
        AudioBuffer.from_numpy([[0.5, 0.5], [0.5]], 8_000)


def test_a_wire_buffer_whose_length_disagrees_is_refused() -> None:
    bad = pb.AudioBuffer(samples=b"\x00" * 6, sample_rate=8_000, channels=1, format=pb.AUDIO_FORMAT_F32, num_samples=2)
    with pytest.raises(ValidationError, match="6 bytes do not hold 2 f32 samples"):
        AudioBuffer.from_pb(bad)


@pytest.mark.parametrize(("suffix", "fmt"), [(".wav", "f32"), (".wav", "i16"), (".flac", "i16")])
def test_sound_files_round_trip(tmp_path: Path, suffix: str, fmt: str) -> None:
    rng = np.random.default_rng(7)
    samples = (rng.uniform(-0.5, 0.5, (1_000, 2)) * (32767 if fmt == "i16" else 1)).astype("<i2" if fmt == "i16" else "<f4")
    path = tmp_path / f"x{suffix}"
    AudioBuffer.from_numpy(samples, 22_050).to_file(path)
    info = soundfile.info(str(path))
    assert (info.samplerate, info.channels, info.frames) == (22_050, 2, 1_000)
    back = AudioBuffer.from_file(path, dtype=fmt)  # type: ignore[arg-type]
    assert back.sample_rate == 22_050
    np.testing.assert_array_equal(back.to_numpy(), samples)


@pytest.mark.parametrize(
    ("subtype", "fmt"),
    [("PCM_U8", "i16"), ("PCM_16", "i16"), ("PCM_24", "i32"), ("PCM_32", "i32"), ("FLOAT", "f32"), ("ULAW", "i16")],
)
def test_a_files_own_sample_format_is_the_one_that_holds_it(tmp_path: Path, subtype: str, fmt: str) -> None:
    path = tmp_path / "x.wav"
    soundfile.write(path, np.zeros(100, np.float32), 8_000, subtype=subtype)
    assert AudioBuffer.file_format(path) == fmt


def test_any_format_soundfile_writes_is_written_keeping_the_sample_format_where_it_can(tmp_path: Path) -> None:
    buf = AudioBuffer.from_numpy((np.sin(np.arange(8_000) / 8) * 10_000).astype(np.int16), 16_000)
    for name, subtype in [("x.wav", "PCM_16"), ("x.flac", "PCM_16"), ("x.ogg", "VORBIS"), ("x.aiff", "PCM_16")]:
        buf.to_file(tmp_path / name)
        assert soundfile.info(str(tmp_path / name)).subtype == subtype, name
    buf.to_file(tmp_path / "y.wav", subtype="FLOAT")
    assert soundfile.info(str(tmp_path / "y.wav")).subtype == "FLOAT"
    with pytest.raises(ValueError, match="OGG files cannot hold subtype 'PCM_16'; OGG takes: VORBIS, OPUS"):
        buf.to_file(tmp_path / "z.ogg", subtype="PCM_16")
    with pytest.raises(ValueError, match=r"cannot tell which sound file format to write for .*z\.audio.*WAV"):
        buf.to_file(tmp_path / "z.audio")


def test_a_file_is_read_in_chunks_of_the_asked_length(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    soundfile.write(path, np.zeros(16_000 + 100, np.float32), 16_000)
    chunks = list(AudioBuffer.iter_file(path, chunk_ms=20))
    assert [c.frames for c in chunks] == [320] * 50 + [100]
    assert AudioBuffer.concatenate(chunks).frames == 16_100


@pytest.mark.parametrize("subtype", ["GSM610", "G721_32", "NMS_ADPCM_16"])
def test_a_file_in_a_format_that_cannot_seek_is_read_in_chunks_too(tmp_path: Path, subtype: str) -> None:
    path = tmp_path / "x.wav"
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(8_000) / 8_000)).astype(np.float32)
    soundfile.write(path, tone, 8_000, subtype=subtype)
    chunks = list(AudioBuffer.iter_file(path, chunk_ms=20))
    assert [c.frames for c in chunks[:-1]] == [160] * (len(chunks) - 1) and 0 < chunks[-1].frames <= 160
    whole, _ = soundfile.read(path, dtype="float32")
    np.testing.assert_array_equal(AudioBuffer.concatenate(chunks).to_numpy(), whole)


def test_retries_wait_at_least_what_the_server_asked_and_stop_at_the_attempt_limit() -> None:
    policy = RetryPolicy(max_attempts=3, initial_backoff=0.1, jitter=0.0)
    busy = ResourceLimitError("busy", code=grpc.StatusCode.RESOURCE_EXHAUSTED, retry_delay=0.25)
    too_big = ResourceLimitError("too big", code=grpc.StatusCode.RESOURCE_EXHAUSTED)
    down = ServiceUnavailableError("down")
    assert policy.delay(1, busy) == 0.25
    assert policy.delay(2, down) == pytest.approx(0.2)
    assert policy.delay(3, down) is None
    assert policy.delay(1, too_big) is None  # the same request would fail the same way
    assert RetryPolicy.none().delay(1, down) is None


def test_a_cancellation_at_the_deadline_reads_as_the_deadline_passing() -> None:
    timeout_expired = PipelineCancelledError("Timeout expired", code=grpc.StatusCode.CANCELLED)
    err, delay = Attempts("ExecutePipeline", RetryPolicy(), 0.0).retry_after(timeout_expired)
    assert isinstance(err, DeadlineExceededError) and err.code == grpc.StatusCode.DEADLINE_EXCEEDED and delay is None
    err, _ = Attempts("ExecutePipeline", RetryPolicy(), 60.0).retry_after(timeout_expired)
    assert err is timeout_expired


def test_a_bad_sample_in_a_streamed_file_is_placed_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nan.wav"
    x = np.zeros(16_000, np.float32)
    x[8_000] = np.nan
    soundfile.write(path, x, 16_000, subtype="FLOAT")
    with pytest.raises(ValidationError, match=r"frames 8000 to 8319 \(0\.500 s\)"):
        list(AudioBuffer.iter_file(path, chunk_ms=20))
