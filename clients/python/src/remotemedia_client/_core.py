"""Everything the sync and async clients share that is not I/O: settings and metadata, request
building, response and error mapping, retry bookkeeping, and the stream protocol's state."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import grpc
import numpy.typing as npt

from remotemedia_client import pb
from remotemedia_client._log import log
from remotemedia_client.audio import AudioBuffer
from remotemedia_client.catalogue import BUILTIN_CATALOGUE, Catalogue
from remotemedia_client.errors import (
    DeadlineExceededError,
    PipelineCancelledError,
    RemoteMediaError,
    ResourceLimitError,
    ValidationError,
    VersionMismatchError,
    Violation,
    from_error_response,
    from_rpc_error,
    merge,
)
from remotemedia_client.pipeline import Node, Pipeline, input_port_violations, plain
from remotemedia_client.results import Result, StreamStats
from remotemedia_client.retry import RetryPolicy

#: Protocol version this client speaks, sent in the ``remotemedia-protocol-version`` header.
PROTOCOL_VERSION = "v1"
VERSION_HEADER = "remotemedia-protocol-version"
DEFAULT_ADDRESS = "127.0.0.1:50051"
#: Environment variables read when the constructor is not given an address or a token.
ADDRESS_ENV, TOKEN_ENV = "REMOTEMEDIA_ADDRESS", "REMOTEMEDIA_TOKEN"
DEFAULT_TIMEOUT = 60.0
# How early, at most, a server may see a deadline pass: the grpc-timeout header it gets is rounded.
DEADLINE_SLACK = 0.01
_UINT64_MAX = 2**64 - 1

#: Audio for one node: an AudioBuffer, or samples (a numpy array or a list of floats) with a sample rate.
AudioInput = AudioBuffer | npt.NDArray[Any] | Sequence[float] | Sequence[Sequence[float]]
Compression = Literal["gzip", "deflate"]


@dataclass(frozen=True)
class TLS:
    """TLS settings: ``root_certificates`` to trust (PEM; the system's when ``None``), and a
    client certificate chain and private key for servers that require mutual TLS.
    ``server_name`` overrides the name checked against the server's certificate."""

    root_certificates: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.certificate_chain is None) != (self.private_key is None):
            raise ValueError("a client certificate needs its private key, and a key its certificate")

    @classmethod
    def from_files(
        cls,
        ca: str | os.PathLike[str] | None = None,
        cert: str | os.PathLike[str] | None = None,
        key: str | os.PathLike[str] | None = None,
        *,
        server_name: str | None = None,
    ) -> TLS:
        """Reads PEM files: the CA bundle to trust, the client certificate and its key."""

        def read(p: str | os.PathLike[str] | None) -> bytes | None:
            return Path(p).read_bytes() if p is not None else None

        return cls(read(ca), read(cert), read(key), server_name)

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(self.root_certificates, self.private_key, self.certificate_chain)


@dataclass(frozen=True)
class Settings:
    """A client's connection and call settings."""

    address: str
    token: str | None = None
    tls: TLS | None = None
    timeout: float | None = DEFAULT_TIMEOUT
    compression: Compression | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    protocol_version: str = PROTOCOL_VERSION
    channel_options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def build(
        cls,
        *,
        address: str | None,
        token: str | None,
        tls: TLS | bool | None,
        timeout: float | None,
        compression: Compression | None,
        retry: RetryPolicy | None,
        protocol_version: str,
        channel_options: Sequence[tuple[str, Any]] | None,
    ) -> Settings:
        if compression not in (None, "gzip", "deflate"):
            raise ValueError(f"compression must be 'gzip', 'deflate' or None, got {compression!r}")
        check_timeout(timeout, "timeout")
        if address is not None and not isinstance(address, str):
            raise TypeError(f"address must be a 'host:port' string or None, got {type(address).__name__}")
        if address is not None:
            check_port(address)
        if tls is not None and not isinstance(tls, (bool, TLS)):
            raise TypeError(f"tls must be a TLS, True, False or None, got {type(tls).__name__}")
        check_header_text(protocol_version, "protocol_version")
        if channel_options is not None and not (
            isinstance(channel_options, Sequence)
            and not isinstance(channel_options, str)
            and all(isinstance(o, tuple) and len(o) == 2 and isinstance(o[0], str) for o in channel_options)
        ):
            raise TypeError("channel_options must be a sequence of (name, value) pairs, as grpc.insecure_channel takes")
        if retry is not None:
            check_retry(retry)
        return cls(
            address=address or os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS,
            token=bearer_token(token if token is not None else (os.environ.get(TOKEN_ENV) or None)),
            tls=TLS() if tls is True else (tls or None),
            timeout=timeout,
            compression=compression,
            retry=retry or RetryPolicy(),
            protocol_version=protocol_version,
            channel_options=tuple(channel_options or ()),
        )

    def metadata(self) -> tuple[tuple[str, str], ...]:
        md = [(VERSION_HEADER, self.protocol_version)]
        if self.token:
            md.append(("authorization", f"Bearer {self.token}"))
        return tuple(md)

    def options(self) -> list[tuple[str, Any]]:
        # The server enforces its own message cap (64 MiB by default); gRPC's 4 MiB receive
        # default would refuse a few seconds of multichannel output.
        opts: dict[str, Any] = {
            "grpc.max_receive_message_length": -1,
            "grpc.max_send_message_length": -1,
            # After a failed connect, gRPC waits 1 s (growing to 2 min) before it dials again,
            # and fails calls at once meanwhile: the retries of the default policy (100, 200,
            # 400 ms apart) would all fail without a new dial, even against a server up again
            # after 300 ms. Dialling on the policy's own scale lets a retry reach it.
            "grpc.initial_reconnect_backoff_ms": 100,
            "grpc.max_reconnect_backoff_ms": 5_000,
        }
        if self.tls is not None and self.tls.server_name:
            opts["grpc.ssl_target_name_override"] = self.tls.server_name
        opts.update(self.channel_options)
        return list(opts.items())

    def grpc_compression(self) -> grpc.Compression | None:
        return {None: None, "gzip": grpc.Compression.Gzip, "deflate": grpc.Compression.Deflate}[self.compression]

    def __repr__(self) -> str:
        token = ", token=<set>" if self.token else ""
        return f"Settings(address={self.address!r}{token}, tls={self.tls is not None}, timeout={self.timeout})"


@dataclass(frozen=True)
class ResourceLimits:
    """Per-request limits; ``None`` takes the server's default, and a value above the server's
    cap is refused with :class:`~remotemedia_client.errors.ResourceLimitError`."""

    max_memory_bytes: int | None = None
    max_timeout_ms: int | None = None
    max_audio_samples: int | None = None

    def __post_init__(self) -> None:
        """Raises :class:`~remotemedia_client.errors.ValidationError` naming each field that is
        not ``None`` or a whole number from 0 (the server's default) to 2**64 - 1."""
        violations = [
            Violation(
                f"resource_limits.{f.name}",
                f"{f.name} must be None or a whole number from 0 (the server's default) to 2**64 - 1, got {value!r}",
            )
            for f in fields(self)
            if (value := getattr(self, f.name)) is not None
            and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _UINT64_MAX)
        ]
        if violations:
            raise ValidationError.of(violations)

    def to_pb(self) -> pb.ResourceLimits:
        return pb.ResourceLimits(
            max_memory_bytes=self.max_memory_bytes or 0,
            max_timeout_ms=self.max_timeout_ms or 0,
            max_audio_samples=self.max_audio_samples or 0,
        )


# --- requests -------------------------------------------------------------------------------


def as_pipeline(pipeline: Pipeline | pb.PipelineManifest) -> Pipeline:
    """The :class:`Pipeline` of ``pipeline``; anything else raises TypeError naming the argument."""
    if isinstance(pipeline, pb.PipelineManifest):
        return Pipeline.from_manifest(pipeline)
    if not isinstance(pipeline, Pipeline):
        raise TypeError(f"pipeline must be a remotemedia_client.Pipeline or a PipelineManifest, got {type(pipeline).__name__}")
    return pipeline


def to_audio(value: AudioInput, sample_rate: int | None, what: str) -> AudioBuffer:
    if isinstance(value, AudioBuffer):
        if sample_rate is not None and sample_rate != value.sample_rate:
            raise ValidationError.of(
                [
                    Violation(
                        what,
                        f"sample_rate={sample_rate} contradicts the AudioBuffer's {value.sample_rate} Hz; "
                        "leave sample_rate out or resample the audio",
                    )
                ]
            )
        return value
    if sample_rate is None:
        raise ValidationError.of([Violation(what, "samples given as an array or a list need sample_rate= (or pass an AudioBuffer)")])
    return AudioBuffer.from_numpy(value, sample_rate)


def default_source(pipeline: Pipeline, what: str) -> str:
    sources = [n.id for n in pipeline.sources]
    if len(sources) != 1:
        raise ValidationError.of(
            [Violation(what, f"the pipeline has {len(sources)} source nodes ({', '.join(sources) or 'none'}); name the node to feed")]
        )
    return sources[0]


def has_unknown_types(pipeline: Pipeline, catalogue: Catalogue) -> bool:
    """Whether a node type is unknown even to ``catalogue``: then only the service can list
    every violation at once, the unknown type among them, and a call leaves the checking to it."""
    return any(n.type and not catalogue.knows(n.type) for n in pipeline.nodes)


def call_violations(pipeline: Pipeline, catalogue: Catalogue) -> list[Violation]:
    """What a call checks before sending: every violation ``Pipeline.violations`` finds, or none
    when :func:`has_unknown_types`."""
    return [] if has_unknown_types(pipeline, catalogue) else pipeline.violations(catalogue)


def unknown_node_types(pipeline: Pipeline | pb.PipelineManifest) -> bool:
    """Whether ``pipeline`` uses node types the client's built-in catalogue does not know
    (plug-ins), so the server's catalogue is needed to check it."""
    return has_unknown_types(as_pipeline(pipeline), BUILTIN_CATALOGUE)


def execute_request(
    settings: Settings,
    pipeline: Pipeline | pb.PipelineManifest,
    inputs: AudioInput | Mapping[str, AudioInput] | None,
    *,
    sample_rate: int | None,
    data: Mapping[str, Any] | None,
    output_nodes: Sequence[Node | str],
    limits: ResourceLimits | None,
    catalogue: Catalogue = BUILTIN_CATALOGUE,
) -> pb.ExecuteRequest:
    """Builds an ``ExecuteRequest`` after checking what can be checked here (node parameters
    against ``catalogue``); a problem raises :class:`ValidationError` listing every one."""
    p = as_pipeline(pipeline)
    if data is not None and not isinstance(data, Mapping):
        raise TypeError(f"data must be a mapping of node id to a JSON-serialisable value, got {type(data).__name__}")
    if isinstance(output_nodes, (str, bytes, Node)):
        raise TypeError(f"output_nodes must be a sequence of nodes or node ids, got one {type(output_nodes).__name__}: wrap it in a list")
    # With a node type only the service can judge, it reports every problem, those found here too.
    service_judges = has_unknown_types(p, catalogue)
    problems = [] if service_judges else p.violations(catalogue)
    audio: dict[str, AudioBuffer] = {}
    if inputs is not None and not isinstance(inputs, Mapping):
        # One input (an AudioBuffer, an array, a list of samples) for the only source node.
        try:
            audio[default_source(p, "inputs")] = to_audio(inputs, sample_rate, "inputs")
        except ValidationError as e:
            problems += [Violation("inputs", v.description, v.node_id) for v in e.violations]
    else:
        for node_id, value in (inputs or {}).items():
            try:
                audio[node_id] = to_audio(value, sample_rate, f"audio_inputs[{node_id}]")
            except ValidationError as e:
                problems += [Violation(f"audio_inputs[{node_id}]", v.description, node_id) for v in e.violations]
    data_text: dict[str, str] = {}
    for node_id, value in (data or {}).items():
        try:
            # numpy numbers and arrays are the values they hold; NaN and infinity have no JSON.
            data_text[node_id] = json.dumps(plain(value), allow_nan=False)
        except ValueError as e:
            # json.dumps says "Out of range float values are not JSON compliant" for NaN and
            # infinity, "Circular reference detected" for a value that contains itself.
            why = "contains itself, which JSON cannot write" if "ircular" in str(e) else "holds NaN or infinity, which JSON cannot carry"
            problems.append(Violation(f"data_inputs[{node_id}]", why, node_id))
        except TypeError as e:
            problems.append(Violation(f"data_inputs[{node_id}]", f"is not JSON-serialisable: {e}", node_id))
    by_id = {n.id: n for n in p.nodes}
    ids = set(by_id)
    for what, names, port, kind in (("audio_inputs", audio, "input", "audio"), ("data_inputs", data_text, "data", "data")):
        for n in names:
            if n not in by_id:
                problems.append(Violation(f"{what}[{n}]", f"no node {n!r} in this pipeline", n))
            else:
                problems += input_port_violations(what, by_id[n], port, kind, catalogue)
    outputs = [n.id if isinstance(n, Node) else n for n in output_nodes]
    problems += [Violation("output_nodes", f"no node {n!r} in this pipeline", n) for n in outputs if n not in ids]
    if not any(v.field == "inputs" for v in problems):
        problems += [
            Violation(f"nodes[{p.nodes.index(n)}]", f"source node {n.id!r} has no input (give it audio or data)", n.id)
            for n in p.sources
            if n.id not in audio and n.id not in (data or {})
        ]
    if problems and not service_judges:
        raise ValidationError.of(problems)
    request = pb.ExecuteRequest(
        manifest=p.to_manifest(),
        audio_inputs={k: v.to_pb() for k, v in audio.items()},
        data_inputs=data_text,
        client_version=settings.protocol_version,
        output_nodes=outputs,
    )
    if limits is not None:
        request.resource_limits.CopyFrom(limits_pb(limits))
    return request


def limits_pb(limits: ResourceLimits) -> pb.ResourceLimits:
    if not isinstance(limits, ResourceLimits):
        raise TypeError(f"limits must be a remotemedia_client.ResourceLimits, got {type(limits).__name__}")
    return limits.to_pb()


# Limits a long input runs into, and the ResourceLimits field that raises each (None: only the
# server's operator can).
#: Inputs shorter than this (seconds of audio) did not run out of time for their length.
SHORT_INPUT_S = 1.0

_LENGTH_LIMITS: dict[str, str | None] = {
    "max_message_bytes": None,
    "max_audio_samples": "max_audio_samples",
    "max_memory_bytes": "max_memory_bytes",
    "max_timeout_ms": "max_timeout_ms",
}


def explain_length_limit(err: RemoteMediaError, request: pb.ExecuteRequest) -> RemoteMediaError:
    """Sets the ``hint`` of a :class:`ResourceLimitError` that a long input ran into (message
    size, samples, memory, time) to the ways past it: streaming, and
    ``limits=ResourceLimits(...)`` where a request may raise that limit itself. A limit the
    request set itself gets no hint: its value, or the server's cap on it, is the problem.
    Returns ``err``."""
    if not isinstance(err, ResourceLimitError) or err.limit not in _LENGTH_LIMITS:
        return err
    field = _LENGTH_LIMITS[err.limit or ""]
    if field is not None and request.HasField("resource_limits") and getattr(request.resource_limits, field):
        return err
    buffers = [b for b in request.audio_inputs.values() if b.sample_rate > 0]
    longest_s = max((b.num_samples / max(b.channels, 1) / b.sample_rate for b in buffers), default=0.0)
    if err.limit == "max_timeout_ms" and longest_s < SHORT_INPUT_S:
        # The time went to the nodes' work, not to the audio's length: chunks would not help.
        return err
    samples = sum(b.num_samples for b in request.audio_inputs.values())
    size = sum(len(b.samples) for b in request.audio_inputs.values())
    stream = "send long audio in chunks instead: client.stream_file(path, pipeline) for a file, client.stream(pipeline) for arrays"
    if field is None:
        raise_it = (
            "limits=ResourceLimits(max_audio_samples=..., max_memory_bytes=..., max_timeout_ms=...) raises the other "
            "per-request limits up to the server's caps, but not the message size, which is the server's --max-message-bytes"
        )
    else:
        raise_it = f"or raise the limit for this request with limits=ResourceLimits({field}=...), up to the server's cap"
    err.hint = f"The request carries {samples:,} samples ({size / 2**20:.1f} MiB): {stream}; {raise_it}."
    return err


# --- responses ------------------------------------------------------------------------------


def execute_result(response: pb.ExecuteResponse) -> Result:
    """The result, or the in-band error raised."""
    if response.WhichOneof("outcome") == "error":
        raise from_error_response(response.error)
    return Result.from_pb(response.result)


def check_version(response: pb.VersionResponse, asked: str) -> pb.VersionResponse:
    if not response.compatible:
        supported = list(response.version_info.supported_protocols)
        message = response.compatibility_message or (
            f"protocol version {asked!r} is not supported; supported versions: {', '.join(supported)}"
        )
        raise VersionMismatchError(message, supported_versions=supported, context={"requested": asked})
    return response


# --- retries --------------------------------------------------------------------------------


class Attempts:
    """Retry bookkeeping for one logical call: the overall deadline shared by all attempts and
    the policy's decision after each failure."""

    def __init__(self, rpc: str, policy: RetryPolicy, timeout: float | None) -> None:
        check_timeout(timeout, "timeout")
        check_retry(policy)
        self.rpc = rpc
        self.policy = policy
        self.deadline = time.monotonic() + timeout if timeout is not None else None
        self.number = 0

    def start(self) -> float | None:
        """Begins an attempt; returns the time it may take."""
        self.number += 1
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceededError(f"{self.rpc}: the deadline passed", code=grpc.StatusCode.DEADLINE_EXCEEDED)
        return left

    def retry_after(self, error: grpc.RpcError | RemoteMediaError) -> tuple[RemoteMediaError, float | None]:
        """The mapped error, and how long to wait before the next attempt (``None``: raise it)."""
        err = from_rpc_error(error) if isinstance(error, grpc.RpcError) else error
        if isinstance(err, PipelineCancelledError) and self.deadline is not None and time.monotonic() >= self.deadline - DEADLINE_SLACK:
            # A server that enforces the call's deadline itself (tonic does) may end it with
            # CANCELLED ("Timeout expired") a moment before this client's own DEADLINE_EXCEEDED.
            err = DeadlineExceededError(f"{self.rpc}: the deadline passed ({err.message})", code=grpc.StatusCode.DEADLINE_EXCEEDED)
        delay = self.policy.delay(self.number, err)
        if delay is not None and self.deadline is not None and time.monotonic() + delay >= self.deadline:
            delay = None
        if delay is None:
            log.debug("call failed", rpc=self.rpc, attempt=self.number, code=err.code.name if err.code else None)
        else:
            log.info("retrying", rpc=self.rpc, attempt=self.number, delay_s=round(delay, 3), code=err.code.name if err.code else None)
        return err, delay


# --- streams --------------------------------------------------------------------------------

Item = Result | RemoteMediaError

#: What a stream used before it is opened raises (as ``RuntimeError``, like one used after ``close``).
NOT_OPEN = "the stream is not open: use it as `with client.stream(...) as s:` (`async with` for AsyncClient), or call `s.open()` first"


@dataclass(frozen=True)
class Ended:
    """The last item a stream delivers: how it ended (``error`` is ``None`` for OK)."""

    error: RemoteMediaError | None


class StreamCore:
    """The stream protocol without the I/O: the messages to send, and what the responses mean.

    The first message is the manifest; the server answers ``ready`` once the pipeline is built.
    Each chunk gets a sequence number and exactly one answer, a result or an error carrying
    that sequence; closing flushes the nodes, whose output comes back as one more result
    numbered after the last chunk. Answers are handed out in sequence order.
    """

    def __init__(self, pipeline: Pipeline | pb.PipelineManifest, *, source: str | None, sample_rate: int | None) -> None:
        p = as_pipeline(pipeline)
        if problems := call_violations(p, BUILTIN_CATALOGUE):
            raise ValidationError.of(problems)
        self.pipeline = p
        self.manifest = p.to_manifest()
        self.node_ids = {n.id for n in p.nodes}
        if source is not None and source not in self.node_ids:
            raise ValidationError.of([Violation("source", f"no node {source!r} in this pipeline", source)])
        if sample_rate is not None and (
            isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or not 0 < sample_rate <= 0xFFFF_FFFF
        ):
            raise ValidationError.of(
                [Violation("sample_rate", f"sample_rate must be None or a positive integer (Hz, at most 4294967295), got {sample_rate!r}")]
            )
        self.source = source
        self.sample_rate = sample_rate
        self.session_id: str | None = None
        self.stats = StreamStats()
        self.sent = 0
        self._next = 0  # the sequence to hand out next
        self._held: dict[int, Item] = {}
        self._fatal: RemoteMediaError | None = None

    def check(self, catalogue: Catalogue) -> None:
        """Checks the pipeline again, against a catalogue that knows its plug-ins."""
        if problems := call_violations(self.pipeline, catalogue):
            raise ValidationError.of(problems)

    def manifest_request(self) -> pb.StreamRequest:
        return pb.StreamRequest(manifest=self.manifest)

    def chunk_request(self, chunk: AudioInput, node_id: str | None, sample_rate: int | None) -> pb.StreamRequest:
        target = node_id or self.source or default_source(self.pipeline, "node_id")
        if target not in self.node_ids:
            raise ValidationError.of([Violation("node_id", f"no node {target!r} in this pipeline", target)])
        audio = to_audio(chunk, self.sample_rate if sample_rate is None else sample_rate, "chunk")
        request = pb.StreamRequest(audio_chunk=pb.AudioChunk(node_id=target, buffer=audio.to_pb(), sequence=self.sent))
        self.sent += 1
        return request

    @staticmethod
    def control_request(command: int) -> pb.StreamRequest:
        return pb.StreamRequest(control=pb.StreamControl(command=command))  # type: ignore[arg-type]

    def on_first(self, response: pb.StreamResponse) -> None:
        """Checks the answer to the manifest: ``ready``, or the error that refused it."""
        kind = response.WhichOneof("response")
        if kind == "ready":
            self.session_id = response.ready.session_id
            log.debug("stream ready", session_id=self.session_id, pipeline=self.pipeline.name)
            return
        if kind == "error":
            self._fatal = from_error_response(response.error)
            raise self._fatal
        raise RemoteMediaError(f"the server answered the manifest with {kind!r} instead of ready")

    def on_response(self, response: pb.StreamResponse) -> list[Item]:
        """What ``response`` makes deliverable, in sequence order."""
        kind = response.WhichOneof("response")
        if kind == "metrics":
            self.stats = StreamStats.from_pb(response.metrics)
            return []
        if kind == "result":
            seq = response.result.sequence
            self._held[seq] = Result.from_pb(response.result, sequence=seq)
        elif kind == "error":
            err = from_error_response(response.error)
            if err.sequence is None:
                # No sequence: the error ends the stream; its status follows.
                self._fatal = err
                return []
            self._held[err.sequence] = err
        return self._release()

    def _release(self) -> list[Item]:
        out = []
        while self._next in self._held:
            out.append(self._held.pop(self._next))
            self._next += 1
        return out

    def on_end(self, status_error: grpc.RpcError | RemoteMediaError | None, *, cancelled: bool) -> list[Item | Ended]:
        """The items still held, in order, then how the stream ended. ``cancelled``: this client
        cancelled it, so a failure it caused reads as the cancellation."""
        rest: list[Item | Ended] = [self._held[k] for k in sorted(self._held)]
        self._held.clear()
        err = self._fatal
        if status_error is not None:
            status = from_rpc_error(status_error) if isinstance(status_error, grpc.RpcError) else status_error
            err = merge(err, status) if err is not None else status
        if cancelled and err is not None:
            # In one wording for both clients (grpcio's own is "Locally cancelled by application!").
            err = PipelineCancelledError("the stream was cancelled", code=grpc.StatusCode.CANCELLED)
        log.debug("stream ended", session_id=self.session_id, code=err.code.name if err is not None and err.code else "OK")
        rest.append(Ended(err))
        return rest


def bearer_token(token: str | None) -> str | None:
    """``token`` without surrounding whitespace (a token read from a file keeps its newline);
    ``ValueError`` if a header cannot carry it. The message never shows the token."""
    if token is None:
        return None
    if not isinstance(token, str):
        raise TypeError(f"token must be a string, got {type(token).__name__}")
    token = token.strip()
    if not token:
        return None
    if not all("!" <= c <= "~" for c in token):
        raise ValueError("token holds a character an HTTP header cannot carry (only visible ASCII); its value is not shown")
    return token


def check_port(address: str) -> None:
    """``ValueError`` for a ``host:port`` (or ``[ipv6]:port``) address whose port is not 1 to
    65535; grpc would dial it modulo 65536. Other target forms (``unix:``, ``dns:///``) pass."""
    if not address.strip():
        raise ValueError("address must not be empty: give host:port, or leave it out for $REMOTEMEDIA_ADDRESS or 127.0.0.1:50051")
    match = re.fullmatch(r"(?:\[[^\]]*\]|[^:/\[\]]*):([^:/]*)", address)
    if match is not None and not (match.group(1).isdigit() and 1 <= int(match.group(1)) <= 65535):
        raise ValueError(f"address {address[:80]!r} must end in a port from 1 to 65535")


def check_header_text(value: object, name: str) -> None:
    """``value`` is a non-empty string an HTTP header can carry, else ``TypeError`` or
    ``ValueError`` naming ``name``."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__}")
    if not value or not all("!" <= c <= "~" for c in value):
        raise ValueError(f"{name} must be visible ASCII with no spaces (it travels in a header), got {value[:40]!r}")


def check_retry(retry: object) -> None:
    """``TypeError`` naming ``retry`` unless it is a :class:`RetryPolicy` (``RetryPolicy.none()``
    turns retries off; ``False`` does not)."""
    if not isinstance(retry, RetryPolicy):
        raise TypeError(f"retry must be a RetryPolicy or None (RetryPolicy.none() for no retries), got {retry!r}")


def check_max_pending(max_pending: object) -> None:
    """``max_pending`` is a whole number of chunks, 1 or more, else ``TypeError``/``ValueError``."""
    if isinstance(max_pending, bool) or not isinstance(max_pending, int):
        raise TypeError(f"max_pending must be a whole number of chunks, got {max_pending!r}")
    if max_pending < 1:
        raise ValueError(f"max_pending must be 1 or more, got {max_pending}")


def check_timeout(timeout: object, name: str) -> None:
    """``timeout`` is None or a number of seconds from 0 (a deadline already passed) up, else
    ``ValueError``/``TypeError`` naming ``name``."""
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, got {type(timeout).__name__}")
    if not timeout >= 0 or timeout == float("inf"):
        raise ValueError(f"{name} must be a finite number of seconds, 0 or more, got {timeout!r}")
