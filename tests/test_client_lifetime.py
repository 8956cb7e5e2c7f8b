"""The Python clients used outside their lifetime: streams never opened, closed clients, and an
``AsyncClient`` made outside the event loop it runs in, or used from a second one."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from conftest import RunningServer, start_server

from remotemedia_client import AsyncClient, AudioResampleNode, Client, GainNode, Pipeline, RemoteMediaError, RetryPolicy, VADNode

# Nothing listens here: these clients must fail before they try to connect.
NOWHERE = "127.0.0.1:1"
NOT_OPEN = r"with client\.stream\(\.\.\.\) as s.*s\.open\(\)"
CHUNK = np.zeros(960, np.float32)  # 20 ms at 48 kHz


def pipeline() -> Pipeline:
    return Pipeline.chain(AudioResampleNode("rs", output_rate=16_000), VADNode("vad"))


def raised_at_once(fn: Callable[[], Any], timeout: float = 5) -> BaseException:
    """What ``fn`` raised, failing if it blocked for ``timeout`` seconds or returned."""
    out: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out.append(e)

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(timeout)
    assert not worker.is_alive(), f"blocked for {timeout} s instead of raising"
    assert out, "returned instead of raising"
    return out[0]


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    s = start_server()
    yield s
    assert s.stop() == 0


# --- streams never opened ------------------------------------------------------------------------


def test_a_stream_never_opened_refuses_send_close_cancel_and_iteration_at_once() -> None:
    client = Client(NOWHERE)
    s = client.stream(pipeline(), sample_rate=48_000)

    def send_twelve() -> None:
        for _ in range(12):
            s.send(CHUNK)

    def close_then_list() -> None:
        s.close()
        list(s)

    for fn in (send_twelve, lambda: next(iter(s)), s.close, close_then_list, s.cancel):
        e = raised_at_once(fn)
        assert isinstance(e, RuntimeError) and re.search(NOT_OPEN, str(e)), repr(e)
    assert s.sent == 0
    client.close()


async def test_an_async_stream_never_opened_refuses_send_close_cancel_and_iteration_at_once() -> None:
    async with AsyncClient(NOWHERE) as client:
        s = client.stream(pipeline(), sample_rate=48_000)

        async def send_twelve() -> None:
            for _ in range(12):
                await s.send(CHUNK)

        async def close_then_list() -> None:
            await s.close()
            _ = [r async for r in s]

        for make in (send_twelve, s.__anext__, s.close, close_then_list, s.cancel):
            with pytest.raises(RuntimeError, match=NOT_OPEN):
                await asyncio.wait_for(make(), 5)
        assert s.sent == 0


# --- closed clients ----------------------------------------------------------------------------


def test_a_closed_client_says_so_with_a_library_error() -> None:
    client = Client(NOWHERE)
    client.close()
    calls: list[Callable[[], Any]] = [
        lambda: client.run(Pipeline.chain(GainNode("g")), CHUNK, sample_rate=48_000),
        client.version,
        client.health,
        lambda: client.stream(pipeline(), sample_rate=48_000).open(),
    ]
    for call in calls:
        with pytest.raises(RemoteMediaError, match="client is closed"):
            call()
    client.close()  # closing again is harmless


async def test_a_closed_async_client_says_so_with_a_library_error() -> None:
    client = AsyncClient(NOWHERE)
    await client.close()
    with pytest.raises(RemoteMediaError, match="client is closed"):
        await client.run(Pipeline.chain(GainNode("g")), CHUNK, sample_rate=48_000)
    with pytest.raises(RemoteMediaError, match="client is closed"):
        await client.version()
    with pytest.raises(RemoteMediaError, match="client is closed"):
        await client.stream(pipeline(), sample_rate=48_000).open()
    await client.close()


# --- event loops ---------------------------------------------------------------------------------


def test_an_async_client_made_outside_the_loop_works_in_it_and_belongs_to_it(server: RunningServer) -> None:
    client = AsyncClient(server.address)  # at module level, as an application would

    async def gain() -> float:
        result = await client.run(Pipeline.chain(GainNode("g", gain_db=6)), np.full(160, 0.25, np.float32), sample_rate=16_000)
        return float(result.output("g").to_numpy()[0])

    assert gain_close_to_half(asyncio.run(gain()))
    # A second asyncio.run is another loop: the client's channel lives in the first one.
    with pytest.raises(RemoteMediaError, match="belongs to one event loop"):
        asyncio.run(gain())

    async def close() -> None:
        await client.close()

    asyncio.run(close())  # closing from another loop once the first has ended is allowed
    with pytest.raises(RemoteMediaError, match="client is closed"):
        asyncio.run(gain())


def gain_close_to_half(x: float) -> bool:
    return abs(x - 0.25 * 10 ** (6 / 20)) < 1e-3


# --- a server that comes back ----------------------------------------------------------------------


class LateProxy:
    """A port that refuses connections until :meth:`open`, then forwards them to ``target``."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"

    def open(self) -> None:
        self.sock.listen()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        host, port = self.target.rsplit(":", 1)
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection((host, int(port)))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            dst.close()

    def close(self) -> None:
        self.sock.close()


def test_a_retry_reaches_a_server_that_starts_listening_between_attempts(server: RunningServer) -> None:
    # Retries 50 ms apart, all within gRPC's default 1 s wait before it dials again after a
    # refused connection: only a client that dials again on its own policy's scale gets through.
    proxy = LateProxy(server.address)
    first_failure = threading.Event()

    class OnRetry(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            first_failure.set()

    handler = OnRetry(level=logging.INFO)
    logger = logging.getLogger("remotemedia_client")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with Client(proxy.address, retry=RetryPolicy(max_attempts=14, initial_backoff=0.05, multiplier=1.0, jitter=0.0)) as client:
            answer: list[object] = []
            worker = threading.Thread(target=lambda: answer.append(client.version(timeout=30)))
            worker.start()
            assert first_failure.wait(10), "the first attempt was refused and retried"
            proxy.open()
            worker.join(30)
        assert answer and answer[0].compatible, "a later attempt reached the server"  # type: ignore[attr-defined]
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        proxy.close()
