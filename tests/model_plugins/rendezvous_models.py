"""Test-only models for the concurrency tests (loaded with --python-nodes-path tests/model_plugins).

`RendezvousNode` leases an instance of the pooled `rendezvous-test-model` and, inside its
inference, waits (without the GIL) until `parties` inferences are inside at once: it succeeds
only if the server runs that many inferences on different instances in parallel, and fails if
it runs them one after another.

`SharedFirstUseNode` asks for the shared `first-use-test-model`, whose load waits up to
`load_wait_ms` for a second load of it to start at the same time: if the host lets two
concurrent first uses both load it, they meet and it loads twice; if it loads it once, the one
load waits alone and then finishes.
"""

from __future__ import annotations

import threading
from typing import Annotated, Any

from remotemedia_nodes import Node, NodeError, Param, Port, models, node

_lock = threading.Lock()
_barriers: dict[int, threading.Barrier] = {}


def _barrier(parties: int) -> threading.Barrier:
    with _lock:
        return _barriers.setdefault(parties, threading.Barrier(parties))


RENDEZVOUS = models.register(
    models.Model(name="rendezvous-test-model", load=object, description="an instance per inference", pooled=True, pool_size=4)
)


@node("RendezvousNode")
class Rendezvous(Node):
    """Succeeds once `parties` inferences of rendezvous-test-model run at the same time."""

    models = (RENDEZVOUS,)
    inputs = (Port.data("data", "anything"),)
    outputs = (Port.data("data", '{"met": parties}'),)

    def __init__(
        self,
        parties: Annotated[int, Param(2, 4, doc="inferences that must run at once")] = 2,
        timeout_ms: Annotated[int, Param(1, 60000, unit="ms", doc="how long to wait for them")] = 20000,
    ) -> None:
        self.parties, self.timeout_s = parties, timeout_ms / 1000

    def process(self, inputs: dict[str, Any]) -> dict[str, Any]:
        barrier = _barrier(self.parties)
        with models.host.lease(RENDEZVOUS, node_type="RendezvousNode") as lease, lease.inference():
            try:
                barrier.wait(self.timeout_s)
            except threading.BrokenBarrierError:
                barrier.reset()
                raise NodeError(f"{self.parties} inferences did not run at once within {self.timeout_s:g} s") from None
        return {"data": {"met": self.parties}}


_first_use = threading.Barrier(2)


def _load_first_use(load_wait_ms: int = 3000) -> object:
    try:
        _first_use.wait(load_wait_ms / 1000)
    except threading.BrokenBarrierError:
        _first_use.reset()  # loaded alone: what a host that loads once does
    return object()


FIRST_USE = models.register(
    models.Model(name="first-use-test-model", load=_load_first_use, description="loads slowly unless loaded twice at once")
)


@node("SharedFirstUseNode")
class SharedFirstUse(Node):
    """Gets the shared first-use-test-model."""

    models = (FIRST_USE,)
    inputs = (Port.data("data", "anything"),)
    outputs = (Port.data("data", '{"model": id of the instance}'),)

    def __init__(self, load_wait_ms: Annotated[int, Param(1, 60000, unit="ms", doc="load's wait for a twin")] = 3000) -> None:
        self.settings = {"load_wait_ms": load_wait_ms}

    def process(self, inputs: dict[str, Any]) -> dict[str, Any]:
        with models.host.inference(FIRST_USE, "SharedFirstUseNode"):
            instance = models.host.get(FIRST_USE, self.settings)
        return {"data": {"model": id(instance)}}
