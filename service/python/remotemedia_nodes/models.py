"""Model hosting: models load once per server process and are shared by every request and stream.

A node asks the host for a loaded model instead of loading one in ``__init__``::

    from remotemedia_nodes import models

    RECOGNISER = models.register(models.Model(
        name="pocketsphinx-en-us",
        load=lambda fwdflat=False: pocketsphinx.Decoder(fwdflat=fwdflat),
        pooled=True,          # a Decoder holds one utterance's state and is not thread-safe
        pool_size=2,
    ))

    class Recognise(Node):
        models = (RECOGNISER,)

        def process(self, inputs):
            # Leased first: a busy pool runs the whole call again.
            with models.host.lease(RECOGNISER, {"fwdflat": False}, node_type="Recognise") as lease:
                with lease.inference() as decoder:
                    decoder.process_raw(...)
            ...

Two kinds of model:

- **Shared** (``pooled=False``): thread-safe and stateless. :meth:`ModelHost.get` returns the one
  instance per settings, loading it on first use; concurrent first uses load it once.
- **Pooled** (``pooled=True``): an instance carries per-stream state or must not be used by two
  threads at once. The host keeps at most ``pool_size`` instances of the model (whatever their
  settings; the configuration's ``model_pools`` overrides the size), loading them as demand
  grows, and a node *leases* one only while it needs it: a recogniser for one utterance, a
  voice activity detector for one stream. So memory grows with the pool size, not with the
  number of sessions.

When every instance is leased, :meth:`ModelHost.lease` raises :class:`ModelBusy`: the server
puts the call aside (no Python worker waits), and runs it again when an instance is released,
for at most ``model_wait_ms``; then the call fails with :class:`ModelPoolExhausted`, which the
client receives as ``ERROR_TYPE_RESOURCE_LIMIT`` with a retry delay. Because the call runs
again from its start, a node takes its lease **before** it changes its own state in that call.
:meth:`ModelHost.try_lease` never raises :class:`ModelBusy`: it answers ``None``, for nodes that
can hold their input back (bounded) and try again on the next chunk.

Loads, load times, instances in use, waits and inference times are reported to the server's
Prometheus metrics (``remotemedia_model_*``, see docs/operations.md).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from remotemedia_nodes.errors import NodeError

T = TypeVar("T")

#: How long a caller waits for a free pooled instance when the server configures nothing.
DEFAULT_WAIT_S = 2.0


class ModelBusy(Exception):
    """Every instance of a pooled model is leased. Raised by :meth:`ModelHost.lease`; the server
    runs the call again once an instance is released (or fails it after ``model_wait_ms``).
    Not an error a node should catch."""

    def __init__(self, model: str, generation: int, pool_size: int) -> None:
        super().__init__(f"all {pool_size} instances of model {model} are in use")
        self.model = model
        #: The pool's release count when the call found it busy: the server waits for a later one.
        self.generation = generation
        self.pool_size = pool_size


class ModelPoolExhausted(NodeError):
    """No instance of a pooled model became free within ``model_wait_ms``: reported to the
    client as ``ERROR_TYPE_RESOURCE_LIMIT`` (RESOURCE_EXHAUSTED with a retry delay)."""

    def __init__(self, model: str, pool_size: int, waited_s: float, retry_after_s: float) -> None:
        super().__init__(
            f"model {model}: all {pool_size} instances stayed in use for {waited_s * 1000:.0f} ms (model_wait_ms); "
            f"retry in {retry_after_s * 1000:.0f} ms, or raise model_pools for {model}"
        )
        self.model = model
        self.pool_size = pool_size
        self.retry_after_s = retry_after_s


class ModelLoadError(Exception):
    """A model failed to load; the message names it and gives the cause."""


@dataclass(frozen=True)
class Model(Generic[T]):
    """A model nodes share: its name, how to load one instance, and how instances are shared.

    Attributes:
        name: how configuration (``preload_models``, ``model_pools``) and metrics name it.
        load: builds one instance from keyword settings (the node's model-related parameters).
        description: one line for the documentation and start-up errors.
        pooled: instances carry per-user state or are not thread-safe: they are leased.
        pool_size: the most instances of a pooled model, unless ``model_pools`` says otherwise.
        reset: readies a returned instance for its next user (e.g. clears recurrent state).
        preload_settings: the settings ``preload_models`` loads it with (the nodes' defaults).
    """

    name: str
    load: Callable[..., T]
    description: str = ""
    pooled: bool = False
    pool_size: int = 1
    reset: Callable[[T], None] | None = None
    preload_settings: Mapping[str, Any] = field(default_factory=dict)


def _no_hook(*_args: Any) -> None:
    return None


def _key(settings: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(settings.items()))


class _Slot:
    """One loaded instance of a pooled model."""

    def __init__(self, settings: tuple[tuple[str, Any], ...], instance: Any) -> None:
        self.settings = settings
        self.instance = instance
        self.leased = False


class Lease(Generic[T]):
    """One pooled instance, lent to one node until :meth:`release` (idempotent)."""

    def __init__(self, pool: _Pool, slot: _Slot, node_type: str) -> None:
        self._pool = pool
        self._slot: _Slot | None = slot
        self.node_type = node_type

    @property
    def instance(self) -> T:
        if self._slot is None:
            raise RuntimeError(f"the lease of model {self._pool.model.name} was released")
        return self._slot.instance  # type: ignore[no-any-return]

    @contextmanager
    def inference(self) -> Iterator[T]:
        """Times the model work done inside the block (``remotemedia_model_inference_seconds``)
        and gives the instance."""
        with host.inference(self._pool.model, self.node_type):
            yield self.instance

    def __enter__(self) -> Lease[T]:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()

    def release(self) -> None:
        if self._slot is not None:
            slot, self._slot = self._slot, None
            self._pool.give_back(slot)

    @property
    def released(self) -> bool:
        return self._slot is None


class _Pool:
    """The instances of one pooled model, whatever their settings."""

    def __init__(self, model: Model[Any], size: int) -> None:
        self.model = model
        self.size = size
        self.slots: list[_Slot] = []
        #: Slots being loaded (counted against the size while loading).
        self.loading = 0
        #: Releases so far: a caller told the pool is busy waits for a later count.
        self.generation = 0
        self.lock = threading.Lock()

    def take(self, settings: tuple[tuple[str, Any], ...]) -> tuple[_Slot | None, bool, int]:
        """An idle instance with `settings`, or room to load one (evicting an idle instance of
        other settings if need be): (slot or None, whether to load, generation)."""
        with self.lock:
            for slot in self.slots:
                if not slot.leased and slot.settings == settings:
                    slot.leased = True
                    return slot, False, self.generation
            if len(self.slots) + self.loading < self.size:
                self.loading += 1
                return None, True, self.generation
            for slot in self.slots:
                if not slot.leased:
                    self.slots.remove(slot)
                    self.loading += 1
                    return None, True, self.generation
            return None, False, self.generation

    def loaded(self, slot: _Slot | None) -> None:
        with self.lock:
            self.loading -= 1
            if slot is not None:
                self.slots.append(slot)
            else:
                self.generation += 1
            count, in_use = len(self.slots), self.in_use()
        host.hooks.record("instances", self.model.name, float(count))
        host.hooks.record("in_use", self.model.name, float(in_use))
        if slot is None:
            host.hooks.released(self.model.name, self.generation)

    def give_back(self, slot: _Slot) -> None:
        if self.model.reset is not None:
            try:
                self.model.reset(slot.instance)
            except Exception:  # noqa: BLE001 - whatever the model's reset raised
                # An instance that cannot be reset is not lent again.
                with self.lock:
                    self.slots.remove(slot)
                slot = None  # type: ignore[assignment]
        with self.lock:
            if slot is not None:
                slot.leased = False
            self.generation += 1
            generation, in_use, count = self.generation, self.in_use(), len(self.slots)
        host.hooks.record("in_use", self.model.name, float(in_use))
        host.hooks.record("instances", self.model.name, float(count))
        host.hooks.released(self.model.name, generation)

    def in_use(self) -> int:
        return sum(1 for s in self.slots if s.leased)


class _Hooks:
    """Where the host reports to: the server installs its own (metrics, wake-ups)."""

    def __init__(self) -> None:
        self.record: Callable[..., None] = _no_hook
        self.released: Callable[[str, int], None] = _no_hook


class ModelHost:
    """The process's models: shared instances, pools and their configuration."""

    def __init__(self) -> None:
        self.models: dict[str, Model[Any]] = {}
        self.hooks = _Hooks()
        self.wait_s = DEFAULT_WAIT_S
        self.sizes: dict[str, int] = {}
        self.preload_names: list[str] = []
        self._shared: dict[tuple[str, tuple[tuple[str, Any], ...]], Any] = {}
        self._shared_locks: dict[tuple[str, tuple[tuple[str, Any], ...]], threading.Lock] = {}
        self._pools: dict[str, _Pool] = {}
        self._lock = threading.Lock()
        #: The node whose call runs on this thread (set by the server around each call), and the
        #: leases taken during its calls, by node: returned when the node is closed, whatever its
        #: own close() did.
        self._caller = threading.local()
        self._held: dict[int, list[Lease[Any]]] = {}

    # -- declaration and configuration -------------------------------------------------------

    def register(self, model: Model[T]) -> Model[T]:
        previous = self.models.get(model.name)
        if previous is not None and previous is not model:
            raise TypeError(f"model {model.name} is registered twice")
        if model.pool_size < 1:
            raise TypeError(f"model {model.name}: pool_size must be at least 1")
        self.models[model.name] = model
        return model

    def configure(self, pools: Mapping[str, int], wait_s: float, preload: list[str]) -> None:
        """Applies the server configuration; unknown model names are refused, all at once."""
        problems = [
            f"{key} names unknown model{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}"
            for key, names in (("model_pools", list(pools)), ("preload_models", preload))
            if (unknown := [f"`{n}`" for n in names if n not in self.models])
        ]
        if problems:
            known = ", ".join(sorted(self.models)) or "none"
            raise ValueError(f"{'; '.join(problems)}; known models: {known}")
        not_pooled = [n for n in pools if not self.models[n].pooled]
        if not_pooled:
            raise ValueError(f"model_pools names {', '.join(not_pooled)}, which are shared, not pooled (one instance serves every user)")
        with self._lock:
            if self._pools:
                raise RuntimeError("models are configured before any is used")
            self.sizes = dict(pools)
            self.wait_s = wait_s
            self.preload_names = list(preload)

    def preload(self) -> None:
        """Loads every model named by ``preload_models``: a shared model once, a pooled one up to
        its pool size. Raises :class:`ModelLoadError` naming the first that fails."""
        for name in self.preload_names:
            model = self.models[name]
            if not model.pooled:
                self.get(model, model.preload_settings)
                continue
            pool = self._pool(model)
            leases = []
            for _ in range(pool.size):
                lease = self.try_lease(model, model.preload_settings, node_type="preload")
                if lease is None:
                    break
                leases.append(lease)
            # Held until all are loaded: one released at once would be found idle by the next.
            for lease in leases:
                lease.release()

    def describe(self) -> list[dict[str, Any]]:
        """Every registered model: its name, kind, pool size and description."""
        return [
            {"name": m.name, "pooled": m.pooled, "pool_size": self.pool_size(m) if m.pooled else 1, "description": m.description}
            for m in sorted(self.models.values(), key=lambda m: m.name)
        ]

    # -- use -----------------------------------------------------------------------------------

    def get(self, model: Model[T], settings: Mapping[str, Any] | None = None) -> T:
        """The shared instance of `model` for `settings`, loaded on first use (once, however
        many callers ask at the same time)."""
        if model.pooled:
            raise TypeError(f"model {model.name} is pooled: lease it")
        key = (model.name, _key(settings or {}))
        found = self._shared.get(key)
        if found is not None:
            return found  # type: ignore[no-any-return]
        with self._lock:
            lock = self._shared_locks.setdefault(key, threading.Lock())
        with lock:
            found = self._shared.get(key)
            if found is None:
                found = self._load(model, settings or {})
                self._shared[key] = found
                host.hooks.record("instances", model.name, float(sum(1 for k in self._shared if k[0] == model.name)))
        return found  # type: ignore[no-any-return]

    def lease(self, model: Model[T], settings: Mapping[str, Any] | None = None, *, node_type: str) -> Lease[T]:
        """An instance of pooled `model` for `settings`, loaded if the pool has room. When every
        instance is leased, raises :class:`ModelBusy`: the server runs the call again when one
        is released, and fails it with ``ERROR_TYPE_RESOURCE_LIMIT`` after ``model_wait_ms``."""
        lease, generation = self._take(model, settings or {}, node_type)
        if lease is None:
            raise ModelBusy(model.name, generation, self._pool(model).size)
        return lease

    def try_lease(self, model: Model[T], settings: Mapping[str, Any] | None = None, *, node_type: str) -> Lease[T] | None:
        """Like :meth:`lease`, but answers ``None`` at once when every instance is in use. A node
        that holds its input back meanwhile bounds that wait by :attr:`wait_s` and then raises
        :class:`ModelPoolExhausted`."""
        return self._take(model, settings or {}, node_type)[0]

    def pool_size(self, model: Model[Any]) -> int:
        """The most instances of pooled `model` (its own size, or the configuration's)."""
        return self.sizes.get(model.name, model.pool_size)

    @property
    def retry_after_s(self) -> float:
        """The retry delay suggested to a caller that found a pool exhausted: half the wait,
        when a lease that just ended would likely be free again."""
        return max(self.wait_s / 2, 0.1)

    @contextmanager
    def inference(self, model: Model[Any], node_type: str) -> Iterator[None]:
        """Times the work of `model` done inside the block for `node_type`
        (``remotemedia_model_inference_seconds``)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.hooks.record("inference", model.name, time.perf_counter() - started, node_type)

    # -- inside ----------------------------------------------------------------------------------

    def _pool(self, model: Model[Any]) -> _Pool:
        if not model.pooled:
            raise TypeError(f"model {model.name} is shared: use get()")
        pool = self._pools.get(model.name)
        if pool is None:
            with self._lock:
                pool = self._pools.setdefault(model.name, _Pool(model, self.pool_size(model)))
        return pool

    def _take(self, model: Model[T], settings: Mapping[str, Any], node_type: str) -> tuple[Lease[T] | None, int]:
        pool = self._pool(model)
        key = _key(settings)
        slot, load, generation = pool.take(key)
        if slot is None and load:
            try:
                slot = _Slot(key, self._load(model, settings))
            except BaseException:
                pool.loaded(None)
                raise
            slot.leased = True
            pool.loaded(slot)
        elif slot is not None:
            host.hooks.record("in_use", model.name, float(pool.in_use()))
        if slot is None:
            return None, generation
        lease: Lease[T] = Lease(pool, slot, node_type)
        caller = getattr(self._caller, "node", None)
        if caller is not None:
            with self._lock:
                # The caller's earlier leases that are back need no keeping (one per utterance
                # of a long stream would add up).
                held = [x for x in self._held.get(id(caller), ()) if not x.released]
                self._held[id(caller)] = [*held, lease]
        return lease, generation

    def calling(self, node: Any) -> _Calling:
        """Marks `node` as the caller of the leases taken inside the ``with`` block (the server
        wraps each call of a node in it), so that :meth:`release_held` can return them."""
        return _Calling(self._caller, node)

    def release_held(self, node: Any) -> None:
        """Returns every lease `node` took that is still out. The server calls this after the
        node's close(): a close() that failed, or a cancel that landed between a lease and its
        bookkeeping in the node, cannot keep a pooled instance from the others."""
        with self._lock:
            leases = self._held.pop(id(node), [])
        for lease in leases:
            lease.release()

    def _load(self, model: Model[T], settings: Mapping[str, Any]) -> T:
        started = time.perf_counter()
        try:
            instance = model.load(**settings)
        except Exception as e:
            raise ModelLoadError(f"model {model.name} failed to load: {type(e).__name__}: {e}") from e
        host.hooks.record("load", model.name, time.perf_counter() - started)
        return instance


class _Calling:
    """The context manager of :meth:`ModelHost.calling`: a plain class, since the server enters
    one per node call and a ``contextlib.contextmanager`` generator costs about twice as much
    (about 2 against 1 µs entered and left, by ``timeit``)."""

    __slots__ = ("_caller", "_node")

    def __init__(self, caller: threading.local, node: Any) -> None:
        self._caller, self._node = caller, node

    def __enter__(self) -> None:
        self._caller.node = self._node

    def __exit__(self, *exc: object) -> None:
        self._caller.node = None


#: The host of this process.
host = ModelHost()


def register(model: Model[T]) -> Model[T]:
    """Declares a model (at import time, next to the nodes that use it)."""
    return host.register(model)


def configure(pools: Mapping[str, int], wait_s: float, preload: list[str]) -> None:
    """What the server calls at start-up with its configuration."""
    host.configure(pools, wait_s, preload)


def preload() -> None:
    """What the server calls before it reports SERVING."""
    host.preload()


def install_hooks(record: Callable[..., None], released: Callable[[str, int], None]) -> None:
    """What the server calls to receive the host's measurements and release wake-ups."""
    host.hooks.record = record
    host.hooks.released = released
