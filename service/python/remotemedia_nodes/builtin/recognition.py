"""SpeechRecognitionNode: speech to text with pocketsphinx and its bundled US English model."""

from __future__ import annotations

import contextlib
import time
from collections import deque
from typing import Annotated, Any, Literal

import numpy as np
from pocketsphinx import Decoder, Endpointer

from remotemedia_nodes import models
from remotemedia_nodes.audio import from_float
from remotemedia_nodes.builtin.basic import StreamLayout, audio_input, require_audio
from remotemedia_nodes.declare import Param, Port
from remotemedia_nodes.registry import Node, node

SAMPLE_RATE = 16000
#: Longest speech held back while every recogniser is in use (bounds the node's memory).
MAX_HELD_S = 60.0
#: Words pocketsphinx emits for silence, noise and sentence boundaries.
FILLERS = frozenset({"<s>", "</s>", "<sil>", "[NOISE]", "[SPEECH]"})

#: pocketsphinx settings of each `search` choice: `fast` prunes the search harder
#: (`maxhmmpf`) and skips the second, flat-lexicon pass (`fwdflat`).
SEARCH = {"fast": {"maxhmmpf": 3000, "fwdflat": False}, "accurate": {}}


def load_decoder(search: str = "fast") -> Decoder:
    """A pocketsphinx decoder with the bundled US English acoustic model, dictionary and
    trigram language model (about 90 MB), configured for `search`."""
    return Decoder(loglevel="ERROR", **SEARCH[search])


#: A decoder holds one utterance's search and is not thread-safe: leased per utterance.
POCKETSPHINX = models.register(
    models.Model(
        name="pocketsphinx-en-us",
        load=load_decoder,
        description="pocketsphinx's bundled US English model (about 90 MB per instance), leased per utterance",
        pooled=True,
        pool_size=2,
        preload_settings={"search": "fast"},
    )
)


def confidence(decoder: Decoder) -> float:
    """The mean posterior probability of the utterance's words (0 when it has none)."""
    probs = [min(max(float(s.prob), 0.0), 1.0) for s in decoder.seg() if s.word not in FILLERS]
    return round(float(np.mean(probs)), 4) if probs else 0.0


@node("SpeechRecognitionNode")
class SpeechRecognition(Node):
    """Speech to text with pocketsphinx and its bundled US English model.

    Finds utterances with pocketsphinx's endpointer (WebRTC voice activity over a 0.3 s window)
    and decodes each with a recogniser leased from the `pocketsphinx-en-us` model pool for the
    length of that utterance only. Each utterance is decoded from the model's initial state, so
    its text is what a fresh pocketsphinx decoder gives for it. Data outputs:

    - `text`: the text of the utterances that ended with this input (words separated by
      spaces; at the end of a request, the whole transcript).
    - `segments`: those utterances, `[{"start_s", "end_s", "text", "confidence"}]`, in seconds
      from the start of the input; `confidence` is the mean posterior probability of the
      utterance's words (0 to 1). An utterance in which no word was recognised (noise the
      endpointer took for speech) is not reported.
    - `partial`: while streaming, `{"start_s", "text"}`, the hypothesis so far of the
      utterance still open after this chunk, and `null` once it ended. The hypothesis is read
      once `partial_every_ms` of audio has arrived since the last reading, and sent when it
      changed. A request's answer has none: the `null` that ends the last hypothesis
      withdraws it.

    Closing a stream (or the end of a request) ends the open utterance. When every recogniser
    is in use, speech is held back (at most 60 s of it) until one is free, for at most
    `model_wait_ms`; then the node fails with ERROR_TYPE_RESOURCE_LIMIT. Needs 16 kHz mono
    audio.
    """

    models = (POCKETSPHINX,)
    inputs = (Port.audio("input", "16 kHz mono speech"),)
    outputs = (
        Port.data("text", "text of the utterances that ended with this input"),
        Port.data("segments", 'utterances that ended with this input: [{"start_s", "end_s", "text", "confidence"}]'),
        Port.data(
            "partial",
            'while streaming, the open utterance\'s hypothesis so far, {"start_s", "text"}, or null once it ended',
        ),
    )

    def __init__(
        self,
        search: Annotated[
            Literal["fast", "accurate"],
            Param(doc="`fast`: pruned search, one pass (about 4× faster); `accurate`: pocketsphinx's defaults"),
        ] = "fast",
        partial_every_ms: Annotated[
            int, Param(0, 10000, unit="ms", doc="audio between readings of the partial hypothesis; 0 reads it after every input")
        ] = 100,
    ) -> None:
        self.settings = {"search": search}
        # Reading a hypothesis traces the search back through the whole utterance so far: after
        # every 20 ms chunk it took 2.9 % of the server's CPU on a recognition stream (perf,
        # `ps_get_hyp`), a third of what the server adds to pocketsphinx's own work; every
        # 100 ms it takes a fifth of that, still five updates a second (BENCHMARKS.md, issue 14).
        self.partial_every = SAMPLE_RATE * partial_every_ms // 1000
        #: `samples` when the partial hypothesis was last read.
        self.partial_read_at = 0
        self.endpointer = Endpointer(sample_rate=SAMPLE_RATE)
        self.layout = StreamLayout()
        self.frame_bytes: int = self.endpointer.frame_bytes
        self.buffer = b""
        #: Samples read so far.
        self.samples = 0
        #: Speech waiting for a recogniser: ("start", s), ("audio", bytes), ("end", s).
        self.queue: deque[tuple[str, Any]] = deque()
        self.held_bytes = 0
        #: Whether the endpointer's last utterance is still open (its end not yet held).
        self.speaking = False
        self.waiting_since: float | None = None
        self.lease: models.Lease[Decoder] | None = None
        self.in_utterance = False
        self.utterance_start = 0.0
        self.ready: list[dict[str, Any]] = []
        self.partial_sent = False
        self.last_partial = ""

    def process(self, inputs: dict[str, Any]) -> dict[str, Any]:
        audio = audio_input(inputs)
        require_audio(audio, "SpeechRecognitionNode", SAMPLE_RATE)
        self.layout.check(audio)
        samples = audio.samples if audio.samples.dtype == np.int16 else from_float(audio.as_float()[:, 0], SAMPLE_RATE, np.int16).samples
        self.samples += samples.size
        self.buffer += samples.reshape(-1).tobytes()
        whole = len(self.buffer) // self.frame_bytes * self.frame_bytes
        for i in range(0, whole, self.frame_bytes):
            self._endpoint(self.buffer[i : i + self.frame_bytes])
        self.buffer = self.buffer[whole:]
        self._decode(wait=False)
        return self._outputs(final=False)

    def flush(self) -> dict[str, Any]:
        if self.speaking:
            end_s = self.samples / SAMPLE_RATE
            if self.buffer:
                speech = self.endpointer.end_stream(self.buffer)
                if speech is not None:
                    self._hold(("audio", speech))
                end_s = self.endpointer.speech_end
            self._hold(("end", end_s))
        self.buffer = b""
        # A busy pool runs flush again; every step above consumed its input, so it resumes here.
        self._decode(wait=True)
        return self._outputs(final=True)

    def close(self) -> None:
        self._release()

    def _endpoint(self, frame: bytes) -> None:
        was_in_speech = self.endpointer.in_speech
        speech = self.endpointer.process(frame)
        if speech is None:
            return
        if not was_in_speech:
            self._hold(("start", self.endpointer.speech_start))
        self._hold(("audio", speech))
        if not self.endpointer.in_speech:
            self._hold(("end", self.endpointer.speech_end))

    def _hold(self, item: tuple[str, Any]) -> None:
        self.queue.append(item)
        if item[0] != "audio":
            self.speaking = item[0] == "start"
        if item[0] == "audio":
            self.held_bytes += len(item[1])

    def _decode(self, wait: bool) -> None:
        """Feeds held speech to a leased recogniser, leasing one per utterance. Without `wait`
        a busy pool leaves the speech held (for at most `model_wait_ms`); with it, the call
        is put aside until a recogniser is free."""
        while self.queue:
            if self.lease is None:
                self.lease = self._lease(wait)
                if self.lease is None:
                    return
            kind, value = self.queue.popleft()
            with self.lease.inference() as decoder:
                if kind == "start":
                    # Every utterance starts from the model's initial feature normalisation, so
                    # its text does not depend on which decoder of the pool had what before.
                    # The flag is set first: a cancel can land between any two statements, and
                    # _release() ends an utterance the flag says may be open.
                    self.in_utterance, self.utterance_start = True, float(value)
                    decoder.reinit_feat()
                    decoder.start_utt()
                elif kind == "audio":
                    self.held_bytes -= len(value)
                    decoder.process_raw(value)
                else:
                    decoder.end_utt()
                    self.in_utterance = False
                    self._final(decoder, float(value))
            if kind == "end":
                self._release()

    def _lease(self, wait: bool) -> models.Lease[Decoder] | None:
        if wait:
            return models.host.lease(POCKETSPHINX, self.settings, node_type="SpeechRecognitionNode")
        lease = models.host.try_lease(POCKETSPHINX, self.settings, node_type="SpeechRecognitionNode")
        now = time.monotonic()
        if lease is not None:
            if self.waiting_since is not None:
                models.host.hooks.record("wait", POCKETSPHINX.name, now - self.waiting_since)
                self.waiting_since = None
            return lease
        if self.waiting_since is None:
            self.waiting_since = now
        waited = now - self.waiting_since
        if waited >= models.host.wait_s or self.held_bytes > MAX_HELD_S * SAMPLE_RATE * 2:
            models.host.hooks.record("exhausted", POCKETSPHINX.name, waited)
            size = models.host.pool_size(POCKETSPHINX)
            raise models.ModelPoolExhausted(POCKETSPHINX.name, size, waited, retry_after_s=models.host.retry_after_s)
        return None

    def _final(self, decoder: Decoder, end_s: float) -> None:
        hyp = decoder.hyp()
        text = hyp.hypstr if hyp is not None else ""
        if not text:
            # Noise the endpointer took for speech: no word, so no utterance to report.
            return
        self.ready.append(
            {"start_s": round(self.utterance_start, 3), "end_s": round(end_s, 3), "text": text, "confidence": confidence(decoder)}
        )

    def _release(self) -> None:
        """Ends the utterance the flag says may be open and returns the recogniser, whatever
        happens: a cancel that landed just after end_utt() (or before start_utt()) leaves the
        flag saying open, and ending it again only raises."""
        lease, self.lease = self.lease, None
        if lease is None:
            return
        try:
            if self.in_utterance:
                self.in_utterance = False
                with contextlib.suppress(RuntimeError):
                    lease.instance.end_utt()
        finally:
            lease.release()

    def _outputs(self, final: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.ready or final:
            # The end of a request or stream always answers, with empty text and no segments
            # when no speech was heard, so a transcript is there to read whatever the audio.
            ready, self.ready = self.ready, []
            out["segments"] = ready
            out["text"] = " ".join(s["text"] for s in ready if s["text"])
        if self.in_utterance and not final:
            if self.samples - self.partial_read_at < self.partial_every:
                return out
            self.partial_read_at = self.samples
            assert self.lease is not None
            hyp = self.lease.instance.hyp()
            text = hyp.hypstr if hyp is not None else ""
            if text != self.last_partial:
                self.last_partial, self.partial_sent = text, True
                out["partial"] = {"start_s": round(self.utterance_start, 3), "text": text}
        elif self.partial_sent:
            self.last_partial, self.partial_sent = "", False
            out["partial"] = None
        return out
