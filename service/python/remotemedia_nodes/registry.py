"""Declaring nodes and how the server builds and calls them.

A node is a class registered under a node type name::

    from remotemedia_nodes import Audio, Node, node

    @node("Invert")
    class Invert(Node):
        \"\"\"Flips the polarity of the audio.\"\"\"

        def __init__(self, strength: float = 1.0) -> None:
            self.strength = strength

        def process(self, inputs: dict) -> dict:
            audio = inputs["input"]
            return {"output": Audio(-audio.samples * self.strength, audio.sample_rate)}

Its ``__init__`` takes the node's parameters as keyword arguments (unknown and missing ones are
reported before it runs). ``process`` receives the node's inputs by port name (``Audio`` for
audio, plain Python values for JSON data) and returns its outputs by port name: ``Audio`` for
audio, anything JSON-serialisable for data. ``flush`` (optional) returns what the node still
holds when a stream closes. One instance serves one execution, or one stream session.
"""

from __future__ import annotations

import inspect
import json
import math
import traceback
from typing import Any, Callable

import numpy as np

from remotemedia_nodes.audio import Audio
from remotemedia_nodes.errors import ParamError, ParamErrors

_NODES: dict[str, type[Node]] = {}


class Node:
    """Base class of Python nodes (optional: any class with ``process`` works)."""

    #: Input ports the node reads (``None``: any).
    inputs: tuple[str, ...] | None = None

    def process(self, inputs: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def flush(self) -> dict[str, Any]:
        return {}


def node(node_type: str) -> Callable[[type], type]:
    """Registers a class as the Python implementation of `node_type`."""

    def register(cls: type) -> type:
        if not callable(getattr(cls, "process", None)):
            raise TypeError(f"node {node_type}: {cls.__name__} has no process() method")
        previous = _NODES.get(node_type)
        if previous is not None and previous is not cls:
            raise TypeError(f"node type {node_type} is registered twice ({previous.__module__}.{previous.__name__} and {cls.__module__}.{cls.__name__})")
        _NODES[node_type] = cls
        return cls

    return register


def node_types() -> list[str]:
    return sorted(_NODES)


def _check_params(node_type: str, cls: type, params: dict[str, Any]) -> None:
    sig = inspect.signature(cls.__init__)
    accepted = [p for p in list(sig.parameters.values())[1:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    takes_any = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    names = [p.name for p in accepted]
    errors = []
    if not takes_any:
        for key in params:
            if key not in names:
                hint = f"accepted: {', '.join(sorted(names))}" if names else "this node takes no parameters"
                errors.append(ParamError(key, f"is not accepted ({hint})"))
    for p in accepted:
        if p.default is inspect.Parameter.empty and p.name not in params:
            errors.append(ParamError(p.name, "is required"))
    if errors:
        raise ParamErrors(errors)


def create(node_type: str, params: dict[str, Any]) -> Any:
    """Builds an instance; every parameter problem is raised together as ``ParamErrors``."""
    cls = _NODES[node_type]
    _check_params(node_type, cls, params)
    try:
        return cls(**params)
    except (ParamError, ParamErrors):
        raise
    except (TypeError, ValueError) as e:
        raise ParamErrors([ParamError("", f"rejected: {e}")]) from e


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def split_outputs(outputs: Any) -> tuple[dict[str, Audio], str | None]:
    """Separates a node's outputs into audio ports and the JSON text of its data ports."""
    if outputs is None:
        return {}, None
    if not isinstance(outputs, dict):
        raise TypeError(f"process() must return a dict of outputs by port, got {type(outputs).__name__}")
    audio: dict[str, Audio] = {}
    data: dict[str, Any] = {}
    for port, value in outputs.items():
        if isinstance(value, Audio):
            audio[str(port)] = value
        elif isinstance(value, np.ndarray):
            raise TypeError(f"output `{port}` is a bare numpy array; wrap audio as Audio(samples, sample_rate)")
        else:
            data[str(port)] = _jsonable(value)
    return audio, (json.dumps(data, allow_nan=False) if data else None)


def call(instance: Any, method: str, inputs: dict[str, Any] | None) -> tuple[dict[str, Audio], str | None]:
    """Calls ``process(inputs)`` or ``flush()`` and splits the result."""
    if method == "process":
        return split_outputs(instance.process(inputs))
    fn = getattr(instance, "flush", None)
    return split_outputs(fn() if fn is not None else None)


def format_exception(e: BaseException, tb: Any = None) -> str:
    return "".join(traceback.format_exception(type(e), e, tb if tb is not None else e.__traceback__))
