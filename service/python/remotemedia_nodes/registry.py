"""Registering nodes, and how the server builds and calls them.

A node is a class registered under a node type name::

    from typing import Annotated

    from remotemedia_nodes import Audio, Node, Param, node

    @node("Invert")
    class Invert(Node):
        \"\"\"Flips the polarity of the audio.\"\"\"

        def __init__(self, strength: Annotated[float, Param(0, 1, doc="how much")] = 1.0) -> None:
            self.strength = strength

        def process(self, inputs: dict) -> dict:
            audio = inputs["input"]
            return {"output": Audio(-audio.samples * self.strength, audio.sample_rate)}

The class is the node's declaration (see :mod:`remotemedia_nodes.declare`): its ``__init__``
parameters, with their annotations, are the node's parameters, and the server checks every
request against them (unknown, missing, mistyped and out-of-range parameters, all at once)
before ``__init__`` runs; ``__init__`` raises ``ParamError`` for rules a declaration cannot
express. ``process`` receives the node's inputs by port name (``Audio`` for audio, plain Python
values for JSON data) and returns its outputs by port name: ``Audio`` for audio, anything
JSON-serialisable for data. ``flush`` (optional) returns what the node still holds when a
stream closes. One instance serves one execution, or one stream session.
"""

from __future__ import annotations

import functools
import json
import math
import threading
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

from remotemedia_nodes import models
from remotemedia_nodes.audio import Audio
from remotemedia_nodes.declare import DEFAULT_INPUTS, DEFAULT_OUTPUTS, Above, Exclusive, Port, declaration
from remotemedia_nodes.errors import MemoryLimitExceeded, ParamError, ParamErrors
from remotemedia_nodes.models import Model

_NODES: dict[str, type[Node]] = {}
_ALIASES: dict[str, tuple[str, ...]] = {}


class Node:
    """Base class of Python nodes (optional: any class with ``process`` works)."""

    #: Input ports the node reads.
    inputs: tuple[Port, ...] = DEFAULT_INPUTS
    #: Output ports the node may write.
    outputs: tuple[Port, ...] = DEFAULT_OUTPUTS
    #: Groups of parameters that exclude each other.
    exclusive: tuple[Exclusive, ...] = ()
    #: Number parameters that must exceed another.
    above: tuple[Above, ...] = ()
    #: A valid parameter object, when ``__init__`` has rules the declaration cannot say.
    example: dict[str, Any] | None = None
    #: The models (:mod:`remotemedia_nodes.models`) the node uses, for their metrics' labels.
    models: tuple[Model[Any], ...] = ()

    def process(self, inputs: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def flush(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        """Called once when the execution or stream session ends, however it ends (cancelled
        included): return leased models here (see :mod:`remotemedia_nodes.models`)."""


def node(node_type: str, *, aliases: tuple[str, ...] = ()) -> Callable[[type], type]:
    """Registers a class as the Python implementation of `node_type` (also known by `aliases`).
    The class's declaration is read at once, so a mistake in it fails the import."""

    def register(cls: type) -> type:
        if not callable(getattr(cls, "process", None)):
            raise TypeError(f"node {node_type}: {cls.__name__} has no process() method")
        previous = _NODES.get(node_type)
        if previous is not None and previous is not cls:
            raise TypeError(f"node type {node_type} is registered twice ({previous.__module__}.{previous.__name__} and {cls.__module__}.{cls.__name__})")
        declaration(node_type, cls, aliases)
        _NODES[node_type] = cls
        _ALIASES[node_type] = aliases
        return cls

    return register


def node_types() -> list[str]:
    return sorted(_NODES)


def declarations() -> list[dict[str, Any]]:
    """The declaration of every registered node type, sorted by name."""
    return [declaration(name, _NODES[name], _ALIASES[name]) for name in node_types()]


def declarations_json() -> str:
    """:func:`declarations` as JSON text (what the server reads at start-up)."""
    return json.dumps(declarations())


def models_json() -> str:
    """Every registered model, with the node types that declare they use it, as JSON text."""
    users: dict[str, list[str]] = {}
    for name in node_types():
        for model in getattr(_NODES[name], "models", ()):
            users.setdefault(model.name, []).append(name)
    return json.dumps([{**m, "node_types": users.get(m["name"], [])} for m in models.host.describe()])


def create(node_type: str, params: dict[str, Any]) -> Any:
    """Builds an instance from parameters the server checked against the declaration; the
    node's own problems are raised together as ``ParamErrors``."""
    cls = _NODES[node_type]
    try:
        return cls(**params)
    except ParamErrors:
        raise
    except ParamError as e:
        raise ParamErrors([e]) from e
    except (TypeError, ValueError) as e:
        raise ParamErrors([ParamError("", f"rejected: {e}")]) from e


#: The integers a data output carries exactly: the server reads JSON numbers as 64-bit
#: integers or doubles (serde_json), so a larger integer would arrive rounded.
_INT_RANGE = (-(2**63), 2**64 - 1)


def _jsonable(port: str, value: Any) -> Any:
    """``value`` as plain JSON values. numpy scalars and arrays become numbers and lists,
    non-finite floats ``null`` (JSON has none); an integer the server cannot carry exactly or a
    string that is not Unicode (a lone surrogate) raises ValueError naming ``port``."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int) and not isinstance(value, bool) and not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
        raise ValueError(
            f"data output `{port}` holds an integer of {value.bit_length()} bits, outside the range a data output "
            f"carries exactly (-2**63 to 2**64 - 1); send it as a string or a float"
        )
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(
                f"data output `{port}` holds a string that is not valid Unicode: {e.reason} at position {e.start}"
            ) from None
        return value
    if isinstance(value, np.ndarray):
        return [_jsonable(port, v) for v in value.tolist()]
    if isinstance(value, dict):
        return {_jsonable(port, str(k)): _jsonable(port, v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(port, v) for v in value]
    return value


@functools.cache
def _declared_outputs(cls: type) -> tuple[dict[str, str], bool]:
    """A node class's output ports and their kinds, and whether the class declares them itself
    (rather than taking the default single audio port)."""
    outputs = getattr(cls, "outputs", DEFAULT_OUTPUTS)
    return {port.name: port.kind for port in outputs}, outputs is not DEFAULT_OUTPUTS


def split_outputs(
    outputs: Any, declared: dict[str, str] | None = None, method: str = "process", strict: bool = False
) -> tuple[dict[str, Audio], str | None]:
    """Separates a node's outputs into audio ports and the JSON text of its data ports.
    ``declared`` maps the node's declared output ports to their kind (``"audio"``/``"data"``):
    a value of the other kind on a declared port is refused (a data port that carried audio
    would hand it to the data inputs it is connected to), and with ``strict`` (a node that
    declares its outputs) so is a port it does not declare (a misspelt port reaches no
    consumer). ``None`` means no outputs, as ``{}`` does."""
    if outputs is None:
        return {}, None
    if not isinstance(outputs, dict):
        raise TypeError(f"{method}() must return a dict of outputs by port, got {type(outputs).__name__}")
    audio: dict[str, Audio] = {}
    data: dict[str, Any] = {}
    for port, value in outputs.items():
        kind = "audio" if isinstance(value, Audio) else "data"
        if strict and declared is not None and str(port) not in declared:
            names = ", ".join(f"`{p}`" for p in declared) or "none"
            raise TypeError(f"{method}() returned output `{port}`, a port the node does not declare (its output ports: {names})")
        if declared is not None and declared.get(str(port), kind) != kind:
            raise TypeError(f"output `{port}` is declared as a {declared[str(port)]} port, but the node returned {kind} on it")
        if isinstance(value, Audio):
            audio[str(port)] = value
        elif isinstance(value, np.ndarray):
            raise TypeError(f"output `{port}` is a bare numpy array; wrap audio as Audio(samples, sample_rate)")
        else:
            data[str(port)] = _jsonable(str(port), value)
    return audio, (json.dumps(data, allow_nan=False) if data else None)


#: The memory limit of the call running on this thread and what the run held when it started,
#: in bytes (``None`` without a limit); read by :func:`reserve_output`.
_memory = threading.local()


def reserve_output(nbytes: int) -> None:
    """Refuses, before it is allocated, an output of ``nbytes`` bytes that would take the run
    over its memory limit, raising :class:`MemoryLimitExceeded` (RESOURCE_LIMIT). Nodes whose
    output can be many times their input (upmixing, upsampling, widening the sample format)
    call it first, as the native nodes do. Outside a server call it does nothing."""
    budget = getattr(_memory, "budget", None)
    if budget is None:
        return
    limit, live = budget
    if live + nbytes > limit:
        raise MemoryLimitExceeded(limit, live + nbytes, nbytes)


def call(
    instance: Any, method: str, inputs: dict[str, Any] | None, memory: tuple[int, int] | None = None
) -> tuple[dict[str, Audio], str | None]:
    """Calls ``process(inputs)`` or ``flush()`` and splits the result. ``memory`` is the run's
    memory limit and the bytes it holds, ``(limit, live)``, for :func:`reserve_output`."""
    _memory.budget = memory
    try:
        declared, strict = _declared_outputs(type(instance))
        with models.host.calling(instance):
            if method == "process":
                return split_outputs(instance.process(inputs), declared, "process", strict)
            fn = getattr(instance, "flush", None)
            return split_outputs(fn() if fn is not None else None, declared, "flush", strict)
    finally:
        _memory.budget = None


def close(instance: Any) -> None:
    """Calls the instance's ``close()``, if it has one (the server does when it drops a node),
    then returns any pooled model instance it still holds, even if ``close()`` failed."""
    fn = getattr(instance, "close", None)
    try:
        if fn is not None:
            fn()
    finally:
        models.host.release_held(instance)


def format_exception(e: BaseException, tb: Any = None) -> str:
    return "".join(traceback.format_exception(type(e), e, tb if tb is not None else e.__traceback__))
