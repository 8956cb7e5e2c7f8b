"""One exception hierarchy for everything the service can answer with.

Pipeline errors arrive in-band (``ExecuteResponse.error``, ``StreamResponse.error``); rejections
arrive as gRPC statuses carrying ``google.rpc`` details (``ErrorInfo``, ``RetryInfo``,
``BadRequest``). Both map to the same classes here, chosen by the service's error type (the
``ErrorInfo.reason`` of a status) and, for statuses without one, by the status code:

=========================  =========================================================================
class                      raised for
=========================  =========================================================================
ValidationError            ``VALIDATION``; INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE;
                           client-side checks of pipelines and audio
NodeExecutionError         ``NODE_EXECUTION`` (a node failed; an open circuit breaker); ABORTED
ResourceLimitError         ``RESOURCE_LIMIT``; RESOURCE_EXHAUSTED (size caps, concurrency caps)
AuthenticationError        ``AUTHENTICATION``; UNAUTHENTICATED, PERMISSION_DENIED
VersionMismatchError       ``VERSION_MISMATCH``; a GetVersion answer of ``compatible: false``
ServiceUnavailableError    UNAVAILABLE (server unreachable or draining for shutdown)
DeadlineExceededError      DEADLINE_EXCEEDED (the call's deadline passed)
PipelineCancelledError     CANCELLED (the call was cancelled)
InternalError              ``INTERNAL``; INTERNAL, UNKNOWN, DATA_LOSS, UNIMPLEMENTED, anything else
=========================  =========================================================================
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from remotemedia_client import pb

#: ``ErrorInfo.domain`` of the errors the service sends.
ERROR_DOMAIN = "remotemedia.v1"
#: Trailer listing the protocol versions a server supports, sent with VERSION_MISMATCH.
SUPPORTED_VERSIONS_TRAILER = "remotemedia-supported-versions"


@dataclass(frozen=True)
class Violation:
    """One broken rule: the field it concerns (``nodes[1].params.gain_db``) and what is wrong."""

    field: str
    description: str
    node_id: str | None = None

    def __str__(self) -> str:
        return f"{self.field}: {self.description}" if self.field else self.description


class RemoteMediaError(Exception):
    """Base class of every error this package raises for a call or a pipeline.

    Attributes:
        message: what went wrong and what to change, as the service worded it.
        code: the gRPC status code, or ``None`` for in-band and client-side errors.
        error_type: the service's error type (``"VALIDATION"``, ``"NODE_EXECUTION"``, ...), when known.
        node_id: the node concerned, when there is one.
        context: the error's JSON context (in-band) or ``ErrorInfo.metadata`` (statuses).
        retry_delay: seconds the server asked the client to wait before retrying, when it did.
        sequence: for a stream, the chunk sequence the error answers.
        hint: what this client suggests doing about it (``None`` when it has nothing to add);
            ``str(error)`` is the message followed by the hint.
    """

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        error_type: str | None = None,
        node_id: str | None = None,
        context: Mapping[str, Any] | None = None,
        retry_delay: float | None = None,
        sequence: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.error_type = error_type
        self.node_id = node_id or None
        self.context: dict[str, Any] = dict(context or {})
        self.retry_delay = retry_delay
        self.sequence = sequence
        self.hint: str | None = None

    def __str__(self) -> str:
        return f"{self.message}\n{self.hint}" if self.hint else self.message

    def __repr__(self) -> str:
        code = f", code={self.code.name}" if self.code is not None else ""
        node = f", node_id={self.node_id!r}" if self.node_id else ""
        return f"{type(self).__name__}({self.message!r}{code}{node})"


class ValidationError(RemoteMediaError, ValueError):
    """The pipeline, its parameters or its inputs break a rule; ``violations`` lists every one."""

    def __init__(self, message: str, *, violations: Sequence[Violation] = (), **kw: Any) -> None:
        kw.setdefault("error_type", "VALIDATION")
        super().__init__(message, **kw)
        self.violations: list[Violation] = list(violations)

    @classmethod
    def of(cls, violations: Sequence[Violation]) -> ValidationError:
        """A client-side error listing ``violations`` in its message."""
        lines = "\n".join(f"  - {v}" for v in violations)
        n = len(violations)
        return cls(f"{n} validation error{'s' if n != 1 else ''}:\n{lines}", violations=violations)


class NodeExecutionError(RemoteMediaError):
    """A node failed while running.

    ``node_id`` names it, ``traceback`` holds the Python traceback of a Python node,
    ``node_type``, ``attempts``, ``retryable`` and ``exception_type`` come from the context; an
    open circuit breaker sets ``retry_delay``.
    """

    def __init__(self, message: str, *, traceback: str | None = None, **kw: Any) -> None:
        kw.setdefault("error_type", "NODE_EXECUTION")
        super().__init__(message, **kw)
        self.traceback = traceback or None

    @property
    def node_type(self) -> str | None:
        value = self.context.get("node_type")
        return str(value) if value is not None else None

    @property
    def attempts(self) -> int | None:
        value = self.context.get("attempts")
        return int(value) if value is not None else None

    @property
    def retryable(self) -> bool:
        return bool(self.context.get("retryable", False))

    @property
    def exception_type(self) -> str | None:
        value = self.context.get("exception_type")
        return str(value) if value is not None else None


class ResourceLimitError(RemoteMediaError):
    """A limit was hit: time, memory, samples, message size, concurrency or stream duration.

    ``limit`` names it (``"max_timeout_ms"``, ``"max_message_bytes"``, ...) when the server said;
    a concurrency rejection carries ``retry_delay``.
    """

    def __init__(self, message: str, **kw: Any) -> None:
        kw.setdefault("error_type", "RESOURCE_LIMIT")
        super().__init__(message, **kw)

    @property
    def limit(self) -> str | None:
        value = self.context.get("limit")
        return str(value) if value is not None else None


class AuthenticationError(RemoteMediaError):
    """The bearer token is missing or wrong."""

    def __init__(self, message: str, **kw: Any) -> None:
        kw.setdefault("error_type", "AUTHENTICATION")
        super().__init__(message, **kw)


class VersionMismatchError(RemoteMediaError):
    """The server does not speak this client's protocol version; ``supported_versions`` lists
    what it does speak."""

    def __init__(self, message: str, *, supported_versions: Sequence[str] = (), **kw: Any) -> None:
        kw.setdefault("error_type", "VERSION_MISMATCH")
        super().__init__(message, **kw)
        self.supported_versions: list[str] = list(supported_versions)


class ServiceUnavailableError(RemoteMediaError):
    """The server cannot be reached or is draining for shutdown (it refuses new work, and
    work still running when its grace period ends is cut); retry later or elsewhere
    (``retry_delay`` when the server suggested one)."""


class DeadlineExceededError(RemoteMediaError):
    """The call's deadline passed before the server answered."""


class PipelineCancelledError(RemoteMediaError):
    """The call was cancelled, by this client (``stream.cancel()``). Work the server cuts at
    the end of its shutdown grace period is :class:`ServiceUnavailableError` instead."""


class InternalError(RemoteMediaError):
    """The service failed, or cannot serve the call at all, for reasons not in the request."""

    def __init__(self, message: str, **kw: Any) -> None:
        kw.setdefault("error_type", "INTERNAL")
        super().__init__(message, **kw)


_BY_TYPE: dict[str, type[RemoteMediaError]] = {
    "VALIDATION": ValidationError,
    "NODE_EXECUTION": NodeExecutionError,
    "RESOURCE_LIMIT": ResourceLimitError,
    "AUTHENTICATION": AuthenticationError,
    "VERSION_MISMATCH": VersionMismatchError,
    "INTERNAL": InternalError,
}

_BY_CODE: dict[grpc.StatusCode, type[RemoteMediaError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: ValidationError,
    grpc.StatusCode.FAILED_PRECONDITION: ValidationError,
    grpc.StatusCode.OUT_OF_RANGE: ValidationError,
    grpc.StatusCode.ABORTED: NodeExecutionError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceLimitError,
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: AuthenticationError,
}

# These codes say what happened to the call itself, whatever the error type behind it.
_CALL_CODES: dict[grpc.StatusCode, type[RemoteMediaError]] = {
    grpc.StatusCode.UNAVAILABLE: ServiceUnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.CANCELLED: PipelineCancelledError,
}


def _json_object(text: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {"raw": text}
    return value if isinstance(value, dict) else {"value": value}


def _error_type_name(value: int) -> str:
    return pb.ErrorType.Name(value).removeprefix("ERROR_TYPE_") if value in pb.ErrorType.values() else "UNSPECIFIED"


def from_error_response(err: pb.ErrorResponse) -> RemoteMediaError:
    """The exception for an in-band ``ErrorResponse``."""
    error_type = _error_type_name(err.error_type)
    context = _json_object(err.context)
    cls = _BY_TYPE.get(error_type, InternalError)
    sequence = context.get("sequence")
    retry_ms = context.get("retry_after_ms")
    kw: dict[str, Any] = {
        "error_type": error_type,
        "node_id": err.failing_node_id or None,
        "context": context,
        "retry_delay": retry_ms / 1000 if isinstance(retry_ms, (int, float)) else None,
        "sequence": sequence if isinstance(sequence, int) else None,
    }
    if issubclass(cls, ValidationError):
        raw = context.get("violations")
        violations = [
            Violation(field=str(v.get("field", "")), description=str(v.get("description", "")), node_id=v.get("node_id") or None)
            for v in (raw if isinstance(raw, list) else [])
            if isinstance(v, dict)
        ]
        return cls(err.message, violations=violations, **kw)
    if issubclass(cls, NodeExecutionError):
        return cls(err.message, traceback=err.stack_trace or None, **kw)
    if issubclass(cls, VersionMismatchError):
        supported = context.get("supported_versions") or []
        return cls(err.message, supported_versions=[str(s) for s in supported], **kw)
    return cls(err.message, **kw)


def _rich_status(e: grpc.RpcError) -> status_pb2.Status | None:
    call: Any = e
    try:
        status = rpc_status.from_call(call)
    except ValueError:
        # A proxy rewrote the code or message; the details are still worth reading.
        status = None
        for key, value in call.trailing_metadata() or ():
            if key == "grpc-status-details-bin":
                try:
                    status = status_pb2.Status.FromString(value)
                except DecodeError:
                    return None
    return status


def from_rpc_error(e: grpc.RpcError) -> RemoteMediaError:
    """The exception for a failed call (``grpc.RpcError`` or ``grpc.aio.AioRpcError``)."""
    call: Any = e
    code: grpc.StatusCode = call.code()
    message: str = call.details() or code.name
    trailers = {k: v for k, v in (call.trailing_metadata() or ()) if isinstance(v, str)}
    info = error_details_pb2.ErrorInfo()
    retry = None
    violations: list[Violation] = []
    has_info = False
    status = _rich_status(e)
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
            has_info = True
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            r = error_details_pb2.RetryInfo()
            detail.Unpack(r)
            retry = r.retry_delay.seconds + r.retry_delay.nanos / 1e9
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [Violation(field=v.field, description=v.description) for v in bad.field_violations]
    reason = info.reason if has_info else None
    context: dict[str, Any] = dict(info.metadata)
    supported = context.get("supported_versions") or trailers.get(SUPPORTED_VERSIONS_TRAILER)
    if reason == "VERSION_MISMATCH" or (reason is None and code == grpc.StatusCode.FAILED_PRECONDITION and supported):
        cls: type[RemoteMediaError] = VersionMismatchError
    elif code in _CALL_CODES:
        cls = _CALL_CODES[code]
    elif reason in _BY_TYPE:
        cls = _BY_TYPE[reason]
    else:
        cls = _BY_CODE.get(code, InternalError)
    kw: dict[str, Any] = {
        "code": code,
        "node_id": context.get("failing_node_id"),
        "context": context,
        "retry_delay": retry,
    }
    if reason is not None:
        kw["error_type"] = reason
    if cls is ValidationError:
        return ValidationError(message, violations=violations, **kw)
    if cls is VersionMismatchError:
        versions = [v for v in (supported or "").split(",") if v]
        return VersionMismatchError(message, supported_versions=versions, **kw)
    return cls(message, **kw)


def merge(in_band: RemoteMediaError, status: RemoteMediaError) -> RemoteMediaError:
    """A stream's in-band error completed by the status that ended the stream: the in-band one
    has the context and the traceback, the status the code and retry information. When the
    status says what happened to the call (cancelled, draining, deadline), its class wins."""
    if type(status) in _CALL_CODES.values() and not isinstance(in_band, type(status)):
        return type(status)(
            in_band.message,
            code=status.code,
            error_type=in_band.error_type,
            node_id=in_band.node_id,
            context=in_band.context,
            retry_delay=status.retry_delay if status.retry_delay is not None else in_band.retry_delay,
            sequence=in_band.sequence,
        )
    if in_band.code is None:
        in_band.code = status.code
    if in_band.retry_delay is None:
        in_band.retry_delay = status.retry_delay
    if isinstance(in_band, ValidationError) and isinstance(status, ValidationError) and not in_band.violations:
        in_band.violations = status.violations
    return in_band


__all__ = [
    "AuthenticationError",
    "DeadlineExceededError",
    "InternalError",
    "NodeExecutionError",
    "PipelineCancelledError",
    "RemoteMediaError",
    "ResourceLimitError",
    "ServiceUnavailableError",
    "ValidationError",
    "VersionMismatchError",
    "Violation",
    "from_error_response",
    "from_rpc_error",
    "merge",
]
