"""What a pipeline run returns, as Python objects: audio as :class:`AudioBuffer`, data outputs
parsed from JSON (VAD segments as :class:`Segment`), metrics and per-node results."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from remotemedia_client import pb
from remotemedia_client.audio import AudioBuffer
from remotemedia_client.errors import RemoteMediaError, from_error_response

NodeStatus = Literal["success", "skipped", "failed", "unspecified"]
RunStatus = Literal["success", "partial_success", "failed", "unspecified"]


def _json(text: str) -> Any:
    if not text:
        return {}
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {"raw": text}


@dataclass(frozen=True)
class Segment:
    """A stretch of speech found by a VADNode, in seconds from the start of the input."""

    start_s: float
    end_s: float
    energy_db: float

    @property
    def duration(self) -> float:
        return self.end_s - self.start_s

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Segment:
        return cls(float(d["start_s"]), float(d["end_s"]), float(d.get("energy_db", float("nan"))))


@dataclass(frozen=True)
class Utterance:
    """One utterance a SpeechRecognitionNode recognised, in seconds from the start of the input;
    ``confidence`` is the mean posterior probability of its words (0 to 1)."""

    start_s: float
    end_s: float
    text: str
    confidence: float

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Utterance:
        return cls(float(d["start_s"]), float(d["end_s"]), str(d.get("text", "")), float(d.get("confidence", float("nan"))))


@dataclass(frozen=True)
class Transcript:
    """What a speech recognition node reported in one result: the ``text`` of the utterances
    that ended (at the end of a run, the whole transcript), those ``utterances``, and while
    streaming the ``partial`` hypothesis of the utterance still open (``None`` when none is)."""

    text: str
    utterances: list[Utterance]
    partial: str | None = None

    @classmethod
    def from_ports(cls, ports: Mapping[str, Any]) -> Transcript:
        """From a node's data outputs. ``text`` falls back to the utterances' texts when the
        node's ``text`` port feeds another node (a connected port's data is not returned)."""
        raw = ports.get("segments")
        utterances = [Utterance.from_dict(s) for s in raw] if isinstance(raw, list) else []
        partial = ports.get("partial")
        text = ports.get("text")
        return cls(
            str(text) if isinstance(text, str) else " ".join(u.text for u in utterances if u.text),
            utterances,
            str(partial["text"]) if isinstance(partial, dict) and "text" in partial else None,
        )


@dataclass(frozen=True)
class NodeMetrics:
    """One node's figures, named as the wire's ``NodeMetrics`` names them: time in the node
    (ms), bytes of its outputs, input samples processed (all channels), and the node-specific
    ``custom_metrics`` (``custom_metrics["runtime"]`` is ``"rust"`` or ``"python"``; ``custom``
    is the same dict)."""

    execution_time_ms: float
    memory_bytes: int
    samples_processed: int
    custom_metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def custom(self) -> dict[str, Any]:
        """``custom_metrics``, by its shorter name."""
        return self.custom_metrics

    @property
    def runtime(self) -> str | None:
        """Where the node ran: ``"rust"`` or ``"python"``."""
        value = self.custom_metrics.get("runtime")
        return str(value) if value is not None else None

    @classmethod
    def from_pb(cls, m: pb.NodeMetrics) -> NodeMetrics:
        custom = _json(m.custom_metrics)
        return cls(m.execution_time_ms, m.memory_bytes, m.samples_processed, custom if isinstance(custom, dict) else {})


@dataclass(frozen=True)
class Metrics:
    """A run's figures: wall and CPU time, peak memory, serialisation time, and per node."""

    wall_time_ms: float = 0.0
    cpu_time_ms: float = 0.0
    memory_used_bytes: int = 0
    serialization_time_ms: float = 0.0
    nodes: dict[str, NodeMetrics] = field(default_factory=dict)

    @classmethod
    def from_pb(cls, m: pb.ExecutionMetrics) -> Metrics:
        return cls(
            m.wall_time_ms,
            m.cpu_time_ms,
            m.memory_used_bytes,
            m.serialization_time_ms,
            {k: NodeMetrics.from_pb(v) for k, v in sorted(m.node_metrics.items())},
        )


@dataclass(frozen=True)
class NodeResult:
    """How one node fared: ``status``, the ``error`` when it failed, and output metadata."""

    node_id: str
    status: NodeStatus
    error: RemoteMediaError | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_pb(cls, r: pb.NodeResult) -> NodeResult:
        status = pb.NodeStatus.Name(r.status).removeprefix("NODE_STATUS_").lower() if r.status in pb.NodeStatus.values() else "unspecified"
        meta = _json(r.output_metadata)
        return cls(
            r.node_id,
            status,  # type: ignore[arg-type]
            from_error_response(r.error) if r.HasField("error") and r.error.message else None,
            meta if isinstance(meta, dict) else {},
        )


@dataclass(frozen=True)
class Result:
    """The outputs of one run, or of one stream chunk (``sequence`` set).

    ``audio[node_id]`` is the ``output`` audio of each sink (and requested output node);
    ``data[node_id]`` the node's other outputs keyed by port (``{"segments": [...]}``);
    ``segments[node_id]`` the VAD segments of nodes that reported any, as :class:`Segment`;
    ``transcripts[node_id]`` what speech recognition nodes heard, as :class:`Transcript`.
    """

    audio: dict[str, AudioBuffer]
    data: dict[str, dict[str, Any]]
    metrics: Metrics
    nodes: dict[str, NodeResult]
    status: RunStatus = "success"
    sequence: int | None = None

    @property
    def segments(self) -> dict[str, list[Segment]]:
        out = {}
        for node_id, ports in self.data.items():
            raw = ports.get("segments")
            # A speech recognition node's utterances are its transcript, even when none ended.
            transcript = "text" in ports or "partial" in ports
            if (
                isinstance(raw, list)
                and not transcript
                and all(isinstance(s, dict) and "start_s" in s and "end_s" in s and "text" not in s for s in raw)
            ):
                out[node_id] = [Segment.from_dict(s) for s in raw]
        return out

    @property
    def transcripts(self) -> dict[str, Transcript]:
        """The transcript data of each speech recognition node in this result (nodes whose data
        has ``text``, ``partial`` or utterance ``segments``), as :class:`Transcript`. A stream's
        whole transcript is the ``text`` of its results joined (or the last result's, after
        close)."""
        out = {}
        for node_id, ports in self.data.items():
            raw = ports.get("segments")
            utterances = isinstance(raw, list) and any(isinstance(s, dict) and "text" in s for s in raw)
            if "text" in ports or "partial" in ports or utterances:
                out[node_id] = Transcript.from_ports(ports)
        return out

    def output(self, node_id: str | None = None) -> AudioBuffer:
        """The audio output of ``node_id``, or the only audio output when there is one."""
        if node_id is not None:
            try:
                return self.audio[node_id]
            except KeyError:
                raise KeyError(f"no audio output from {node_id!r} (outputs: {', '.join(self.audio) or 'none'})") from None
        if len(self.audio) != 1:
            raise KeyError(f"name the node: this result has {len(self.audio)} audio outputs ({', '.join(self.audio) or 'none'})")
        return next(iter(self.audio.values()))

    @classmethod
    def from_pb(cls, r: pb.ExecutionResult, *, sequence: int | None = None) -> Result:
        data = {}
        for node_id, text in sorted(r.data_outputs.items()):
            value = _json(text)
            data[node_id] = value if isinstance(value, dict) else {"value": value}
        status = (
            pb.ExecutionStatus.Name(r.status).removeprefix("EXECUTION_STATUS_").lower()
            if r.status in pb.ExecutionStatus.values()
            else "unspecified"
        )
        return cls(
            audio={k: AudioBuffer.from_pb(v) for k, v in sorted(r.audio_outputs.items())},
            data=data,
            metrics=Metrics.from_pb(r.metrics),
            nodes={n.node_id: NodeResult.from_pb(n) for n in r.node_results},
            status=status,  # type: ignore[arg-type]
            sequence=sequence,
        )


@dataclass(frozen=True)
class StreamStats:
    """A stream's running totals, from the server's periodic and final ``metrics`` messages."""

    chunks_processed: int = 0
    average_latency_ms: float = 0.0
    total_samples: int = 0

    @classmethod
    def from_pb(cls, m: pb.StreamMetrics) -> StreamStats:
        return cls(m.chunks_processed, m.average_latency_ms, m.total_samples)
