"""The parameter rules of the service's built-in node types, applied on the client side so a
pipeline is checked before it is sent (the service applies the same rules)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class _Param:
    kind: Literal["int", "number", "choice"]
    required: bool = False
    low: float = -math.inf
    high: float = math.inf
    choices: tuple[Any, ...] = ()

    def problem(self, value: Any) -> str | None:
        if self.kind == "choice":
            ok = isinstance(value, str) and value.lower() in self.choices if isinstance(self.choices[0], str) else value in self.choices
            shown = ", ".join(f'"{c}"' if isinstance(c, str) else str(c) for c in self.choices)
            return None if ok else f"must be one of {shown}, got {value!r}"
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if self.kind == "int":
            if not is_number or float(value) != int(value) or not self.low <= value <= self.high:
                return f"must be an integer between {_n(self.low)} and {_n(self.high)}, got {value!r}"
        elif not is_number or not self.low <= value <= self.high:
            where = "" if math.isinf(self.low) and math.isinf(self.high) else f" between {_n(self.low)} and {_n(self.high)}"
            return f"must be a finite number{where}, got {value!r}"
        return None


def _n(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


Extra = Callable[[Mapping[str, Any]], list[tuple[str, str]]]


def _one_of(a: str, b: str, *, required: bool) -> Extra:
    def check(params: Mapping[str, Any]) -> list[tuple[str, str]]:
        if params.get(a) is not None and params.get(b) is not None:
            return [(b, f"cannot be combined with `{a}`; give one of them")]
        if required and params.get(a) is None and params.get(b) is None:
            return [(a, f"or `{b}` is required")]
        return []

    return check


def _band(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    low, high = params.get("low_hz"), params.get("high_hz")
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
    if numbers and high <= low:  # type: ignore[operator]
        return [("high_hz", f"must be above low_hz ({low}), got {high}")]
    return []


_RATE = _Param("int", low=1_000, high=768_000)
_RULES: dict[str, tuple[dict[str, _Param], Extra | None]] = {
    "AudioResampleNode": (
        {
            "output_rate": _Param("int", required=True, low=1_000, high=768_000),
            "input_rate": _RATE,
            "quality": _Param("choice", choices=("low", "medium", "high")),
        },
        None,
    ),
    "VADNode": (
        {
            "threshold_db": _Param("number", low=-100, high=0),
            "frame_ms": _Param("choice", choices=(10, 20, 30)),
            "min_speech_ms": _Param("int", low=0, high=10_000),
            "min_silence_ms": _Param("int", low=0, high=10_000),
        },
        None,
    ),
    "FormatConverterNode": ({"target_format": _Param("choice", required=True, choices=("f32", "i16", "i32"))}, None),
    "ChannelMixerNode": ({"output_channels": _Param("int", required=True, low=1, high=256)}, None),
    "AudioChunkerNode": (
        {"chunk_samples": _Param("int", low=1, high=10_000_000), "chunk_ms": _Param("int", low=1, high=600_000)},
        _one_of("chunk_samples", "chunk_ms", required=True),
    ),
    "GainNode": (
        {"gain_db": _Param("number", low=-120, high=60), "gain": _Param("number", low=0, high=1000)},
        _one_of("gain_db", "gain", required=False),
    ),
    "PassThroughNode": ({}, None),
    "BandpassFilterNode": (
        {
            "low_hz": _Param("number", required=True, low=1e-9),
            "high_hz": _Param("number", required=True, low=1e-9),
            "order": _Param("int", low=1, high=12),
        },
        _band,
    ),
    "LoudnessNode": ({}, None),
}
#: The service's short names for its native nodes.
ALIASES = {
    "AudioResample": "AudioResampleNode",
    "VAD": "VADNode",
    "FormatConverter": "FormatConverterNode",
    "ChannelMixer": "ChannelMixerNode",
    "AudioChunker": "AudioChunkerNode",
    "Gain": "GainNode",
    "PassThrough": "PassThroughNode",
}
#: The built-in node types this client knows the parameters of.
BUILTIN_NODE_TYPES = tuple(_RULES)


def check_params(node_type: str, params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(param, problem)`` for each parameter of a built-in node type that the service would
    refuse; nothing for other types (plug-ins check their own parameters on the server)."""
    rules = _RULES.get(ALIASES.get(node_type, node_type))
    if rules is None:
        return []
    spec, extra = rules
    out = []
    for name, value in params.items():
        rule = spec.get(name)
        if rule is None:
            known = ", ".join(f"`{k}`" for k in spec) or "none"
            out.append((name, f"is not a parameter of this node (parameters: {known})"))
        elif value is None:
            if rule.required:
                out.append((name, "is required"))
        elif (problem := rule.problem(value)) is not None:
            out.append((name, problem))
    out += [(name, "is required") for name, rule in spec.items() if rule.required and name not in params]
    if extra is not None:
        out += extra(params)
    return out
