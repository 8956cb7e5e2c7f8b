"""Pipelines as Python objects: nodes, connections, client-side validation and the JSON manifest.

>>> p = Pipeline("quieter")
>>> src = p.add(Node("PassThroughNode", id="in"))
>>> gain = src >> Node("GainNode", id="gain", gain_db=-6)
>>> [(c.source, c.target) for c in p.connections]
[('in', 'gain')]

The JSON form is the manifest of the executor's data model (``params`` as a JSON object,
``runtime_hint`` in lower case, ``edges`` naming both ports, flat ``config``)::

    {"version": "v1", "metadata": {"name": "quieter"},
     "nodes": [{"id": "in", "node_type": "PassThroughNode", "params": {}, "runtime_hint": "auto"},
               {"id": "gain", "node_type": "GainNode", "params": {"gain_db": -6}, "runtime_hint": "auto"}],
     "edges": [{"from": "in", "to": "gain", "output_key": "output", "input_key": "input"}]}

Reading also accepts ``type`` for ``node_type``, ``connections`` for ``edges``, ``params`` as
JSON text, ``runtime_hint`` as ``"RUNTIME_HINT_AUTO"`` or a number, versions ``"1.0"`` and
``"v1"``, and ``config.retry`` as an object (the protobuf JSON mapping, as grpcurl writes it).
"""

from __future__ import annotations

import enum
import itertools
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, overload

import numpy as np

from remotemedia_client import pb
from remotemedia_client.catalogue import BUILTIN_CATALOGUE, Catalogue
from remotemedia_client.errors import ValidationError, Violation

#: The manifest schema version the service accepts.
MANIFEST_VERSION = "v1"
#: Port names a connection uses when none are given.
OUTPUT, INPUT = "output", "input"

N = TypeVar("N", bound="Node")


class Runtime(str, enum.Enum):
    """Where a node runs: ``AUTO`` prefers the native implementation, ``RUST`` requires it,
    ``CPYTHON`` requires the Python one (run by the server's embedded interpreter)."""

    AUTO = "auto"
    RUST = "rust"
    CPYTHON = "cpython"

    @classmethod
    def parse(cls, value: Runtime | str | int | None) -> Runtime:
        if isinstance(value, Runtime):
            return value
        if value is None:
            return cls.AUTO
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise TypeError(f"runtime must be a Runtime, its name or its RuntimeHint number, got {value!r}")
        if isinstance(value, int):
            name = pb.RuntimeHint.Name(value) if value in pb.RuntimeHint.values() else str(value)
            return _RUNTIME_FROM_PB.get(value) or _unsupported_runtime(name)
        key = value.strip().lower().removeprefix("runtime_hint_")
        return _RUNTIME_NAMES.get(key) or _unsupported_runtime(value)

    def to_pb(self) -> int:
        return {Runtime.AUTO: pb.RUNTIME_HINT_AUTO, Runtime.RUST: pb.RUNTIME_HINT_RUST, Runtime.CPYTHON: pb.RUNTIME_HINT_CPYTHON}[self]


_RUNTIME_FROM_PB: dict[int, Runtime] = {
    pb.RUNTIME_HINT_UNSPECIFIED: Runtime.AUTO,
    pb.RUNTIME_HINT_AUTO: Runtime.AUTO,
    pb.RUNTIME_HINT_RUST: Runtime.RUST,
    pb.RUNTIME_HINT_CPYTHON: Runtime.CPYTHON,
}


_RUNTIME_NAMES = {
    "": Runtime.AUTO,
    "auto": Runtime.AUTO,
    "unspecified": Runtime.AUTO,
    "rust": Runtime.RUST,
    "native": Runtime.RUST,
    "cpython": Runtime.CPYTHON,
    "python": Runtime.CPYTHON,
}


def _unsupported_runtime(name: str) -> Runtime:
    raise ValidationError.of([Violation("runtime_hint", f"runtime {name!r} is not supported; use auto, rust or cpython")])


def _snake(node_type: str) -> str:
    base = node_type.removesuffix("Node") or node_type
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", base).lower()


class Port:
    """One named port of a node, for connecting ports other than ``output`` → ``input``:
    ``vad["segments"] >> sink["data"]``."""

    __slots__ = ("name", "node")

    def __init__(self, node: Node, name: str) -> None:
        self.node = node
        self.name = name

    def __rshift__(self, other: Node | Port) -> Node:
        target, input_key = (other.node, other.name) if isinstance(other, Port) else (other, INPUT)
        _pipeline_of(self.node, target).connect(self.node, target, output_key=self.name, input_key=input_key)
        return target

    def __repr__(self) -> str:
        return f"{self.node.id}[{self.name!r}]"


class _ContainsItselfError(Exception):
    """A value holds a mapping or list inside itself."""


def plain(value: Any) -> Any:
    """``value`` with numpy scalars and arrays, at any depth, as the Python numbers and lists
    they hold (what JSON takes). A value with a mapping or list that contains itself is left as
    it is, for the check before sending to name."""

    def convert(v: Any, around: tuple[int, ...]) -> Any:
        if isinstance(v, np.generic):
            return v.item()
        if isinstance(v, np.ndarray):
            return v.tolist()
        if isinstance(v, (Mapping, list, tuple)):
            if id(v) in around:
                raise _ContainsItselfError
            inner = (*around, id(v))
            return {k: convert(x, inner) for k, x in v.items()} if isinstance(v, Mapping) else [convert(x, inner) for x in v]
        return v

    try:
        return convert(value, ())
    except _ContainsItselfError:
        return value


class Node:
    """A node of any registered type: ``Node("GainNode", id="gain", gain_db=-6)``.

    Parameters are keyword arguments (or ``params={...}`` for names that clash with the
    constructor's). ``runtime`` says where the node runs (:class:`Runtime` or its name:
    ``"auto"``, ``"rust"``, ``"cpython"``); the manifest calls it ``runtime_hint``, and
    ``runtime_hint=`` here raises ``TypeError`` pointing at ``runtime=``. Without an ``id`` the
    node gets one from its type when it is added to a pipeline (``GainNode`` → ``gain``, then
    ``gain_2``, ...). The typed classes in :mod:`remotemedia_client.nodes` spell out the
    built-in nodes' parameters.
    """

    def __init__(
        self,
        node_type: str,
        id: str | None = None,
        *,
        runtime: Runtime | str = Runtime.AUTO,
        params: Mapping[str, Any] | None = None,
        **kw_params: Any,
    ) -> None:
        if "runtime_hint" in kw_params:
            raise TypeError(
                f"runtime_hint is the manifest's name for where a node runs; pass runtime={kw_params['runtime_hint']!r} "
                "(auto, rust or cpython), or params={'runtime_hint': ...} for a node parameter of that name"
            )
        if not isinstance(node_type, str):
            raise TypeError(f"node_type must be a string, got {type(node_type).__name__}")
        if id is not None and not isinstance(id, str):
            raise TypeError(f"a node id must be a string or None, got {type(id).__name__}")
        self.type = node_type
        self.id: str = id or ""
        self.runtime = Runtime.parse(runtime)
        # numpy numbers (a rate or a gain worked out in numpy) are the Python numbers they hold;
        # None is unset, as the service reads null, and is left out of the manifest.
        self.params: dict[str, Any] = {k: plain(v) for k, v in {**(params or {}), **kw_params}.items() if v is not None}
        self.pipeline: Pipeline | None = None

    def __getitem__(self, port: str) -> Port:
        return Port(self, port)

    @overload
    def __rshift__(self, other: N) -> N: ...
    @overload
    def __rshift__(self, other: Port) -> Node: ...
    @overload
    def __rshift__(self, other: Sequence[N]) -> list[N]: ...
    def __rshift__(self, other: Node | Port | Sequence[N]) -> Node | list[N]:
        """``a >> b`` connects a's ``output`` to b's ``input`` and returns b, so chains read
        ``a >> b >> c``; ``a >> [b, c]`` fans out. b joins a's pipeline if it is in none."""
        if isinstance(other, Port):
            return self[OUTPUT] >> other
        if isinstance(other, Node):
            _pipeline_of(self, other).connect(self, other)
            return other
        targets = list(other)
        for t in targets:
            _pipeline_of(self, t).connect(self, t)
        return targets

    def __rrshift__(self, other: Sequence[Node]) -> Node:
        """``[a, b] >> c``: fan-in (audio into one port is mixed, data collected)."""
        for source in other:
            _pipeline_of(source, self).connect(source, self)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "node_type": self.type, "params": dict(self.params), "runtime_hint": self.runtime.value}

    def __repr__(self) -> str:
        params = "".join(f", {k}={v!r}" for k, v in self.params.items())
        runtime = f", runtime={self.runtime.value!r}" if self.runtime is not Runtime.AUTO else ""
        return f"{type(self).__name__}({self.type!r}, id={self.id!r}{params}{runtime})"


def _pipeline_of(a: Node, b: Node) -> Pipeline:
    if a.pipeline is not None and b.pipeline is not None and a.pipeline is not b.pipeline:
        raise ValueError(f"nodes {a.id!r} and {b.id!r} belong to different pipelines")
    pipeline = a.pipeline or b.pipeline
    if pipeline is None:
        raise ValueError("add a node to a Pipeline before connecting it: `pipeline.add(node)`")
    for n in (a, b):
        if n.pipeline is None:
            pipeline.add(n)
    return pipeline


@dataclass(frozen=True)
class Connection:
    """An edge from ``source``'s ``output_key`` port to ``target``'s ``input_key`` port."""

    source: str
    target: str
    output_key: str = OUTPUT
    input_key: str = INPUT

    def to_dict(self) -> dict[str, Any]:
        return {"from": self.source, "to": self.target, "output_key": self.output_key, "input_key": self.input_key}


_BACKOFFS = {"exponential": 1, "fixed": 2, "none": 3}


@dataclass(frozen=True)
class PipelineConfig:
    """How the service runs the pipeline; ``None`` leaves the service default.

    The service retries failing nodes (``max_retries`` after the first failure, default 3,
    with ``backoff`` delays from ``initial_delay_ms``, default 100 ms, times ``multiplier``,
    default 2), and opens a node type's circuit breaker after ``circuit_breaker_threshold``
    consecutive failures (default 5, 0 disables it).
    """

    enable_metrics: bool | None = None
    max_retries: int | None = None
    backoff: str | None = None
    initial_delay_ms: int | None = None
    multiplier: float | None = None
    circuit_breaker_threshold: int | None = None

    def violations(self) -> list[Violation]:
        """Every setting of the wrong type or outside the service's range (the wire's field names)."""

        def whole(value: object, low: int, high: int) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high

        def number(value: object, low: float, high: float) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high

        checks = (
            ("config.enable_metrics", self.enable_metrics, isinstance(self.enable_metrics, bool), "must be true or false"),
            ("config.retry.max_retries", self.max_retries, whole(self.max_retries, 0, 10), "must be a whole number from 0 to 10"),
            ("config.retry.backoff", self.backoff, self.backoff in _BACKOFFS, f"must be one of {', '.join(_BACKOFFS)}"),
            (
                "config.retry.initial_delay_ms",
                self.initial_delay_ms,
                whole(self.initial_delay_ms, 0, 30_000),
                "must be a whole number from 0 to 30000",
            ),
            ("config.retry.multiplier", self.multiplier, number(self.multiplier, 1, 10), "must be a number from 1 to 10"),
            (
                "config.circuit_breaker_threshold",
                self.circuit_breaker_threshold,
                whole(self.circuit_breaker_threshold, 0, 2**32 - 1),
                "must be a whole number from 0 to 4294967295",
            ),
        )
        return [Violation(field, f"{rule}, got {value!r}") for field, value, ok, rule in checks if value is not None and not ok]

    def is_default(self) -> bool:
        return self == PipelineConfig()

    def to_dict(self) -> dict[str, Any]:
        """The settings that are set, flat (``retry_policy`` is the backoff)."""
        fields = (
            ("enable_metrics", self.enable_metrics),
            ("retry_policy", self.backoff),
            ("max_retries", self.max_retries),
            ("initial_delay_ms", self.initial_delay_ms),
            ("multiplier", self.multiplier),
            ("circuit_breaker_threshold", self.circuit_breaker_threshold),
        )
        return {k: v for k, v in fields if v is not None}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PipelineConfig:
        """Reads the flat form, or the protobuf form with a nested ``retry`` object."""
        retry = d.get("retry")
        nested: Mapping[str, Any] = retry if isinstance(retry, Mapping) else {}
        backoff = nested.get("backoff", d.get("retry_policy", d.get("backoff")))
        if isinstance(backoff, str):
            backoff = backoff.lower().removeprefix("backoff_")
        return cls(
            enable_metrics=d.get("enable_metrics"),
            max_retries=nested.get("max_retries", d.get("max_retries")),
            backoff=backoff,
            initial_delay_ms=nested.get("initial_delay_ms", d.get("initial_delay_ms")),
            multiplier=nested.get("multiplier", d.get("multiplier")),
            circuit_breaker_threshold=d.get("circuit_breaker_threshold"),
        )

    def to_pb(self) -> pb.PipelineConfig | None:
        if self.is_default():
            return None
        config = pb.PipelineConfig()
        if self.enable_metrics is not None:
            config.enable_metrics = self.enable_metrics
        if self.circuit_breaker_threshold is not None:
            config.circuit_breaker_threshold = self.circuit_breaker_threshold
        if self.max_retries is not None:
            config.retry.max_retries = self.max_retries
        if self.backoff is not None:
            config.retry.backoff = _BACKOFFS.get(self.backoff, 0)  # type: ignore[assignment]
        if self.initial_delay_ms is not None:
            config.retry.initial_delay_ms = self.initial_delay_ms
        if self.multiplier is not None:
            config.retry.multiplier = self.multiplier
        return config

    @classmethod
    def from_pb(cls, config: pb.PipelineConfig) -> PipelineConfig:
        r = config.retry
        names = {v: k for k, v in _BACKOFFS.items()}
        return cls(
            enable_metrics=config.enable_metrics if config.HasField("enable_metrics") else None,
            max_retries=r.max_retries if r.HasField("max_retries") else None,
            backoff=names.get(r.backoff),
            initial_delay_ms=r.initial_delay_ms if r.HasField("initial_delay_ms") else None,
            multiplier=r.multiplier if r.HasField("multiplier") else None,
            circuit_breaker_threshold=config.circuit_breaker_threshold if config.HasField("circuit_breaker_threshold") else None,
        )


@dataclass
class Pipeline:
    """A directed acyclic graph of nodes, sent to the service as a ``PipelineManifest``."""

    name: str = "pipeline"
    description: str = ""
    config: PipelineConfig = field(default_factory=PipelineConfig)
    nodes: list[Node] = field(default_factory=list)
    connections: list[Connection] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("name", "description"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"a pipeline's {name} must be a string, got {type(getattr(self, name)).__name__}")
        if not isinstance(self.config, PipelineConfig):
            raise TypeError(f"config must be a PipelineConfig, got {type(self.config).__name__}")
        pending, self.nodes = self.nodes, []
        for n in pending:
            self.add(n)

    @classmethod
    def chain(cls, *nodes: Node, name: str = "pipeline", config: PipelineConfig | None = None) -> Pipeline:
        """A linear pipeline: each node feeds the next."""
        p = cls(name=name, config=config or PipelineConfig())
        for n in nodes:
            p.add(n)
        for a, b in itertools.pairwise(nodes):
            p.connect(a, b)
        return p

    def add(self, node: N) -> N:
        """Adds ``node`` (giving it an id from its type if it has none) and returns it."""
        if not isinstance(node, Node):
            raise TypeError(f"only a Node can be added to a pipeline, got {type(node).__name__}")
        if node.pipeline is self:
            return node
        if node.pipeline is not None:
            raise ValueError(f"node {node.id!r} already belongs to another pipeline")
        if not node.id:
            base = _snake(node.type)
            taken = {n.id for n in self.nodes}
            node.id = base
            n = 2
            while node.id in taken:
                node.id = f"{base}_{n}"
                n += 1
        node.pipeline = self
        self.nodes.append(node)
        return node

    def _adopt(self, nodes: Iterable[Node]) -> None:
        """Takes nodes read from a manifest as they are: ids stay as written, even when empty
        or duplicated, so validation reports them."""
        for n in nodes:
            n.pipeline = self
            self.nodes.append(n)

    def connect(self, source: Node | str, target: Node | str, *, output_key: str = OUTPUT, input_key: str = INPUT) -> Connection:
        """Connects ``source``'s ``output_key`` port to ``target``'s ``input_key`` port."""
        for n in (source, target):
            if isinstance(n, Node):
                self.add(n)
        c = Connection(_id(source), _id(target), output_key or OUTPUT, input_key or INPUT)
        self.connections.append(c)
        return c

    def node(self, node_id: str) -> Node:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(f"no node {node_id!r} in pipeline {self.name!r} (nodes: {', '.join(n.id for n in self.nodes)})")

    __getitem__ = node

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def sources(self) -> list[Node]:
        """Nodes nothing connects into: each needs an input."""
        fed = {c.target for c in self.connections}
        return [n for n in self.nodes if n.id not in fed]

    @property
    def sinks(self) -> list[Node]:
        """Nodes that feed nothing: their outputs are the results."""
        feeding = {c.source for c in self.connections}
        return [n for n in self.nodes if n.id not in feeding]

    # --- validation -------------------------------------------------------------------------

    def violations(self, catalogue: Catalogue = BUILTIN_CATALOGUE) -> list[Violation]:
        """Every rule the pipeline breaks that can be checked without the server; node
        parameters, and the ports connections join (they must exist and be of one kind, audio
        or data), are checked against ``catalogue`` (the service's built-in nodes by default;
        ``Client.catalogue()`` adds the server's plug-ins)."""
        out: list[Violation] = []
        if not self.nodes:
            out.append(Violation("nodes", "a pipeline needs at least one node"))
        index: dict[str, int] = {}
        #: Nodes whose parameters the service accepts (it checks only their connections' ports).
        planned: set[str] = set()
        for i, n in enumerate(self.nodes):
            if not n.id:
                out.append(Violation(f"nodes[{i}].id", "node ids must not be empty"))
            elif n.id in index:
                out.append(Violation(f"nodes[{i}].id", f"duplicate node id {n.id!r} (also nodes[{index[n.id]}])", n.id))
            else:
                index[n.id] = i
            if not n.type:
                out.append(Violation(f"nodes[{i}].node_type", "node_type must not be empty", n.id or None))
            problems = catalogue.check(n.type, n.params)
            out += [
                Violation(f"nodes[{i}].params.{param}", f"node `{n.id}` ({n.type}): parameter `{param}` {problem}", n.id or None)
                for param, problem in problems
            ]
            unavailable = catalogue.runtime_problem(n.type, n.runtime.value)
            if unavailable is not None:
                out.append(Violation(f"nodes[{i}].runtime_hint", f"node `{n.id}`: {unavailable}", n.id or None))
            if not problems and unavailable is None and index.get(n.id) == i:
                planned.add(n.id)
        seen: dict[tuple[str, str, str, str], int] = {}
        for j, c in enumerate(self.connections):
            for end, node_id in (("from", c.source), ("to", c.target)):
                if node_id not in index:
                    out.append(Violation(f"connections[{j}].{end}", f"no node {node_id!r} in this pipeline"))
            if c.source == c.target:
                out.append(Violation(f"connections[{j}]", f"node {c.source!r} connects to itself", c.source))
            key = (c.source, c.output_key, c.target, c.input_key)
            if key in seen:
                out.append(Violation(f"connections[{j}]", f"duplicate of connections[{seen[key]}]", c.source))
                continue
            seen[key] = j
            # As the service: the ports of a connection between two distinct nodes whose
            # parameters are valid.
            if c.source != c.target and c.source in planned and c.target in planned:
                out += _port_violations(j, c, self.nodes[index[c.source]], self.nodes[index[c.target]], catalogue)
        out += [Violation("connections", f"connections form a cycle: {' → '.join(path)}") for path in self._cycles(index)]
        out += self.config.violations()
        return out

    def _cycles(self, index: Mapping[str, int]) -> list[list[str]]:
        """Each cycle once, as a path starting and ending at its node listed first."""
        graph: dict[str, list[str]] = {n: [] for n in index}
        for c in self.connections:
            if c.source in graph and c.target in graph and c.source != c.target and c.target not in graph[c.source]:
                graph[c.source].append(c.target)
        found: dict[frozenset[str], list[str]] = {}
        state: dict[str, int] = {}  # 1 on the current path, 2 finished
        path: list[str] = []

        def visit(node: str) -> None:
            state[node] = 1
            path.append(node)
            for nxt in graph[node]:
                if state.get(nxt) == 1:
                    cycle = path[path.index(nxt) :]
                    first = min(range(len(cycle)), key=lambda k: index[cycle[k]])
                    ordered = cycle[first:] + cycle[:first]
                    found.setdefault(frozenset(cycle), [*ordered, ordered[0]])
                elif nxt not in state:
                    visit(nxt)
            path.pop()
            state[node] = 2

        for node in sorted(graph, key=index.__getitem__):
            if node not in state:
                visit(node)
        return list(found.values())

    def validate(self, catalogue: Catalogue = BUILTIN_CATALOGUE) -> None:
        """Raises :class:`ValidationError` listing every violation, if there is any."""
        problems = self.violations(catalogue)
        if problems:
            raise ValidationError.of(problems)

    # --- wire and JSON forms ----------------------------------------------------------------

    def _assert_sendable(self) -> None:
        """Raises :class:`ValidationError` naming every parameter JSON cannot carry: NaN or ±inf
        (``json.dumps`` writes ``NaN``, which is not JSON), a value of a type JSON has no form
        for (a set, bytes, a function), a mapping key that is not a string, or a mapping or
        list that contains itself."""
        problems: list[Violation] = []

        def visit(n: Node, param: str, top: str, path: str, value: Any, *, around: tuple[int, ...] = ()) -> None:
            def refuse(what: str) -> None:
                where = "" if path == top else f" (at {path})"
                problems.append(Violation(path, f"node `{n.id}` ({n.type}): parameter `{param}`{where} {what}", n.id or None))

            if isinstance(value, float) and not math.isfinite(value):
                refuse(f"is {'NaN' if math.isnan(value) else ('Infinity' if value > 0 else '-Infinity')}, a number JSON has no form for")
            elif value is None or isinstance(value, (bool, int, float, str)):
                return
            elif not isinstance(value, (Mapping, list, tuple)):
                refuse(f"is a value of type {type(value).__name__}, which JSON has no form for")
            elif id(value) in around:
                refuse("contains itself, which JSON cannot write")
            elif isinstance(value, Mapping):
                for k, v in value.items():
                    if not (k is None or isinstance(k, (str, int, float))):
                        refuse(f"has a key of type {type(k).__name__}: JSON object keys are strings")
                        continue
                    visit(n, param, top, f"{path}.{k}", v, around=(*around, id(value)))
            else:
                for k, v in enumerate(value):
                    visit(n, param, top, f"{path}[{k}]", v, around=(*around, id(value)))

        for i, n in enumerate(self.nodes):
            for param, value in n.params.items():
                visit(n, param, f"nodes[{i}].params.{param}", f"nodes[{i}].params.{param}", value)
        if problems:
            raise ValidationError.of(problems)

    def to_manifest(self) -> pb.PipelineManifest:
        """The ``remotemedia.v1.PipelineManifest`` message; a parameter JSON cannot carry (NaN,
        ±inf) raises :class:`ValidationError` naming it."""
        self._assert_sendable()
        manifest = pb.PipelineManifest(
            version=MANIFEST_VERSION,
            metadata=pb.ManifestMetadata(name=self.name, description=self.description),
            nodes=[
                pb.NodeManifest(
                    id=n.id,
                    node_type=n.type,
                    params=json.dumps(n.params) if n.params else "",
                    runtime_hint=n.runtime.to_pb(),  # type: ignore[arg-type]
                )
                for n in self.nodes
            ],
            connections=[
                pb.Connection(**{"from": c.source, "to": c.target, "output_key": c.output_key, "input_key": c.input_key})
                for c in self.connections
            ],
        )
        config = self.config.to_pb()
        if config is not None:
            manifest.config.CopyFrom(config)
        return manifest

    @classmethod
    def from_manifest(cls, manifest: pb.PipelineManifest) -> Pipeline:
        nodes = []
        problems: list[Violation] = []
        for i, n in enumerate(manifest.nodes):
            try:
                params = json.loads(n.params) if n.params else {}
            except json.JSONDecodeError as e:
                problems.append(Violation(f"nodes[{i}].params", f"params are not valid JSON: {e}", n.id))
                continue
            try:
                runtime = Runtime.parse(int(n.runtime_hint))
            except ValidationError as e:
                problems += [Violation(f"nodes[{i}].runtime_hint", v.description, n.id) for v in e.violations]
                continue
            nodes.append(Node(n.node_type, n.id, runtime=runtime, params=params))
        if problems:
            raise ValidationError.of(problems)
        p = cls(
            name=manifest.metadata.name or "pipeline",
            description=manifest.metadata.description,
            config=PipelineConfig.from_pb(manifest.config),
        )
        p._adopt(nodes)
        p.connections = [Connection(getattr(c, "from"), c.to, c.output_key or OUTPUT, c.input_key or INPUT) for c in manifest.connections]
        return p

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": MANIFEST_VERSION, "metadata": {"name": self.name}}
        if self.description:
            out["metadata"]["description"] = self.description
        out["nodes"] = [n.to_dict() for n in self.nodes]
        out["edges"] = [c.to_dict() for c in self.connections]
        config = self.config.to_dict()
        if config:
            out["config"] = config
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Pipeline:
        """Reads a manifest dictionary; problems with its shape raise :class:`ValidationError`."""
        problems: list[Violation] = []
        version = str(d.get("version", MANIFEST_VERSION))
        if not re.fullmatch(r"v?1(\.\d+){0,2}", version.strip(), flags=re.IGNORECASE):
            problems.append(Violation("version", f"manifest version must be {MANIFEST_VERSION!r}, got {version!r}"))
        meta = d.get("metadata") or {}
        if not isinstance(meta, Mapping):
            problems.append(Violation("metadata", "must be an object"))
            meta = {}
        raw_nodes = d.get("nodes", [])
        if not isinstance(raw_nodes, list):
            problems.append(Violation("nodes", "must be a list"))
            raw_nodes = []
        nodes = []
        for i, raw in enumerate(raw_nodes):
            if not isinstance(raw, Mapping):
                problems.append(Violation(f"nodes[{i}]", "must be an object"))
                continue
            node_id = str(raw.get("id", ""))
            params: Any = raw.get("params") or {}
            if isinstance(params, str):
                try:
                    params = json.loads(params) if params else {}
                except json.JSONDecodeError as e:
                    problems.append(Violation(f"nodes[{i}].params", f"params are not valid JSON: {e}", node_id or None))
                    continue
            if not isinstance(params, Mapping):
                problems.append(Violation(f"nodes[{i}].params", "params must be a JSON object", node_id or None))
                continue
            try:
                runtime = Runtime.parse(raw.get("runtime_hint"))
            except ValidationError as e:
                problems += [Violation(f"nodes[{i}].runtime_hint", v.description, node_id or None) for v in e.violations]
                continue
            except TypeError:
                got = raw.get("runtime_hint")
                rule = f"must be auto, rust or cpython (or its RuntimeHint number), got {got!r}"
                problems.append(Violation(f"nodes[{i}].runtime_hint", rule, node_id or None))
                continue
            node_type = raw.get("node_type", raw.get("type", ""))
            nodes.append(Node(str(node_type), node_id, runtime=runtime, params=params))
        edges_key = "edges" if "edges" in d else "connections"
        raw_edges = d.get(edges_key, [])
        if not isinstance(raw_edges, list):
            problems.append(Violation(edges_key, f"must be a list of connections, got {type(raw_edges).__name__}"))
            raw_edges = []
        connections = []
        for j, raw in enumerate(raw_edges):
            if not isinstance(raw, Mapping) or "from" not in raw or "to" not in raw:
                problems.append(Violation(f"connections[{j}]", "must be an object with `from` and `to`"))
                continue
            keys = {k: raw.get(k) for k in ("output_key", "input_key")}
            bad = [k for k, v in keys.items() if v is not None and not isinstance(v, str)]
            if bad:
                problems += [Violation(f"connections[{j}].{k}", f"must be a port name (a string), got {keys[k]!r}") for k in bad]
                continue
            connections.append(Connection(str(raw["from"]), str(raw["to"]), keys["output_key"] or OUTPUT, keys["input_key"] or INPUT))
        config = d.get("config") or {}
        if not isinstance(config, Mapping):
            problems.append(Violation("config", "must be an object"))
            config = {}
        else:
            problems += PipelineConfig.from_dict(config).violations()
        if problems:
            raise ValidationError.of(problems)
        p = cls(
            name=str(meta.get("name") or d.get("name") or "pipeline"),
            description=str(meta.get("description", "")),
            config=PipelineConfig.from_dict(config),
        )
        p._adopt(nodes)
        p.connections = connections
        return p

    def to_json(self, *, indent: int | None = 2) -> str:
        """The JSON manifest; a parameter JSON cannot carry (NaN, ±inf) raises
        :class:`ValidationError` naming it."""
        self._assert_sendable()
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> Pipeline:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValidationError.of([Violation("manifest", f"not valid JSON: {e}")]) from None
        if not isinstance(data, Mapping):
            raise ValidationError.of([Violation("manifest", "a manifest is a JSON object")])
        return cls.from_dict(data)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the JSON manifest to ``path``."""
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Pipeline:
        """Reads a JSON manifest file."""
        return cls.from_json(Path(path).read_text(encoding="utf-8"))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Pipeline):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, {len(self.nodes)} nodes, {len(self.connections)} connections)"


def _port_violations(j: int, c: Connection, source: Node, target: Node, catalogue: Catalogue) -> list[Violation]:
    """Connection ``j``'s ports, as the service checks them: each end names a port its node
    declares, and both carry the same kind. Ends of a type ``catalogue`` does not know are left
    to the service."""
    out: list[Violation] = []
    kinds: list[str | None] = []
    ends = ((source, c.output_key, "output", "output_key"), (target, c.input_key, "input", "input_key"))
    for node, port, direction, key_field in ends:
        t = catalogue.get(node.type)
        if t is None:
            kinds.append(None)
            continue
        ports = t.outputs if direction == "output" else t.inputs
        kind = next((p.get("kind") for p in ports if p.get("name") == port), None)
        if kind is None:
            names = ", ".join(p.get("name", "") for p in ports)
            out.append(
                Violation(
                    f"connections[{j}].{key_field}",
                    f"node `{node.id}` ({t.name}) has no {direction} port `{port}`; its {direction} ports are: {names}",
                    node.id,
                )
            )
        kinds.append(kind)
    produced, taken = kinds
    if produced is not None and taken is not None and produced != taken:
        out.append(
            Violation(
                f"connections[{j}]",
                f"output port `{c.output_key}` carries {produced}, but input port `{c.input_key}` of node `{target.id}` "
                f"takes {taken}; connect ports of the same kind",
                target.id,
            )
        )
    return out


def input_port_violations(what: str, node: Node, port: str, kind: str, catalogue: Catalogue) -> list[Violation]:
    """The request's ``what`` (``audio_inputs`` or ``data_inputs``) feeds ``node`` on ``port``,
    which must be an input port of ``kind``, as the service checks it. A type ``catalogue`` does
    not know is left to the service."""
    t = catalogue.get(node.type)
    if t is None:
        return []
    field_name = f"{what}[{node.id}]"
    taken = next((p.get("kind") for p in t.inputs if p.get("name") == port), None)
    if taken is None:
        names = ", ".join(p.get("name", "") for p in t.inputs)
        return [
            Violation(field_name, f"{what}: node `{node.id}` ({t.name}) has no input port `{port}`; its input ports are: {names}", node.id)
        ]
    if taken != kind:
        return [Violation(field_name, f"{what}: input port `{port}` of node `{node.id}` takes {taken}, not {kind}", node.id)]
    return []


def _id(node: Node | str) -> str:
    return node.id if isinstance(node, Node) else node


def node_ids(nodes: Iterable[Node | str]) -> list[str]:
    return [_id(n) for n in nodes]
