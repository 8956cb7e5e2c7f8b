"""Exceptions a node raises, and how the server treats each.

| raised | error type | retried |
| --- | --- | --- |
| ``InvalidRequest`` | input the request must change (data of a shape the node does not take): VALIDATION | no |
| ``UnsupportedAudio`` (an ``InvalidRequest``) | audio the node does not take (rate, channels): VALIDATION | no |
| ``InvalidInput``, ``ValueError``, ``TypeError``, ``KeyError``, ``IndexError`` | bad input: NODE_EXECUTION | no |
| ``TransientError``, ``TimeoutError``, ``ConnectionError`` | may pass: NODE_EXECUTION | yes, with backoff |
| any other exception | a node failure: NODE_EXECUTION | no (counts toward the circuit breaker) |
| ``ParamError`` (from ``__init__``) | bad parameters: VALIDATION | no |
| ``ModelPoolExhausted`` (:mod:`remotemedia_nodes.models`) | no model instance free in time: RESOURCE_LIMIT, with a retry delay | no |
| ``MemoryLimitExceeded`` (from :func:`reserve_output`) | an output over the run's memory limit: RESOURCE_LIMIT | no |
"""

from __future__ import annotations


class NodeError(Exception):
    """Base class of the exceptions nodes raise on purpose. ``field`` names the input or
    parameter at fault (``input.sample_rate``), as the native nodes' errors do; the client gets
    it as the error's ``context.field``."""

    def __init__(self, *args: object, field: str | None = None) -> None:
        super().__init__(*args)
        self.field = field


class InvalidInput(NodeError, ValueError):
    """The node's input is unusable (wrong rate, missing port, ...). Not retried."""


class InvalidRequest(InvalidInput):
    """Input of a form the node does not take, which only a changed request can fix (data of
    the wrong JSON type on a data port): the client gets ``ERROR_TYPE_VALIDATION``. The message
    says what the node takes and what it got."""


class UnsupportedAudio(InvalidRequest):
    """Audio in a form the node does not take (another sample rate or channel count): the
    request must change, so the client gets ``ERROR_TYPE_VALIDATION``. The message says what
    the node needs and which node converts to it."""


class TransientError(NodeError):
    """A failure that may pass on its own (a busy dependency, a timeout). Retried with backoff."""


class ParamError(NodeError, ValueError):
    """A bad parameter, raised from a node's ``__init__``; names the parameter."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"parameter `{param}` {message}")
        self.param = param
        self.message = message


class ParamErrors(NodeError, ValueError):
    """Every parameter problem of one node, reported together."""

    def __init__(self, errors: list[ParamError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


class MemoryLimitExceeded(NodeError):
    """An output the node was about to make would take the run over its memory limit (see
    :func:`remotemedia_nodes.reserve_output`); reported as the run's memory limit."""

    def __init__(self, limit_bytes: int, needed_bytes: int, output_bytes: int) -> None:
        super().__init__(f"its output of {output_bytes} bytes would bring the pipeline to {needed_bytes} bytes, over its limit of {limit_bytes}")
        self.limit_bytes = limit_bytes
        self.needed_bytes = needed_bytes


class Cancelled(BaseException):
    """Raised inside a node when its execution is cancelled or runs past its time limit.

    It derives from ``BaseException`` so that ``except Exception`` in node code does not
    swallow it.
    """


#: Longest piece of client-supplied text quoted in a message, in UTF-8 bytes (the server's bound).
MAX_QUOTED_BYTES = 128


def quoted(text: str, max_bytes: int = MAX_QUOTED_BYTES) -> str:
    """``text`` (from a request: a value, a name) for a message: cut at a character boundary
    to at most ``max_bytes`` UTF-8 bytes in all, with a note of how many bytes were left out,
    as the server cuts what it quotes (``"ab→cdab… (61 more bytes)"``)."""
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= max_bytes:
        return text
    room = max_bytes - len(f"… ({len(raw)} more bytes)".encode())
    keep = raw[: max(room, 0)].decode("utf-8", "ignore")
    return f"{keep}… ({len(raw) - len(keep.encode('utf-8', 'surrogatepass'))} more bytes)"
