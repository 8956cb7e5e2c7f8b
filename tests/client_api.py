"""One awaitable face for ``Client`` and ``AsyncClient``, so each client test body runs against both.

The blocking client's calls run in worker threads (``asyncio.to_thread``), so a test can keep
several calls of either client in flight as tasks.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

from remotemedia_client import AsyncClient, AsyncStream, Client, Result, Stream, StreamStats

Kind = Literal["sync", "async"]
KINDS: tuple[Kind, ...] = ("sync", "async")


class Api:
    """``await api.call("run", pipeline, audio, sample_rate=...)`` for either client."""

    def __init__(self, kind: Kind, address: str, **settings: Any) -> None:
        self.kind = kind
        self.client: Client | AsyncClient = Client(address, **settings) if kind == "sync" else AsyncClient(address, **settings)

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        fn: Callable[..., Any] = getattr(self.client, method)
        if isinstance(self.client, AsyncClient):
            return await fn(*args, **kwargs)
        return await asyncio.to_thread(fn, *args, **kwargs)

    @asynccontextmanager
    async def stream(self, pipeline: Any, **kwargs: Any) -> AsyncIterator[StreamApi]:
        """``async with api.stream(p) as s``: the client's own ``with``/``async with`` block."""
        if isinstance(self.client, AsyncClient):
            async with self.client.stream(pipeline, **kwargs) as a:
                yield StreamApi(a)
        else:
            s = self.client.stream(pipeline, **kwargs)
            await asyncio.to_thread(s.__enter__)
            try:
                yield StreamApi(s)
            except BaseException as e:
                await asyncio.to_thread(s.__exit__, type(e), e, e.__traceback__)
                raise
            await asyncio.to_thread(s.__exit__, None, None, None)

    async def stream_file(self, path: str | os.PathLike[str], pipeline: Any, **kwargs: Any) -> list[Result]:
        if isinstance(self.client, AsyncClient):
            return [r async for r in self.client.stream_file(path, pipeline, **kwargs)]
        client = self.client
        return await asyncio.to_thread(lambda: list(client.stream_file(Path(path), pipeline, **kwargs)))

    async def close(self) -> None:
        if isinstance(self.client, AsyncClient):
            await self.client.close()
        else:
            self.client.close()


_DONE = object()


class StreamApi:
    """A session of either client: ``await s.send(chunk)``, ``await s.next()``, ``await s.results()``."""

    def __init__(self, stream: Stream | AsyncStream) -> None:
        self.stream = stream

    @property
    def sent(self) -> int:
        return self.stream.sent

    @property
    def session_id(self) -> str | None:
        return self.stream.session_id

    @property
    def stats(self) -> StreamStats:
        return self.stream.stats

    async def send(self, chunk: Any, **kwargs: Any) -> int:
        if isinstance(self.stream, AsyncStream):
            return await self.stream.send(chunk, **kwargs)
        return await asyncio.to_thread(self.stream.send, chunk, **kwargs)

    async def close(self) -> None:
        if isinstance(self.stream, AsyncStream):
            await self.stream.close()
        else:
            await asyncio.to_thread(self.stream.close)

    async def cancel(self) -> None:
        if isinstance(self.stream, AsyncStream):
            await self.stream.cancel()
        else:
            await asyncio.to_thread(self.stream.cancel)

    async def next(self) -> Result | None:
        """The next result in sequence order, ``None`` at the end; errors are raised."""
        if isinstance(self.stream, AsyncStream):
            try:
                return await self.stream.__anext__()
            except StopAsyncIteration:
                return None
        stream = self.stream
        item = await asyncio.to_thread(lambda: next(stream, _DONE))
        return None if item is _DONE else item  # type: ignore[return-value]

    async def results(self) -> list[Result]:
        out = []
        while (r := await self.next()) is not None:
            out.append(r)
        return out
