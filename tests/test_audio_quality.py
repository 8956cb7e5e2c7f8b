"""Audio correctness through the real server: resampling against soxr, VAD on real speech,
format conversion against numpy."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile as sf
import soxr

from conftest import RunningServer
from helpers import f32, manifest, node, samples
from remotemedia_client import AsyncClient, Client, pb

RNG = np.random.default_rng(1234)


def run(
    server: RunningServer, nodes: list[pb.NodeManifest], edges: list[tuple[str, str]], source: str, audio: pb.AudioBuffer
) -> pb.ExecutionResult:
    with Client(server.address) as client:
        resp = client.execute(pb.ExecuteRequest(manifest=manifest(nodes, edges), audio_inputs={source: audio}))
    assert resp.WhichOneof("outcome") == "result", resp.error
    return resp.result


def multitone(rate: int, seconds: float, top_hz: float) -> np.ndarray:
    """Twenty tones with random phases, all below `top_hz`."""
    t = np.arange(int(rate * seconds)) / rate
    freqs = np.linspace(50.0, top_hz, 20)
    x = sum(np.sin(2 * np.pi * f * t + RNG.uniform(0, 2 * np.pi)) for f in freqs)
    return (0.5 * x / np.max(np.abs(x))).astype(np.float32)


# soxr "VHQ" is the independent reference. Both resamplers are flat and delay-free below 0.8 of
# the lower Nyquist frequency, so on band-limited input they must agree to within their float32
# noise floors; 80 dB SNR leaves margin above that floor and fails on any misalignment by more
# than a tiny fraction of a sample or any passband error above about 0.001 dB.
SNR_FLOOR_DB = 80.0


@pytest.mark.parametrize(
    ("fin", "fout"), [(48_000, 16_000), (44_100, 16_000), (16_000, 48_000), (44_100, 48_000), (22_050, 16_000), (96_000, 44_100)]
)
def test_resampling_matches_soxr_vhq(server: RunningServer, fin: int, fout: int) -> None:
    x = multitone(fin, 2.0, 0.8 * min(fin, fout) / 2)
    out = samples(run(server, [node("rs", "AudioResampleNode", output_rate=fout)], [], "rs", f32(x, fin)).audio_outputs["rs"])
    ref = soxr.resample(x, fin, fout, quality="VHQ")
    assert len(out) == round(len(x) * fout / fin)
    n = min(len(out), len(ref))
    edge = fout // 10  # both treat the clip's edges differently; compare the steady middle
    a, b = out[edge : n - edge].astype(np.float64), ref[edge : n - edge].astype(np.float64)
    snr = 10 * np.log10(np.sum(b**2) / np.sum((a - b) ** 2))
    assert snr >= SNR_FLOOR_DB, f"{fin}->{fout}: SNR against soxr VHQ {snr:.1f} dB"


def tone_gain_db(server: RunningServer, runtime: int, quality: str, fin: int, fout: int, freq: float) -> float:
    """Level change (dB) of a 1 s tone at `freq` through AudioResampleNode, fitted on the
    output's steady middle: the passband gain below the output Nyquist frequency, what leaks
    through above it."""
    t = np.arange(fin) / fin
    fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.1)  # a hard onset would splatter into the passband
    x = (0.5 * fade * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    rs = node("rs", "AudioResampleNode", runtime=runtime, output_rate=fout, quality=quality)
    y = samples(run(server, [rs], [], "rs", f32(x, fin)).audio_outputs["rs"]).astype(np.float64)
    n = len(y)
    mid = slice(n // 4, n - n // 4)
    if freq >= fout / 2:
        return float(20 * np.log10(np.sqrt(np.mean(y[mid] ** 2)) / (0.5 / np.sqrt(2)) + 1e-30))
    ty = np.arange(n)[mid] / fout
    basis = np.stack([np.sin(2 * np.pi * freq * ty), np.cos(2 * np.pi * freq * ty)], axis=1)
    sin_cos = np.linalg.lstsq(basis, y[mid], rcond=None)[0]
    return float(20 * np.log10(np.hypot(*sin_cos) / 0.5))


RUNTIMES = [pytest.param(pb.RUNTIME_HINT_RUST, id="rust"), pytest.param(pb.RUNTIME_HINT_CPYTHON, id="python")]

# docs/nodes.md: each quality is flat within 0.1 dB up to this fraction of the lower Nyquist
# frequency, and the spec's stopband is 90 dB. Large down-sampling ratios included: there the
# output side of the filter sets its transition band.
FLAT_TO = {"high": 0.92, "medium": 0.85, "low": 0.75}


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize(("fin", "fout"), [(48_000, 16_000), (96_000, 8_000), (192_000, 16_000), (48_000, 1_000), (16_000, 48_000)])
def test_every_quality_keeps_its_documented_passband_and_stopband_at_any_ratio(
    server: RunningServer, runtime: int, fin: int, fout: int
) -> None:
    nyquist = min(fin, fout) / 2
    for quality, flat_to in FLAT_TO.items():
        gain = tone_gain_db(server, runtime, quality, fin, fout, flat_to * nyquist)
        assert abs(gain) < 0.1, f"{runtime} {quality} {fin}->{fout}: {gain:.3f} dB at {flat_to} x Nyquist"
        if fout < fin:
            leak = tone_gain_db(server, runtime, quality, fin, fout, 1.1 * fout / 2)
            assert leak <= -90, f"{runtime} {quality} {fin}->{fout}: a tone at 1.1 x the output Nyquist leaks at {leak:.1f} dB"


def test_multichannel_resampling_matches_soxr(server: RunningServer) -> None:
    x = np.stack([multitone(48_000, 1.0, 6_000), multitone(48_000, 1.0, 6_000)], axis=1)
    out = samples(
        run(server, [node("rs", "AudioResampleNode", output_rate=16_000)], [], "rs", f32(x.reshape(-1), 48_000, 2)).audio_outputs["rs"]
    )
    out = out.reshape(-1, 2)
    ref = soxr.resample(x, 48_000, 16_000, quality="VHQ")
    for ch in range(2):
        a, b = out[1_600:-1_600, ch].astype(np.float64), ref[1_600:-1_600, ch].astype(np.float64)
        assert 10 * np.log10(np.sum(b**2) / np.sum((a - b) ** 2)) >= SNR_FLOOR_DB


async def stream_outputs(
    server: RunningServer, m: pb.PipelineManifest, source: str, x: np.ndarray, rate: int, chunk: int
) -> list[pb.ExecutionResult]:
    async with AsyncClient(server.address) as client:
        call = client.stream_call()
        await call.write(pb.StreamRequest(manifest=m))
        assert (await call.read()).WhichOneof("response") == "ready"
        results = []
        for seq, start in enumerate(range(0, len(x), chunk)):
            await call.write(
                pb.StreamRequest(audio_chunk=pb.AudioChunk(node_id=source, buffer=f32(x[start : start + chunk], rate), sequence=seq))
            )
        await call.write(pb.StreamRequest(control=pb.StreamControl(command=pb.StreamControl.COMMAND_CLOSE)))
        await call.done_writing()
        while (resp := await call.read()) is not grpc.aio.EOF:
            if resp.WhichOneof("response") == "result":
                results.append(resp.result)
        assert await call.code() == grpc.StatusCode.OK
    return results


async def test_streamed_resampling_equals_the_one_shot_output(server: RunningServer) -> None:
    x = multitone(48_000, 1.5, 7_000)
    m = manifest([node("rs", "AudioResampleNode", output_rate=16_000)])
    whole = samples(run(server, list(m.nodes), [], "rs", f32(x, 48_000)).audio_outputs["rs"])
    results = await stream_outputs(server, m, "rs", x, 48_000, 960)
    streamed = np.concatenate([samples(r.audio_outputs["rs"]) for r in results if "rs" in r.audio_outputs])
    np.testing.assert_array_equal(streamed, whole)


def test_format_conversion_matches_numpy(server: RunningServer) -> None:
    x = np.concatenate([RNG.uniform(-1.2, 1.2, 10_000), [1.0, -1.0, 0.5 / 32768, 1.5 / 32768]]).astype(np.float32)
    res = run(server, [node("fc", "FormatConverterNode", target_format="i16")], [], "fc", f32(x))
    got = samples(res.audio_outputs["fc"])
    want = np.clip(np.round(x.astype(np.float64) * 32768), -32768, 32767).astype(np.int16)
    np.testing.assert_array_equal(got, want)
    ints = RNG.integers(-32768, 32768, 5_000, dtype=np.int16)
    buf = pb.AudioBuffer(samples=ints.tobytes(), sample_rate=16_000, channels=1, format=pb.AUDIO_FORMAT_I16, num_samples=ints.size)
    back = samples(run(server, [node("fc", "FormatConverterNode", target_format="f32")], [], "fc", buf).audio_outputs["fc"])
    np.testing.assert_array_equal(back, ints.astype(np.float32) / 32768)


def i32(x: np.ndarray, channels: int = 1) -> pb.AudioBuffer:
    a = np.ascontiguousarray(x, dtype="<i4")
    return pb.AudioBuffer(samples=a.tobytes(), sample_rate=16_000, channels=channels, format=pb.AUDIO_FORMAT_I32, num_samples=a.size)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_gain_and_downmix_keep_32_bit_integers_exact(server: RunningServer, runtime: int) -> None:
    # 32-bit integers carry more precision than float32's 24-bit mantissa: scaled or averaged in
    # float32, most samples would move by up to 64 steps, even at unity gain.
    x = RNG.integers(-(2**31), 2**31, 20_000, dtype=np.int64).astype(np.int32)
    x[:4] = [16_777_217, -987_654_321, 2**31 - 1, -(2**31)]

    def out(n: pb.NodeManifest, buf: pb.AudioBuffer) -> np.ndarray:
        return samples(run(server, [n], [], n.id, buf).audio_outputs[n.id])

    for params in ({}, {"gain_db": 0}, {"gain": 1.0}):
        np.testing.assert_array_equal(out(node("g", "GainNode", runtime, **params), i32(x)), x, err_msg=str(params))
    for gain in (0.5, 1.7):
        want = np.clip(np.round(x.astype(np.float64) * gain), -(2**31), 2**31 - 1).astype(np.int32)
        np.testing.assert_array_equal(out(node("g", "GainNode", runtime, gain=gain), i32(x)), want, err_msg=str(gain))

    stereo = np.stack([x, x], axis=1)
    np.testing.assert_array_equal(out(node("m", "ChannelMixerNode", runtime, output_channels=1), i32(stereo, 2)), x)
    six = RNG.integers(-(2**31), 2**31, (5_000, 6), dtype=np.int64).astype(np.int32)
    wide = six.astype(np.float64)
    want = np.stack([np.round((wide[:, j::2]).sum(axis=1) / 3) for j in range(2)], axis=1).astype(np.int32)
    got = out(node("m", "ChannelMixerNode", runtime, output_channels=2), i32(six, 6)).reshape(-1, 2)
    np.testing.assert_array_equal(got, want)


def test_integer_branches_join_in_their_own_format(server: RunningServer) -> None:
    x = np.array([20_000, -20_000, 100, 0], dtype=np.int16)
    buf = pb.AudioBuffer(samples=x.tobytes(), sample_rate=16_000, channels=1, format=pb.AUDIO_FORMAT_I16, num_samples=x.size)
    nodes = [node("src", "PassThroughNode"), node("a", "PassThroughNode"), node("b", "GainNode", gain=0.5), node("join", "PassThroughNode")]
    res = run(server, nodes, [("src", "a"), ("src", "b"), ("a", "join"), ("b", "join")], "src", buf)
    joined = res.audio_outputs["join"]
    assert joined.format == pb.AUDIO_FORMAT_I16
    np.testing.assert_array_equal(samples(joined), [30_000, -30_000, 150, 0])
    loud = run(server, nodes[:2] + [node("b", "PassThroughNode"), nodes[3]], [("src", "a"), ("src", "b"), ("a", "join"), ("b", "join")], "src", buf)
    np.testing.assert_array_equal(samples(loud.audio_outputs["join"]), [32_767, -32_768, 200, 0], "saturated, not wrapped")


# --- VAD on real speech ---------------------------------------------------------------------

RATE = 16_000
PHRASES = ["Open the window and let the light in", "Many hands make light work"]
LEAD, GAP, TAIL = 1.0, 1.2, 1.0
# Boundary tolerance: frames are 30 ms, so a boundary is quantised by up to one frame; and
# unvoiced sounds (the "th", "s", "f" at a word's edge) are noise-like, which the detector
# deliberately does not call speech, so an edge may move inward by one such sound (about
# 100 ms in espeak's voice). Hence 130 ms.
TOLERANCE_S = 0.13


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[np.ndarray, list[tuple[float, float]]]]:
    """Two spoken phrases between known silences, and where their speech really is."""
    for tool in ("espeak-ng", "sox"):
        assert shutil.which(tool), f"{tool} is missing; `make system-deps` installs it"
    d = tmp_path_factory.mktemp("speech")
    padded, truth, t = [], [], LEAD
    for i, (text, before, after) in enumerate([(PHRASES[0], LEAD, GAP), (PHRASES[1], 0.0, TAIL)]):
        raw, wav, pad = d / f"{i}.raw.wav", d / f"{i}.wav", d / f"{i}.pad.wav"
        subprocess.run(["espeak-ng", "-w", str(raw), text], check=True)
        subprocess.run(["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(wav)], check=True)
        y, sr = sf.read(wav, dtype="float32")
        assert sr == RATE
        # Ground truth: 10 ms frames within 45 dB of the phrase's loudest frame.
        frames = y[: len(y) // 160 * 160].reshape(-1, 160)
        level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
        active = np.flatnonzero(level > level.max() - 45)
        truth.append((t + active[0] * 0.01, t + (active[-1] + 1) * 0.01))
        t += len(y) / RATE + after
        # sox inserts the known silences around each phrase.
        subprocess.run(["sox", str(wav), str(pad), "pad", str(before), str(after)], check=True)
        padded.append(str(pad))
    joined = d / "speech.wav"
    subprocess.run(["sox", *padded, str(joined)], check=True)
    x, _ = sf.read(joined, dtype="float32")
    yield x, truth


def noise(kind: str, n: int, tmp: Path) -> np.ndarray:
    """sox-synthesised noise (repeatable, `-R`), normalised to unit power."""
    path = tmp / f"{kind}.wav"
    cmd = ["sox", "-R", "-n", "-r", str(RATE), "-c", "1", "-b", "32", "-e", "floating-point", str(path), "synth", f"{n / RATE + 0.1}", kind]
    subprocess.run(cmd, check=True)
    y, _ = sf.read(path, dtype="float32")
    y = y[:n]
    return (y / np.sqrt(np.mean(y**2))).astype(np.float32)


def mix_at_snr(x: np.ndarray, truth: list[tuple[float, float]], n: np.ndarray, snr_db: float) -> np.ndarray:
    active = np.concatenate([x[int(a * RATE) : int(b * RATE)] for a, b in truth])
    speech_power = np.mean(active**2)
    return (x + n * np.sqrt(speech_power / 10 ** (snr_db / 10))).astype(np.float32)


def vad_segments(server: RunningServer, x: np.ndarray) -> list[dict[str, float]]:
    res = run(server, [node("vad", "VADNode")], [], "vad", f32(x, RATE))
    np.testing.assert_array_equal(samples(res.audio_outputs["vad"]), x)
    return list(json.loads(res.data_outputs["vad"])["segments"])


def assert_matches(segments: list[dict[str, float]], truth: list[tuple[float, float]], label: str) -> None:
    assert len(segments) == len(truth), f"{label}: {segments} vs truth {truth}"
    for s, (a, b) in zip(segments, truth):
        assert abs(s["start_s"] - a) <= TOLERANCE_S, f"{label}: start {s['start_s']:.3f} vs {a:.3f}"
        assert abs(s["end_s"] - b) <= TOLERANCE_S, f"{label}: end {s['end_s']:.3f} vs {b:.3f}"


def test_vad_finds_the_phrases_in_clean_speech(server: RunningServer, speech: tuple[np.ndarray, list[tuple[float, float]]]) -> None:
    x, truth = speech
    assert_matches(vad_segments(server, x), truth, "clean")


@pytest.mark.parametrize(("kind", "snr_db"), [("whitenoise", 20), ("whitenoise", 10), ("pinknoise", 10), ("brownnoise", 10)])
def test_vad_in_noise_finds_the_phrases_and_nothing_in_the_noise(
    server: RunningServer, speech: tuple[np.ndarray, list[tuple[float, float]]], tmp_path: Path, kind: str, snr_db: float
) -> None:
    x, truth = speech
    mixed = mix_at_snr(x, truth, noise(kind, len(x), tmp_path), snr_db)
    segments = vad_segments(server, mixed)
    for s in segments:
        overlaps = any(s["start_s"] < b and s["end_s"] > a for a, b in truth)
        assert overlaps, f"{kind} at {snr_db} dB: segment {s} lies in a noise-only stretch"
    assert_matches(segments, truth, f"{kind} at {snr_db} dB")


async def test_vad_gives_the_same_segments_streamed_in_20_ms_chunks(
    server: RunningServer, speech: tuple[np.ndarray, list[tuple[float, float]]], tmp_path: Path
) -> None:
    x, truth = speech
    mixed = mix_at_snr(x, truth, noise("whitenoise", len(x), tmp_path), 15)
    whole = vad_segments(server, mixed)
    results = await stream_outputs(server, manifest([node("vad", "VADNode")]), "vad", mixed, RATE, RATE // 50)
    streamed = [s for r in results if "vad" in r.data_outputs for s in json.loads(r.data_outputs["vad"]).get("segments", [])]
    assert streamed == whole


# --- VAD under the conditions recorded audio really has ------------------------------------


def vad_segments_on(server: RunningServer, x: np.ndarray, runtime: int, **params: object) -> list[dict[str, float]]:
    res = run(server, [node("vad", "VADNode", runtime=runtime, **params)], [], "vad", f32(x, RATE))
    return list(json.loads(res.data_outputs["vad"])["segments"])


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("offset", [0.1, 0.2, 0.3, -0.2])
def test_a_dc_offset_changes_no_segment(
    server: RunningServer, speech: tuple[np.ndarray, list[tuple[float, float]]], runtime: int, offset: float
) -> None:
    x, truth = speech
    assert_matches(vad_segments_on(server, (x + offset).astype(np.float32), runtime), truth, f"DC {offset:+}")


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_speech_from_the_first_sample_is_found(
    server: RunningServer, speech: tuple[np.ndarray, list[tuple[float, float]]], runtime: int
) -> None:
    x, truth = speech
    cut = int(truth[0][0] * RATE)
    shifted = [(a - cut / RATE, b - cut / RATE) for a, b in truth]
    assert_matches(vad_segments_on(server, x[cut:], runtime), shifted, "speech at sample 0")


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_sudden_rise_of_the_background_is_not_speech(
    server: RunningServer, speech: tuple[np.ndarray, list[tuple[float, float]]], tmp_path: Path, runtime: int
) -> None:
    x, truth = speech
    # Pink noise 20 dB louder from the middle of the gap between the phrases on (10 dB SNR after
    # the step, 30 dB before it): a door opened, a fan started.
    step = int((truth[0][1] + truth[1][0]) / 2 * RATE)
    n = noise("pinknoise", len(x), tmp_path)
    n[:step] *= 0.1
    mixed = mix_at_snr(x, truth, n, 10)
    assert_matches(vad_segments_on(server, mixed, runtime), truth, "background step")


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("gain_db", [12, -12])
def test_a_sudden_change_of_level_keeps_both_phrases(
    server: RunningServer, speech: tuple[np.ndarray, list[tuple[float, float]]], tmp_path: Path, runtime: int, gain_db: int
) -> None:
    x, truth = speech
    # Speech in white noise at 20 dB SNR; between the phrases the whole recording changes level
    # at once (a gain knob turned, an automatic gain control reacting).
    y = mix_at_snr(x, truth, noise("whitenoise", len(x), tmp_path), 20)
    step = int((truth[0][1] + truth[1][0]) / 2 * RATE)
    y[step:] *= 10 ** (gain_db / 20)
    # The threshold is an absolute level: set it for the quietest part, as a user would.
    found = vad_segments_on(server, y.astype(np.float32), runtime, threshold_db=-45)
    assert_matches(found, truth, f"level step {gain_db:+} dB")


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_padding_widens_segments_within_the_audio(
    server: RunningServer, speech: tuple[np.ndarray, list[tuple[float, float]]], runtime: int
) -> None:
    x, truth = speech
    plain = vad_segments_on(server, x, runtime)
    padded = vad_segments_on(server, x, runtime, speech_pad_ms=200)
    assert len(plain) == len(padded) == 2
    for p, q in zip(plain, padded):
        assert q["start_s"] == pytest.approx(max(p["start_s"] - 0.2, 0), abs=1e-6)
        assert q["end_s"] == pytest.approx(min(p["end_s"] + 0.2, len(x) / RATE), abs=1e-6)
    # Padding never makes segments overlap or leave the audio.
    wide = vad_segments_on(server, x, runtime, speech_pad_ms=2000)
    assert wide[0]["start_s"] == 0 and wide[-1]["end_s"] == pytest.approx(len(x) / RATE)
    assert all(a["end_s"] <= b["start_s"] for a, b in zip(wide, wide[1:]))


@pytest.mark.parametrize("runtime", RUNTIMES)
async def test_tone_bursts_from_the_first_sample_each_give_a_segment_in_a_stream(server: RunningServer, runtime: int) -> None:
    rate = 48_000
    t = np.arange(10 * rate) / rate
    bursts = (0.4 * np.sin(2 * np.pi * 300 * t) * (t % 1 < 0.5)).astype(np.float32)
    m = manifest(
        [node("down", "AudioResampleNode", runtime=runtime, output_rate=16_000), node("vad", "VADNode", runtime=runtime)], [("down", "vad")]
    )
    results = await stream_outputs(server, m, "down", bursts, rate, rate // 50)
    found = [s for r in results if "vad" in r.data_outputs for s in json.loads(r.data_outputs["vad"]).get("segments", [])]
    assert len(found) == 10, found
    for i, s in enumerate(found):
        assert abs(s["start_s"] - i) <= 0.04 and abs(s["end_s"] - (i + 0.5)) <= 0.04, s
    # Every chunk's result carries the VAD's output, empty while the resampler fills its delay.
    assert all("vad" in r.audio_outputs for r in results)
    assert sum(len(samples(r.audio_outputs["vad"])) for r in results) == 10 * 16_000
