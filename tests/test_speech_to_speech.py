"""The speech-to-speech example (examples/speech_to_speech) as shipped: mono, 16 kHz, Silero VAD,
pocketsphinx, the example's text step and espeak-ng, through ExecutePipeline, through
StreamPipeline chunk by chunk and through its client script; and a minute of real speech
streamed through VAD and recognition."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile
import speech_data
from conftest import REPO, RunningServer, start_server
from speech import RATE, pipeline, settles

from remotemedia_client import AudioBuffer, Client, Node, Pipeline, ResourceLimits

EXAMPLE = REPO / "examples" / "speech_to_speech"
RECORDING = "two_cities.wav"


def shared_words(transcript: str, reference: str) -> float:
    """The share of the reference's words (with repeats) that the transcript has."""
    heard, said = Counter(speech_data.words(transcript)), Counter(speech_data.words(reference))
    return sum((heard & said).values()) / sum(said.values())


@pytest.fixture(scope="module")
def srv() -> Iterator[RunningServer]:
    # Recognising 44 s of speech takes longer than the 5 s default time limit of a request.
    s = start_server("--python-nodes-path", str(EXAMPLE / "nodes"), "--default-timeout-ms", "30000")
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def client(srv: RunningServer) -> Iterator[Client]:
    with Client(srv.address, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def example() -> Pipeline:
    return Pipeline.load(EXAMPLE / "pipeline.json")


def test_the_example_answers_a_recording_in_one_request(client: Client, example: Pipeline) -> None:
    recording = AudioBuffer.from_file(speech_data.path(RECORDING))  # 48 kHz: the example resamples
    result = client.run(example, recording, output_nodes=["asr", "vad"], limits=ResourceLimits(max_timeout_ms=30_000))
    transcript = result.transcripts["asr"].text
    assert shared_words(transcript, speech_data.TWO_CITIES_TEXT) >= 0.5, transcript
    answer = result.audio["tts"]
    assert answer.sample_rate == 22050 and answer.duration > 10, "the reply speaks the whole transcript"
    assert len(result.segments["vad"]) >= 5, "the VAD's segments come back too"


def test_the_example_answers_a_stream_chunk_by_chunk(client: Client, example: Pipeline) -> None:
    heard: list[str] = []
    spoken: list[AudioBuffer] = []
    for r in client.stream_file(speech_data.path(RECORDING), example, chunk_ms=20):
        if "asr" in r.transcripts and r.transcripts["asr"].text:
            heard.append(r.transcripts["asr"].text)
        if "tts" in r.audio and r.audio["tts"].frames:
            spoken.append(r.audio["tts"])
    assert shared_words(" ".join(heard), speech_data.TWO_CITIES_TEXT) >= 0.5, heard
    assert len(spoken) == len(heard) >= 3, "each utterance is answered as it ends"
    assert AudioBuffer.concatenate(spoken).duration > 10


def test_the_example_client_script_answers_a_wav_file(srv: RunningServer, tmp_path: Path) -> None:
    answer = tmp_path / "answer.wav"
    done = subprocess.run(
        [sys.executable, str(EXAMPLE / "run.py"), str(speech_data.path(RECORDING)), str(answer), "--address", srv.address],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    heard = " ".join(line.split("]: ", 1)[1] for line in done.stdout.splitlines() if line.startswith("heard ["))
    assert shared_words(heard, speech_data.TWO_CITIES_TEXT) >= 0.5, done.stdout
    samples, rate = soundfile.read(answer)
    assert rate == 22050 and len(samples) / rate > 10


@pytest.mark.parametrize("mode", [[], ["--stream"]], ids=["one request", "stream"])
def test_the_example_client_script_says_when_it_heard_nothing(srv: RunningServer, tmp_path: Path, mode: list[str]) -> None:
    # Silence used to end the one-request mode with a KeyError: no transcript came back.
    silent = tmp_path / "silence.wav"
    soundfile.write(silent, np.zeros(32_000, np.int16), 16_000)
    done = subprocess.run(
        [sys.executable, str(EXAMPLE / "run.py"), str(silent), str(tmp_path / "answer.wav"), "--address", srv.address, *mode],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (done.returncode, done.stderr.strip()) == (1, "no speech recognised; nothing to answer"), done.stderr
    assert not (tmp_path / "answer.wav").exists()


def test_a_minute_of_speech_streams_partials_then_the_transcript_on_close(srv: RunningServer, client: Client) -> None:
    # 44.4 s of two_cities.wav, then endgame_nagg_nell.wav up to 60 s: the cut falls inside a
    # line of dialogue, so an utterance is still open when the stream closes.
    first = speech_data.load_16k(RECORDING)
    audio = np.concatenate([first, speech_data.load_16k("endgame_nagg_nell.wav")])[: 60 * RATE]
    vad_asr = pipeline(Node("SileroVADNode", id="vad"), Node("SpeechRecognitionNode", id="asr"))
    partials_before_close, finals_before_close = 0, []
    with client.stream(vad_asr, sample_rate=RATE) as s:
        for start in range(0, len(audio), 320):
            s.send(audio[start : start + 320])
            t = next(s).transcripts.get("asr")
            if t is not None:
                partials_before_close += t.partial is not None
                finals_before_close += [u.text for u in t.utterances if u.text]
        s.close()
        after_close = list(s)
    assert partials_before_close >= 10, "partial hypotheses arrive while utterances are open"
    assert len(finals_before_close) >= 5, "each utterance's result arrives when it ends, before the close"
    last = after_close[-1].transcripts["asr"]
    assert last.text and last.utterances, "the close ends the open utterance and sends its transcript"
    assert last.utterances[-1].end_s == pytest.approx(60.0, abs=0.05)
    assert last.partial is None
    two_cities_heard = " ".join(u for u in finals_before_close)
    assert shared_words(two_cities_heard, speech_data.TWO_CITIES_TEXT) >= 0.5
    settles(lambda: srv.metric("remotemedia_active_streams") == 0, "the session to be freed")
    for name in ("pocketsphinx-en-us", "silero-vad"):
        settles(lambda m=name: srv.metric("remotemedia_model_instances_in_use", model=m) == 0, f"{name} to be returned")
