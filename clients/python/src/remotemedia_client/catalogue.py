"""The node catalogue: each node type's parameters (as JSON Schema), ports and runtimes, as the
service declares them.

The client ships the catalogue of the service's built-in nodes (:data:`BUILTIN_CATALOGUE`, generated
from the service's own declarations), and checks every pipeline's parameters against it before
anything is sent, with the service's rules and messages. A pipeline using node types the client
was not built with (plug-ins) is checked against the catalogue the server returns
(``Client.catalogue()``), which ``Client.run`` and ``Client.stream`` fetch once when they need
it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from remotemedia_client import pb
from remotemedia_client._catalogue_data import CATALOGUE


@dataclass(frozen=True)
class NodeType:
    """One node type: its name, aliases, description, parameters (a JSON Schema object schema),
    ports (``[{"name", "kind", "description"}]``) and the runtimes that implement it."""

    name: str
    description: str
    params_schema: Mapping[str, Any]
    aliases: tuple[str, ...] = ()
    details: str = ""
    inputs: tuple[Mapping[str, str], ...] = ()
    outputs: tuple[Mapping[str, str], ...] = ()
    runtimes: tuple[str, ...] = ()

    @staticmethod
    def from_json(entry: Mapping[str, Any]) -> NodeType:
        return NodeType(
            name=entry["name"],
            description=entry.get("description", ""),
            params_schema=entry.get("params_schema") or {},
            aliases=tuple(entry.get("aliases", ())),
            details=entry.get("details", ""),
            inputs=tuple(entry.get("inputs", ())),
            outputs=tuple(entry.get("outputs", ())),
            runtimes=tuple(entry.get("runtimes", ())),
        )

    @staticmethod
    def from_pb(info: pb.NodeTypeInfo) -> NodeType:
        def ports(ps: Iterable[pb.PortInfo]) -> tuple[Mapping[str, str], ...]:
            kind = {pb.PORT_KIND_AUDIO: "audio", pb.PORT_KIND_DATA: "data"}
            return tuple({"name": p.name, "kind": kind.get(p.kind, "data"), "description": p.description} for p in ps)

        runtimes = {pb.RUNTIME_HINT_RUST: "rust", pb.RUNTIME_HINT_CPYTHON: "python"}
        return NodeType(
            name=info.name,
            description=info.description,
            params_schema=json.loads(info.params_schema or "{}"),
            aliases=tuple(info.aliases),
            details=info.details,
            inputs=ports(info.inputs),
            outputs=ports(info.outputs),
            runtimes=tuple(runtimes.get(r, str(r)) for r in info.runtimes),
        )

    @property
    def properties(self) -> Mapping[str, Mapping[str, Any]]:
        return dict(self.params_schema.get("properties", {}))

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(self.params_schema.get("required", ()))

    @property
    def exclusive(self) -> tuple[Mapping[str, Any], ...]:
        """Groups of parameters that exclude each other: ``{"params": [...], "required": bool}``
        (``required``: exactly one of them must be given)."""
        return tuple(self.params_schema.get("x-exclusive", ()))

    @property
    def above(self) -> tuple[Mapping[str, str], ...]:
        """Number parameters that must exceed another: ``{"param": "high_hz", "than": "low_hz"}``."""
        return tuple(self.params_schema.get("x-above", ()))

    def check(self, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        """``(parameter, problem)`` for every parameter the service would refuse by the
        declaration's rules, in the service's order and words: declared parameters first, then
        unknown ones, then groups of parameters that exclude each other, then parameters that
        must exceed another. What only the server can know (whether its espeak-ng has a voice)
        it checks itself."""
        problems: list[tuple[str, str]] = []
        props = self.properties
        for name, schema in props.items():
            value = params.get(name)
            if value is None:
                if name in self.required:
                    problems.append((name, f"is required ({expected(schema)})"))
                continue
            if not accepts(schema, value):
                problems.append((name, f"must be {expected(schema)}, got {shown(value)} ({type_name(value)})"))
        for name in params:
            if name not in props:
                hint = (
                    f"is not accepted (accepted: {', '.join(sorted(props))})"
                    if props
                    else "is not accepted (this node takes no parameters)"
                )
                problems.append((name, hint))
        for group in self.exclusive:
            names: list[str] = list(group.get("params", ()))
            given = [n for n in names if params.get(n) is not None]
            if given:
                problems.extend((n, f"cannot be combined with `{given[0]}`; give one of them") for n in given[1:])
            elif group.get("required") and names:
                others = " or ".join(f"`{n}`" for n in names[1:])
                problems.append((names[0], f"or {others} is required (give one of them)"))

        def settled(name: str) -> Any:
            """The value the service would use: a given one that passed its check, or the default."""
            value = params.get(name)
            if value is None:
                return props.get(name, {}).get("default")
            return value if name in props and accepts(props[name], value) else None

        for rule in self.above:
            x, y = settled(rule["param"]), settled(rule["than"])
            numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (x, y))
            if numbers and x <= y:
                problems.append((rule["param"], f"must be above `{rule['than']}` ({shown(y)}), got {shown(x)}"))
        return problems


@dataclass(frozen=True)
class Catalogue:
    """Node types by name and alias."""

    types: Mapping[str, NodeType] = field(default_factory=dict)

    @staticmethod
    def of(entries: Iterable[NodeType]) -> Catalogue:
        return Catalogue({t.name: t for t in entries})

    @staticmethod
    def from_json(doc: Mapping[str, Any]) -> Catalogue:
        """The catalogue as ``remotemedia-server catalogue`` writes it: ``{"node_types": [...]}``."""
        return Catalogue.of(NodeType.from_json(e) for e in doc["node_types"])

    @staticmethod
    def from_version(info: pb.VersionInfo) -> Catalogue:
        """The catalogue a server returns in ``GetVersion``."""
        return Catalogue.of(NodeType.from_pb(t) for t in info.node_types)

    def get(self, node_type: str) -> NodeType | None:
        """The node type named ``node_type`` or one of its aliases."""
        if node_type in self.types:
            return self.types[node_type]
        return next((t for t in self.types.values() if node_type in t.aliases), None)

    def knows(self, node_type: str) -> bool:
        return self.get(node_type) is not None

    def merged(self, other: Catalogue) -> Catalogue:
        """This catalogue with ``other``'s types added (``other`` wins on a name both have)."""
        return Catalogue({**self.types, **other.types})

    def check(self, node_type: str, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        """``(parameter, problem)`` for each parameter of ``node_type`` the service would
        refuse; nothing for a type this catalogue does not know (the service checks it)."""
        t = self.get(node_type)
        return t.check(params) if t is not None else []

    def runtime_problem(self, node_type: str, runtime: str) -> str | None:
        """Why ``node_type`` cannot run in ``runtime`` (``"rust"`` or ``"cpython"``; ``"auto"``
        always can), as the service words it; None when it can, or when this catalogue does
        not know the type (the service checks it)."""
        t = self.get(node_type)
        if t is None or runtime == "auto":
            return None
        listed = "python" if runtime == "cpython" else runtime
        if listed in t.runtimes:
            return None
        other = "cpython" if runtime == "rust" else "rust"
        what = "native Rust" if runtime == "rust" else "Python"
        return f"node type `{t.name}` has no {what} implementation; use runtime auto or {other}"

    def __iter__(self) -> Any:
        return iter(self.types.values())

    def __len__(self) -> int:
        return len(self.types)


#: The catalogue of the service's built-in nodes this client was built with.
BUILTIN_CATALOGUE = Catalogue.from_json(CATALOGUE)


# --- the service's rules, one kind of JSON Schema at a time ------------------------------------


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _whole(v: Any) -> bool:
    return _is_number(v) and float(v).is_integer() and -(2**63) <= v < 2**63


def _within(schema: Mapping[str, Any], v: float) -> bool:
    lo, hi = schema.get("minimum"), schema.get("maximum")
    return (lo is None or v >= lo) and (hi is None or v <= hi)


def accepts(schema: Mapping[str, Any], value: Any) -> bool:
    """Whether the service takes ``value`` for a parameter of ``schema``."""
    kind = schema.get("type")
    if "enum" in schema:
        choices = schema["enum"]
        if kind == "integer":
            return _whole(value) and int(value) in choices
        return isinstance(value, str) and value.lower() in {str(c).lower() for c in choices}
    if kind == "integer":
        return _whole(value) and _within(schema, value)
    if kind == "number":
        return _is_number(value) and _within(schema, value)
    if kind == "string":
        return isinstance(value, str) and len(value) <= schema.get("maxLength", math.inf)
    if kind == "boolean":
        return isinstance(value, bool)
    return True


def _n(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _range(schema: Mapping[str, Any]) -> str:
    lo, hi = schema.get("minimum"), schema.get("maximum")
    if lo is not None and hi is not None:
        return f" between {_n(lo)} and {_n(hi)}"
    if lo is not None:
        return f" of at least {_n(lo)}"
    if hi is not None:
        return f" of at most {_n(hi)}"
    return ""


def expected(schema: Mapping[str, Any]) -> str:
    """What a value of ``schema`` is, in the service's words."""
    kind = schema.get("type")
    if "enum" in schema:
        choices = schema["enum"]
        if kind == "integer":
            names = [str(c) for c in choices]
            return f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else "".join(names)
        return "one of " + ", ".join(f'"{c}"' for c in choices)
    if kind == "integer":
        return f"an integer{_range(schema)}"
    if kind == "number":
        return f"a number{_range(schema)}"
    if kind == "string":
        return f"a string of at most {schema.get('maxLength')} characters"
    if kind == "boolean":
        return "true or false"
    return "any JSON value"


def type_name(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, (list, tuple)):
        return "an array"
    return "an object"


def shown(v: Any) -> str:
    """A value as the service quotes it: its JSON text, cut to 40 bytes; a whole number without
    a fraction (``2001``, not ``2001.0``)."""
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e21:
        return str(int(v))
    try:
        text = json.dumps(v, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(v)
    raw = text.encode()
    if len(raw) <= 40:
        return text
    return raw[:40].decode(errors="ignore") + "…"


__all__ = ["BUILTIN_CATALOGUE", "Catalogue", "NodeType", "accepts", "expected"]
