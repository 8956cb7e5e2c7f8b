"""The asyncio client: :class:`AsyncClient` and its :class:`AsyncStream`, over ``grpc.aio``.

Same methods and semantics as :class:`remotemedia_client.Client`, awaited.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from remotemedia_client import pb
from remotemedia_client._core import (
    DEFAULT_TIMEOUT,
    NOT_OPEN,
    PROTOCOL_VERSION,
    TLS,
    Attempts,
    AudioInput,
    Compression,
    Ended,
    Item,
    ResourceLimits,
    Settings,
    StreamCore,
    check_header_text,
    check_max_pending,
    check_retry,
    check_version,
    execute_request,
    execute_result,
    explain_length_limit,
    unknown_node_types,
)
from remotemedia_client._log import log
from remotemedia_client.audio import AudioBuffer, SampleFormat
from remotemedia_client.catalogue import BUILTIN_CATALOGUE, Catalogue
from remotemedia_client.errors import PipelineCancelledError, RemoteMediaError, ResourceLimitError, from_rpc_error, merge
from remotemedia_client.pipeline import Node, Pipeline
from remotemedia_client.results import Result, StreamStats
from remotemedia_client.retry import RetryPolicy

T = TypeVar("T")
_END = object()


class AsyncClient:
    """An asyncio client for the RemoteMedia service; the arguments are :class:`Client`'s.

    >>> async with AsyncClient() as client:                    # doctest: +SKIP
    ...     result = await client.run(pipeline, audio)

    The client may be made anywhere, at module level too: its ``grpc.aio`` channel is made in
    the event loop that first uses it, and belongs to that loop. Used from another loop (a
    second ``asyncio.run``), it raises :class:`~remotemedia_client.errors.RemoteMediaError`;
    make one client per loop.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        token: str | None = None,
        tls: TLS | bool | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        compression: Compression | None = None,
        retry: RetryPolicy | None = None,
        protocol_version: str = PROTOCOL_VERSION,
        channel_options: Sequence[tuple[str, Any]] | None = None,
    ) -> None:
        self.settings = Settings.build(
            address=address,
            token=token,
            tls=tls,
            timeout=timeout,
            compression=compression,
            retry=retry,
            protocol_version=protocol_version,
            channel_options=channel_options,
        )
        self._catalogue: Catalogue | None = None
        # Made by _bound() in the loop of the first call: grpc.aio objects belong to one loop.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None
        self._health: Any = None
        self._closed = False

    @property
    def address(self) -> str:
        return self.settings.address

    @property
    def channel(self) -> grpc.aio.Channel:
        """The ``grpc.aio`` channel, made in the running event loop on first use."""
        return self._bound()

    @property
    def stub(self) -> Any:
        """The generated ``PipelineServiceStub`` on this client's ``grpc.aio`` channel."""
        self._bound()
        return self._stub

    def _bound(self) -> grpc.aio.Channel:
        """The channel of the running loop: made on first use, refused from any other loop."""
        if self._closed:
            raise RemoteMediaError("the client is closed; make a new AsyncClient to make more calls")
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RemoteMediaError("an AsyncClient makes its calls in a running event loop: await them in a coroutine") from None
        if self._channel is None:
            s = self.settings
            if s.tls is not None:
                self._channel = grpc.aio.secure_channel(s.address, s.tls.credentials(), options=s.options())
            else:
                self._channel = grpc.aio.insecure_channel(s.address, options=s.options())
            self._loop = loop
            self._stub = pb.PipelineServiceStub(self._channel)
            self._health = health_pb2_grpc.HealthStub(self._channel)
        elif loop is not self._loop:
            raise RemoteMediaError(
                "this AsyncClient is used from another event loop than the one it first ran in: an AsyncClient "
                "belongs to one event loop (its grpc.aio channel lives there); make a new AsyncClient in each loop, "
                "for instance one per asyncio.run"
            )
        return self._channel

    async def _call(self, rpc: str, attempt: Callable[[float | None], Awaitable[T]], timeout: float | None, retry: RetryPolicy | None) -> T:
        attempts = Attempts(rpc, self.settings.retry if retry is None else retry, timeout if timeout is not None else self.settings.timeout)
        while True:
            left = attempts.start()
            started = time.monotonic()
            try:
                out = await attempt(left)
                log.debug("call finished", rpc=rpc, attempt=attempts.number, ms=round((time.monotonic() - started) * 1e3, 2))
                return out
            except grpc.aio.AioRpcError as e:
                err, delay = attempts.retry_after(e)
                if delay is None:
                    raise err from None
            await asyncio.sleep(delay)

    # --- pipelines --------------------------------------------------------------------------

    async def run(
        self,
        pipeline: Pipeline | pb.PipelineManifest,
        inputs: AudioInput | Mapping[str, AudioInput] | None = None,
        *,
        sample_rate: int | None = None,
        data: Mapping[str, Any] | None = None,
        output_nodes: Sequence[Node | str] = (),
        limits: ResourceLimits | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
    ) -> Result:
        """Runs ``pipeline`` once; see :meth:`remotemedia_client.Client.run`."""
        catalogue = await self.catalogue(timeout=timeout) if unknown_node_types(pipeline) else BUILTIN_CATALOGUE
        request = execute_request(
            self.settings,
            pipeline,
            inputs,
            sample_rate=sample_rate,
            data=data,
            output_nodes=output_nodes,
            limits=limits,
            catalogue=catalogue,
        )

        async def attempt(t: float | None) -> pb.ExecuteResponse:
            response: pb.ExecuteResponse = await self.stub.ExecutePipeline(
                request, metadata=self.settings.metadata(), timeout=t, compression=self.settings.grpc_compression()
            )
            return response

        try:
            return execute_result(await self._call("ExecutePipeline", attempt, timeout, retry))
        except ResourceLimitError as e:
            raise explain_length_limit(e, request) from None

    async def execute(self, request: pb.ExecuteRequest, *, timeout: float | None = None) -> pb.ExecuteResponse:
        """The raw ``ExecutePipeline`` call; see :meth:`remotemedia_client.Client.execute`."""
        response: pb.ExecuteResponse = await self.stub.ExecutePipeline(
            request,
            metadata=self.settings.metadata(),
            timeout=timeout if timeout is not None else self.settings.timeout,
            compression=self.settings.grpc_compression(),
        )
        return response

    def stream(
        self,
        pipeline: Pipeline | pb.PipelineManifest,
        *,
        source: str | None = None,
        sample_rate: int | None = None,
        timeout: float | None = None,
        max_pending: int = 8,
        retry: RetryPolicy | None = None,
    ) -> AsyncStream:
        """A streaming session, to use as ``async with client.stream(pipeline) as s:``; see
        :meth:`remotemedia_client.Client.stream`."""
        check_max_pending(max_pending)
        if retry is not None:
            check_retry(retry)
        core = StreamCore(pipeline, source=source, sample_rate=sample_rate)
        return AsyncStream(self, core, timeout=timeout, max_pending=max_pending, retry=self.settings.retry if retry is None else retry)

    def stream_call(self, *, timeout: float | None = None) -> grpc.aio.StreamStreamCall[pb.StreamRequest, pb.StreamResponse]:
        """The raw ``StreamPipeline`` call (this client's headers and compression added), for
        driving the protocol message by message with ``write``/``read``. Prefer :meth:`stream`."""
        call: grpc.aio.StreamStreamCall[pb.StreamRequest, pb.StreamResponse] = self.stub.StreamPipeline(
            metadata=self.settings.metadata(), timeout=timeout, compression=self.settings.grpc_compression()
        )
        return call

    async def stream_file(
        self,
        path: str | os.PathLike[str],
        pipeline: Pipeline | pb.PipelineManifest,
        *,
        chunk_ms: float = 20,
        source: str | None = None,
        timeout: float | None = None,
        max_pending: int = 8,
        dtype: SampleFormat = "f32",
    ) -> AsyncIterator[Result]:
        """Streams a sound file through ``pipeline`` in chunks of ``chunk_ms`` and yields the
        results in order; see :meth:`remotemedia_client.Client.stream_file`."""
        chunks = AudioBuffer.iter_file(path, chunk_ms=chunk_ms, dtype=dtype)
        async with self.stream(pipeline, source=source, timeout=timeout, max_pending=max_pending) as s:
            failure: list[BaseException] = []

            async def feed() -> None:
                try:
                    for chunk in chunks:
                        await s.send(chunk)
                    await s.close()
                except asyncio.CancelledError:
                    raise
                except BaseException as e:  # noqa: BLE001 - handed to the consumer below
                    if s.ended:
                        return  # the stream ended first; iterating raises its error
                    failure.append(e)
                    await s.cancel()

            feeder = asyncio.create_task(feed())
            try:
                async for result in s:
                    yield result
            except PipelineCancelledError:
                if failure:
                    raise failure[0] from None
                raise
            finally:
                if not feeder.done():
                    feeder.cancel()
                    await s.cancel()
                await asyncio.gather(feeder, return_exceptions=True)
            if failure:
                raise failure[0]

    # --- service information ----------------------------------------------------------------

    async def version(self, client_version: str | None = None, *, timeout: float | None = None) -> pb.VersionResponse:
        """``GetVersion``; see :meth:`remotemedia_client.Client.version`."""
        if client_version is not None:
            check_header_text(client_version, "client_version")
        request = pb.VersionRequest(client_version=client_version or self.settings.protocol_version)

        async def attempt(t: float | None) -> pb.VersionResponse:
            response: pb.VersionResponse = await self.stub.GetVersion(request, metadata=self.settings.metadata(), timeout=t)
            return response

        return await self._call("GetVersion", attempt, timeout, None)

    async def check_compatibility(self, *, timeout: float | None = None) -> pb.VersionResponse:
        """Raises ``VersionMismatchError`` when the server cannot serve this client's protocol."""
        return check_version(await self.version(timeout=timeout), self.settings.protocol_version)

    async def nodes(self, *, timeout: float | None = None) -> list[str]:
        """Every node type the server runs, sorted."""
        return sorted((await self.version(timeout=timeout)).version_info.supported_node_types)

    async def catalogue(self, *, timeout: float | None = None) -> Catalogue:
        """The server's node catalogue: every node type's parameters, ports and runtimes,
        plug-ins included. Fetched once (``GetVersion``) and kept; ``run`` and ``stream`` use it
        to check pipelines with node types this client was not built with."""
        if self._catalogue is None:
            self._catalogue = BUILTIN_CATALOGUE.merged(Catalogue.from_version((await self.version(timeout=timeout)).version_info))
        return self._catalogue

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The gRPC health status of ``service``; see :meth:`remotemedia_client.Client.health`."""
        self._bound()
        if not isinstance(service, str):
            raise TypeError(f"service must be a string, got {type(service).__name__}")

        async def check(t: float | None) -> str:
            try:
                r = await self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=t)
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.NOT_FOUND:
                    return "SERVICE_UNKNOWN"
                raise
            return str(health_pb2.HealthCheckResponse.ServingStatus.Name(r.status))

        return await self._call("Health.Check", check, timeout, None)

    # --- lifetime ---------------------------------------------------------------------------

    async def close(self) -> None:
        """Closes the channel; calls made afterwards raise
        :class:`~remotemedia_client.errors.RemoteMediaError`. Allowed from another loop only
        once the client's own loop has ended (then there is nothing left to close)."""
        if self._closed:
            return
        if self._channel is not None and self._loop is not None and not self._loop.is_closed():
            channel = self._bound()
            self._closed = True
            await channel.close(None)
        self._closed = True

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncClient({self.settings.address!r})"


class _Outbox:
    """A bounded hand-off from ``send`` to the writer task; ``abort`` wakes everyone."""

    def __init__(self, limit: int) -> None:
        self._items: deque[object] = deque()
        self._cv = asyncio.Condition()
        self._limit = max(1, limit)
        self._aborted = False

    async def put(self, item: object) -> bool:
        async with self._cv:
            await self._cv.wait_for(lambda: len(self._items) < self._limit or self._aborted)
            if self._aborted:
                return False
            self._items.append(item)
            self._cv.notify_all()
            return True

    async def put_final(self, *items: object) -> None:
        async with self._cv:
            if not self._aborted:
                self._items.extend(items)
                self._cv.notify_all()

    async def get(self) -> object:
        async with self._cv:
            await self._cv.wait_for(lambda: bool(self._items))
            item = self._items.popleft()
            self._cv.notify_all()
            return item

    async def abort(self) -> None:
        async with self._cv:
            self._aborted = True
            self._items.clear()
            self._items.append(_END)
            self._cv.notify_all()


async def _status_error(call: Any) -> RemoteMediaError | None:
    """The error a finished ``grpc.aio`` call ended with, or ``None`` for OK."""
    code = await call.code()
    if code == grpc.StatusCode.OK:
        return None
    failed = grpc.aio.AioRpcError(
        code, await call.initial_metadata(), await call.trailing_metadata(), await call.details(), await call.debug_error_string()
    )
    return from_rpc_error(failed)


async def _next(call: Any) -> pb.StreamResponse | None:
    """The next response of a ``grpc.aio`` stream, or ``None`` at its end."""
    response = await call.read()
    return response if isinstance(response, pb.StreamResponse) else None


class AsyncStream:
    """An asyncio streaming session (see :meth:`AsyncClient.stream`).

    ``await send(chunk)`` waits while ``max_pending`` chunks are queued, so a slow pipeline
    slows the sender; results are read in the background and come out of ``async for`` in
    sequence order. A node failing on one chunk raises ``NodeExecutionError`` (with
    ``.sequence``) from the iteration; the session goes on, so iteration may continue.
    Results wait in memory until they are read, however many the application sends first, so
    that sending everything before reading cannot deadlock: an application streaming for long
    without reading holds every result (about the size of what it sent); iterate as you send.

    A stream does nothing until it is opened (``async with``, or :meth:`open`): before that,
    ``send``, ``close``, ``cancel`` and iteration raise ``RuntimeError``.
    """

    def __init__(self, client: AsyncClient, core: StreamCore, *, timeout: float | None, max_pending: int, retry: RetryPolicy) -> None:
        self._client = client
        self._core = core
        self._timeout = timeout
        self._max_pending = max_pending
        self._retry = retry
        self._outbox = _Outbox(max_pending)
        self._results: asyncio.Queue[Item | Ended] = asyncio.Queue()
        self._call: Any = None
        self._writer: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closed = False
        self._cancelled = False
        self._end: Ended | None = None  # set by the reader
        self._final_seen = False
        self._exhausted = False

    @property
    def session_id(self) -> str | None:
        return self._core.session_id

    @property
    def stats(self) -> StreamStats:
        return self._core.stats

    @property
    def sent(self) -> int:
        return self._core.sent

    @property
    def ended(self) -> bool:
        """Whether the server has ended the stream (results may still wait to be read)."""
        return self._end is not None

    async def open(self) -> AsyncStream:
        """Sends the manifest and waits for ``ready``, retrying what the policy allows. A stream
        opens once."""
        if self._call is not None:
            raise RuntimeError("the stream is already open; make a new one for another session")
        if unknown_node_types(self._core.pipeline):
            self._core.check(await self._client.catalogue(timeout=self._timeout))
        settings = self._client.settings
        attempts = Attempts("StreamPipeline", self._retry, self._timeout)
        while True:
            left = attempts.start()
            call = self._client.stub.StreamPipeline(metadata=settings.metadata(), timeout=left, compression=settings.grpc_compression())
            refused = await self._handshake(call)
            if refused is None:
                break
            err, delay = attempts.retry_after(refused)
            if delay is None:
                raise err
            await asyncio.sleep(delay)
        self._call = call
        self._writer = asyncio.create_task(self._write())
        self._reader = asyncio.create_task(self._read())
        return self

    async def _handshake(self, call: Any) -> RemoteMediaError | None:
        """Sends the manifest and reads the answer: ``None`` once the server is ready, else the
        error it refused the stream with."""
        try:
            # Refusals of the call itself (token, protocol version, concurrency) end it before the
            # server reads anything. A write racing with such an ending makes grpc.aio replace the
            # server's status with its own INTERNAL one, so the headers are awaited first.
            await call.initial_metadata()
            if not call.done():
                await call.write(self._core.manifest_request())
            first = await _next(call)
        except grpc.aio.AioRpcError as e:
            return from_rpc_error(e)
        except asyncio.InvalidStateError:
            first = None  # the call ended between the check and the write
        if first is None:
            return await _status_error(call) or RemoteMediaError("the server ended the stream without answering the manifest")
        try:
            self._core.on_first(first)
        except RemoteMediaError as in_band:
            status = await _status_error(call)
            return merge(in_band, status) if status is not None else in_band
        return None

    async def _write(self) -> None:
        try:
            while (item := await self._outbox.get()) is not _END:
                await self._call.write(item)
            await self._call.done_writing()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
            pass  # the call ended; the reader reports how

    async def _read(self) -> None:
        status: RemoteMediaError | None = None
        try:
            while (response := await _next(self._call)) is not None:
                for item in self._core.on_response(response):
                    self._results.put_nowait(item)
            status = await _status_error(self._call)
        except grpc.aio.AioRpcError as e:
            status = from_rpc_error(e)
        except RemoteMediaError as e:
            # A response this client cannot read: nothing after it can be trusted.
            status = e
            self._call.cancel()
        except asyncio.CancelledError:
            status = PipelineCancelledError("the stream was cancelled", code=grpc.StatusCode.CANCELLED)
        await self._outbox.abort()
        for last in self._core.on_end(status, cancelled=self._cancelled):
            if isinstance(last, Ended):
                self._end = last
            self._results.put_nowait(last)

    async def send(self, chunk: AudioInput, *, node_id: str | None = None, sample_rate: int | None = None) -> int:
        """Queues ``chunk`` for ``node_id`` (default: the stream's source) and returns its
        sequence number; waits while ``max_pending`` chunks are queued."""
        self._check_opened()
        if self._closed or self._cancelled:
            raise RuntimeError("the stream is closed; open a new one to send more")
        self._raise_if_ended()
        request = self._core.chunk_request(chunk, node_id, sample_rate)
        if not await self._outbox.put(request):
            if self._reader is not None:
                await asyncio.shield(self._reader)
            self._raise_if_ended()
            raise RuntimeError("the stream ended")
        sequence: int = request.audio_chunk.sequence
        return sequence

    def _check_opened(self) -> None:
        if self._call is None:
            raise RuntimeError(NOT_OPEN)

    def _raise_if_ended(self) -> None:
        if self._end is not None and self._end.error is not None:
            raise self._end.error

    async def close(self) -> None:
        """Ends the input: the server flushes every node, sends the last result and final
        metrics, and ends the stream. Results stay readable."""
        self._check_opened()
        if self._closed or self._cancelled:
            return
        self._closed = True
        await self._outbox.put_final(self._core.control_request(pb.StreamControl.COMMAND_CLOSE), _END)

    async def cancel(self) -> None:
        """Ends the stream at once; the server stops the running chunk and frees the session.
        Iterating afterwards raises :class:`PipelineCancelledError`."""
        self._check_opened()
        if self._cancelled or self._end is not None:
            return
        self._cancelled = True
        await self._outbox.abort()
        self._call.cancel()
        await self.wait()

    async def wait(self) -> None:
        """Waits until the stream has ended."""
        tasks = [t for t in (self._writer, self._reader) if t is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> Result:
        self._check_opened()
        if self._exhausted:
            raise StopAsyncIteration
        item = await self._results.get()
        if isinstance(item, Ended):
            self._exhausted = True
            if item.error is not None and not self._final_seen:
                self._final_seen = True
                raise item.error
            raise StopAsyncIteration
        if isinstance(item, RemoteMediaError):
            raise item
        return item

    async def __aenter__(self) -> AsyncStream:
        return await self.open()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc_type is not None:
            await self.cancel()
            return
        await self.close()
        await self.wait()
        end = self._end
        if end is not None and end.error is not None and not self._final_seen and not self._cancelled:
            self._final_seen = True
            raise end.error

    def __repr__(self) -> str:
        return f"AsyncStream(session_id={self.session_id!r}, sent={self.sent})"
