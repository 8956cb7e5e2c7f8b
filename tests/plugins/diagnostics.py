"""Test-only plug-in nodes: loaded by the integration tests with --python-nodes-path, never
shipped in the server's registry."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy
import scipy

from remotemedia_nodes import InvalidInput, Node, Param, Port, TransientError, node


@node("InterpreterInfoNode")
class InterpreterInfo(Node):
    """Reports the interpreter it runs in."""

    def process(self, inputs: dict[str, Any]) -> dict[str, Any]:
        libpython = sorted({line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines() if "libpython" in line})
        return {
            "info": {
                "version": sys.version,
                "prefix": sys.prefix,
                "base_prefix": sys.base_prefix,
                "numpy": numpy.__version__,
                "scipy": scipy.__version__,
                "libpython": libpython,
                "pid": os.getpid(),
            }
        }


@node("ZeroCopyProbeNode")
class ZeroCopyProbe(Node):
    """Describes the numpy array it receives."""

    def process(self, inputs: dict[str, Any]) -> dict[str, Any]:
        a = inputs["input"].samples
        base = a.base
        return {
            "probe": {
                "data_address": a.__array_interface__["data"][0],
                "base_type": type(base).__name__,
                "base_address": getattr(base, "address", None),
                "base_nbytes": getattr(base, "nbytes", None),
                "nbytes": a.nbytes,
                "writeable": bool(a.flags.writeable),
                "owndata": bool(a.flags.owndata),
                "shape": list(a.shape),
                "dtype": str(a.dtype),
            }
        }


@node("SpinNode")
class Spin(Node):
    """Busy-loops in pure Python (holding the GIL except at switch points) for `seconds`
    (forever if negative), writing `marker` when it starts, then passes audio through."""

    def __init__(self, seconds: float = 2.0, marker: str = "") -> None:
        self.seconds = seconds
        self.marker = marker

    def process(self, inputs: dict[str, Any]) -> dict[str, Any]:
        if self.marker:
            Path(self.marker).write_text("spinning")
        end = time.monotonic() + self.seconds
        n = 0
        while self.seconds < 0 or time.monotonic() < end:
            n += 1
        return {"output": inputs["input"], "iterations": n}


@node("GateNode")
class Gate(Node):
    """Writes `marker`, then waits until the file `release` exists, then passes audio through."""

    def __init__(self, marker: str, release: str) -> None:
        self.marker = Path(marker)
        self.release = Path(release)

    def process(self, inputs: dict[str, Any]) -> dict[str, Any]:
        self.marker.write_text("waiting")
        while not self.release.exists():
            time.sleep(0.002)
        return {"output": inputs["input"]}


@node("RaiseNode")
class Raise(Node):
    """Raises `kind` with `message` (for error-path tests); counts its calls in `counter`."""

    KINDS = {"ValueError": ValueError, "RuntimeError": RuntimeError, "TransientError": TransientError, "InvalidInput": InvalidInput}

    def __init__(
        self,
        kind: Literal["ValueError", "RuntimeError", "TransientError", "InvalidInput"] = "RuntimeError",
        message: Annotated[str, Param(max_length=10_000_000, doc="the exception's text")] = "boom",
        counter: str = "",
    ) -> None:
        self.kind = self.KINDS[kind]
        self.message = message
        self.counter = Path(counter) if counter else None

    def process(self, inputs: dict[str, Any]) -> dict[str, Any]:
        if self.counter is not None:
            calls = int(self.counter.read_text()) if self.counter.exists() else 0
            self.counter.write_text(str(calls + 1))
        helper_that_fails(self.kind, self.message)
        return {}


def helper_that_fails(kind: type[BaseException], message: str) -> None:
    raise kind(message)


@node("ToggleNode")
class Toggle(Node):
    """Raises RuntimeError while the file `fail` exists; otherwise writes `marker`, waits
    `seconds` and passes audio through (for circuit-breaker tests)."""

    def __init__(self, fail: str, marker: str = "", seconds: float = 0.0) -> None:
        self.fail = Path(fail)
        self.marker = Path(marker) if marker else None
        self.seconds = seconds

    def process(self, inputs: dict[str, Any]) -> dict[str, Any]:
        if self.fail.exists():
            raise RuntimeError("toggled to fail")
        if self.marker is not None:
            self.marker.write_text("running")
        time.sleep(self.seconds)
        return {"output": inputs["input"]}


@node("FlushFailNode")
class FlushFail(Node):
    """Passes audio through; its flush (a stream's close, the end of a request) raises
    RuntimeError."""

    def process(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return {"output": inputs["input"]}

    def flush(self) -> dict[str, Any]:
        raise RuntimeError("flush failed")


@node("WrongKindNode")
class WrongKind(Node):
    """Returns its input audio on `stats`, which it declares as a data port."""

    outputs = (Port.audio("output"), Port.data("stats"))

    def process(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return {"output": inputs["input"], "stats": inputs["input"]}


@node("DataOutputNode")
class DataOutput(Node):
    """Returns one chosen value on its data port `info` (or on a misspelt `inf`), for the
    checks of data outputs."""

    outputs = (Port.audio("output"), Port.data("info"))

    def __init__(self, mode: Literal["misspelt", "big_int", "surrogate", "nan", "none", "max_u64"]) -> None:
        self.mode = mode

    def process(self, inputs: dict[str, Any]) -> dict[str, Any] | None:
        values: dict[str, Any] = {
            "big_int": {"info": {"n": 2**80}},
            "surrogate": {"info": ["ok", "\ud800"]},
            "nan": {"info": [float("nan"), float("inf"), numpy.float32("-inf"), 1.5]},
            "max_u64": {"info": [2**64 - 1, -(2**63)]},
            "misspelt": {"inf": 1},
            "none": None,
        }
        return values[self.mode]


@node("GilHogNode")
class GilHog(Node):
    """Writes `marker`, then sums `range(n)` in one C call, which holds the GIL and cannot be
    interrupted until it returns (minutes for the default)."""

    def __init__(self, marker: str, n: int = 10**12) -> None:
        self.marker = Path(marker)
        self.n = n

    def process(self, inputs: dict[str, Any]) -> dict[str, Any]:
        self.marker.write_text("summing")
        return {"output": inputs["input"], "sum": sum(range(self.n))}


@node("PrintNode")
class Print(Node):
    """Prints `text` with print(), then writes it again with no newline, then passes audio
    through (for log-stream tests)."""

    def __init__(self, text: str = "printed by a node") -> None:
        self.text = text

    def process(self, inputs: dict[str, Any]) -> dict[str, Any]:
        print(self.text)
        sys.stdout.write(self.text)
        sys.stdout.flush()
        return {"output": inputs["input"]}
