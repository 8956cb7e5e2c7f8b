"""A node's declaration, read from its class: what the server validates and serves.

The class says everything once::

    from typing import Annotated, Literal

    from remotemedia_nodes import Node, Param, Port, node

    @node("EchoNode")
    class Echo(Node):
        \"\"\"Repeats the audio after a delay.

        Anything after the first paragraph is the node's longer description (Markdown), shown
        in the node reference.
        \"\"\"

        inputs = (Port.audio("input", "audio to echo"),)
        outputs = (Port.audio("output", "the audio with its echo"),)

        def __init__(
            self,
            delay_ms: Annotated[int, Param(1, 2000, unit="ms", doc="echo delay")] = 250,
            mode: Annotated[Literal["mono", "stereo"], Param(doc="where the echo goes")] = "mono",
        ) -> None: ...

- The class's own docstring is its description (first paragraph) and details (the rest); a
  class without one has an empty description, whatever its base classes say.
- Each ``__init__`` parameter is a node parameter. A default makes it optional; ``None`` as
  the default makes it optional with no default.
- Its annotation gives its kind: ``int`` (an integer), ``float`` (a number; integers accepted),
  ``bool``, ``str`` (text), ``Literal["a", "b"]`` (one of the names), ``Literal[10, 20]`` (one
  of the integers); ``X | None`` is the same kind, optional. A parameter without an annotation
  takes any JSON value.
- ``Annotated[..., Param(minimum, maximum, unit=..., doc=..., max_length=...)]`` adds a range,
  a unit and a description.
- ``inputs`` and ``outputs`` list the ports (default: ``input`` and ``output`` audio).
- ``exclusive`` (optional) lists groups of parameters that exclude each other:
  ``Exclusive.one_of("chunk_samples", "chunk_ms")`` (exactly one must be given) or
  ``Exclusive.at_most_one_of("gain_db", "gain")``.
- ``above`` (optional) lists number parameters that must exceed another:
  ``Above("high_hz", "low_hz")``.
- ``example`` (optional) is a valid parameter object, for a node whose ``__init__`` has rules a
  declaration cannot say.

The server checks every request's parameters against this declaration before ``__init__``
runs, with the same rules and messages as for native nodes, and lists it in ``GetVersion``.
"""

from __future__ import annotations

import inspect
import json
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union

#: Longest text parameter when a declaration gives no ``max_length``.
DEFAULT_MAX_LENGTH = 1024


@dataclass(frozen=True)
class Param:
    """Range, unit and description of a parameter, for ``Annotated[type, Param(...)]``."""

    minimum: float | None = None
    maximum: float | None = None
    unit: str | None = None
    doc: str = ""
    max_length: int | None = None


@dataclass(frozen=True)
class Port:
    """An input or output port: its name, whether it carries audio or JSON data, and what."""

    name: str
    kind: Literal["audio", "data"]
    description: str = ""

    @staticmethod
    def audio(name: str, description: str = "") -> Port:
        return Port(name, "audio", description)

    @staticmethod
    def data(name: str, description: str = "") -> Port:
        return Port(name, "data", description)

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "kind": self.kind, "description": self.description}


@dataclass(frozen=True)
class Exclusive:
    """Parameters of which at most one may be given; with ``required``, exactly one."""

    params: tuple[str, ...]
    required: bool = False

    @staticmethod
    def one_of(*params: str) -> Exclusive:
        return Exclusive(params, required=True)

    @staticmethod
    def at_most_one_of(*params: str) -> Exclusive:
        return Exclusive(params)

    def to_json(self) -> dict[str, Any]:
        return {"params": list(self.params), "required": self.required}


@dataclass(frozen=True)
class Above:
    """Number parameter ``param`` must be greater than number parameter ``than`` when both have a
    value (given or default): ``Above("high_hz", "low_hz")``."""

    param: str
    than: str

    def to_json(self) -> dict[str, str]:
        return {"param": self.param, "than": self.than}


DEFAULT_INPUTS = (Port.audio("input", "audio"),)
DEFAULT_OUTPUTS = (Port.audio("output", "audio"),)


class DeclarationError(TypeError):
    """A node class whose declaration cannot be read; the message names the class and parameter."""


def _optional_inner(annotation: Any) -> Any:
    """`X` for `X | None` and `Optional[X]`, else the annotation itself."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _kind(where: str, annotation: Any, param: Param) -> dict[str, Any]:
    """The declaration's `type` and bounds for an annotation."""
    base = _optional_inner(annotation)
    if typing.get_origin(base) is Literal:
        choices = list(typing.get_args(base))
        if all(isinstance(c, str) for c in choices):
            return {"type": "choice", "choices": choices}
        if all(isinstance(c, int) and not isinstance(c, bool) for c in choices):
            return {"type": "integer_choice", "choices": choices}
        raise DeclarationError(f"{where}: a Literal must hold only names or only integers, got {choices}")
    bounds = {k: v for k, v in (("minimum", param.minimum), ("maximum", param.maximum)) if v is not None}
    if base is bool:
        return {"type": "boolean"}
    if base is int:
        for k, v in bounds.items():
            if not float(v).is_integer():
                raise DeclarationError(f"{where}: an int parameter needs whole {k}, got {v}")
        return {"type": "integer", **{k: int(v) for k, v in bounds.items()}}
    if base is float:
        return {"type": "number", **{k: float(v) for k, v in bounds.items()}}
    if base is str:
        return {"type": "text", "max_length": param.max_length or DEFAULT_MAX_LENGTH}
    return {"type": "any"}


def _jsonable(where: str, value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise DeclarationError(f"{where}: a default must be a finite number, got {value}")
    try:
        json.dumps(value)
    except TypeError as e:
        raise DeclarationError(f"{where}: the default {value!r} is not JSON") from e
    return value


def declaration(node_type: str, cls: type, aliases: tuple[str, ...] = ()) -> dict[str, Any]:
    """The declaration of `cls` as the server reads it (the JSON form of the server's `NodeSpec`)."""
    # The class's own docstring only: inherited ones describe a base (`Node`'s, or a plug-in's
    # shared base), not this node. None gives an empty description.
    doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
    first, _, rest = doc.partition("\n\n")
    init = cls.__init__ if cls.__init__ is not object.__init__ else None
    params = []
    if init is not None:
        hints = typing.get_type_hints(init, include_extras=True)
        signature = inspect.signature(init)
        for p in list(signature.parameters.values())[1:]:
            if p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                continue
            where = f"{cls.__qualname__}.__init__ parameter `{p.name}`"
            annotation = hints.get(p.name, Any)
            extra = Param()
            if typing.get_origin(annotation) is typing.Annotated:
                annotation, *metadata = typing.get_args(annotation)
                extra = next((m for m in metadata if isinstance(m, Param)), extra)
            entry: dict[str, Any] = {"name": p.name, **_kind(where, annotation, extra), "description": extra.doc}
            if p.default is inspect.Parameter.empty:
                entry["required"] = True
            elif p.default is not None:
                entry["default"] = _jsonable(where, p.default)
            if extra.unit:
                entry["unit"] = extra.unit
            params.append(entry)
    ports = lambda name, default: [port.to_json() for port in (getattr(cls, name, None) or default)]  # noqa: E731
    example = getattr(cls, "example", None)
    exclusive = tuple(getattr(cls, "exclusive", None) or ())
    names = {p["name"] for p in params}
    for group in exclusive:
        if len(group.params) < 2 or not set(group.params) <= names:
            raise DeclarationError(f"{cls.__qualname__}.exclusive: {group.params} must name two or more of its parameters")
    above = tuple(getattr(cls, "above", None) or ())
    for rule in above:
        if not {rule.param, rule.than} <= names or rule.param == rule.than:
            raise DeclarationError(f"{cls.__qualname__}.above: {rule} must name two of its parameters")
    return {
        **({"above": [rule.to_json() for rule in above]} if above else {}),
        **({"example": _jsonable(f"{cls.__qualname__}.example", dict(example))} if example is not None else {}),
        **({"exclusive": [group.to_json() for group in exclusive]} if exclusive else {}),
        "node_type": node_type,
        "aliases": list(aliases),
        "description": " ".join(first.split()),
        "details": rest.strip(),
        "params": params,
        "inputs": ports("inputs", DEFAULT_INPUTS),
        "outputs": ports("outputs", DEFAULT_OUTPUTS),
    }
