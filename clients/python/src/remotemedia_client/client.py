"""The blocking client: :class:`Client` and its :class:`Stream`.

The async twin is :mod:`remotemedia_client.aio`; both share everything that is not I/O
(:mod:`remotemedia_client._core`).
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc
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


class Client:
    """A blocking client for the RemoteMedia service.

    >>> with Client("127.0.0.1:50051") as client:              # doctest: +SKIP
    ...     result = client.run(pipeline, audio)

    Args:
        address: ``host:port``; default ``$REMOTEMEDIA_ADDRESS``, else ``127.0.0.1:50051``.
        token: bearer token sent with pipeline calls; default ``$REMOTEMEDIA_TOKEN``. Surrounding
            whitespace is removed; a character a header cannot carry raises ``ValueError``.
        tls: ``True`` for TLS with the system's roots, or a :class:`TLS` with root
            certificates and a client certificate; plaintext when ``None``.
        timeout: default deadline in seconds for unary calls (``None``: no deadline).
            Retries share it. Streams have no deadline unless given one.
        compression: ``"gzip"`` to compress requests (the server accepts gzip only).
        retry: the :class:`RetryPolicy` for idempotent calls (see :mod:`remotemedia_client.retry`).
        protocol_version: the version declared in the ``remotemedia-protocol-version`` header.
        channel_options: extra gRPC channel arguments.
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
        s = self.settings
        if s.tls is not None:
            self._channel = grpc.secure_channel(s.address, s.tls.credentials(), options=s.options())
        else:
            self._channel = grpc.insecure_channel(s.address, options=s.options())
        self._stub: Any = pb.PipelineServiceStub(self._channel)
        self._catalogue: Catalogue | None = None
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._closed = False

    @property
    def address(self) -> str:
        return self.settings.address

    @property
    def channel(self) -> grpc.Channel:
        """The underlying channel, for other services on the same connection."""
        return self._channel

    @property
    def stub(self) -> Any:
        """The generated ``PipelineServiceStub``, for calls this client does not wrap. Raises
        :class:`~remotemedia_client.errors.RemoteMediaError` once the client is closed."""
        self._check_open()
        return self._stub

    def _check_open(self) -> None:
        if self._closed:
            raise RemoteMediaError("the client is closed; make a new Client to make more calls")

    def _call(self, rpc: str, attempt: Callable[[float | None], T], timeout: float | None, retry: RetryPolicy | None) -> T:
        attempts = Attempts(rpc, self.settings.retry if retry is None else retry, timeout if timeout is not None else self.settings.timeout)
        while True:
            left = attempts.start()
            started = time.monotonic()
            try:
                out = attempt(left)
                log.debug("call finished", rpc=rpc, attempt=attempts.number, ms=round((time.monotonic() - started) * 1e3, 2))
                return out
            except grpc.RpcError as e:
                err, delay = attempts.retry_after(e)
                if delay is None:
                    raise err from None
            time.sleep(delay)

    # --- pipelines --------------------------------------------------------------------------

    def run(
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
        """Runs ``pipeline`` once and returns its :class:`Result`.

        ``inputs`` is the audio for the pipeline's only source node (an :class:`AudioBuffer`,
        or samples with ``sample_rate``: a numpy array, 1-D or frames × channels, or a list of
        floats), or a mapping of node id to audio. ``data`` maps node ids to JSON-serialisable
        values for their ``data`` port. ``output_nodes`` returns the outputs of non-sink nodes
        too. ``limits`` lowers or raises this request's memory, time and samples-per-buffer
        limits up to the server's caps (``ResourceLimits(max_audio_samples=30_000_000)``).

        Errors raise :class:`~remotemedia_client.errors.RemoteMediaError` subclasses; the
        pipeline is checked here first, so a broken one raises ``ValidationError`` without a
        call. Input too long for one request (message size, samples, memory or time) raises
        ``ResourceLimitError`` whose ``hint`` names the ways past it: :meth:`stream_file` or
        :meth:`stream`, and ``limits``.
        """
        catalogue = self.catalogue(timeout=timeout) if unknown_node_types(pipeline) else BUILTIN_CATALOGUE
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
        try:
            response = self._call(
                "ExecutePipeline",
                lambda t: self.stub.ExecutePipeline(
                    request, metadata=self.settings.metadata(), timeout=t, compression=self.settings.grpc_compression()
                ),
                timeout,
                retry,
            )
            return execute_result(response)
        except ResourceLimitError as e:
            raise explain_length_limit(e, request) from None

    def execute(self, request: pb.ExecuteRequest, *, timeout: float | None = None) -> pb.ExecuteResponse:
        """The raw ``ExecutePipeline`` call with a hand-built request: the client's headers,
        deadline and compression are added and nothing else. In-band errors stay in the
        response, statuses raise ``grpc.RpcError``, and nothing is retried. Prefer :meth:`run`."""
        response: pb.ExecuteResponse = self.stub.ExecutePipeline(
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
    ) -> Stream:
        """A streaming session, to use as ``with client.stream(pipeline) as s:``.

        ``source`` is the node chunks go to (default: the only source node); ``sample_rate``
        applies to numpy chunks; ``timeout`` bounds the whole stream (default: none);
        ``max_pending`` is how many chunks may wait to be sent before :meth:`Stream.send`
        blocks. Opening is retried by ``retry``; an open stream never is.
        """
        check_max_pending(max_pending)
        if retry is not None:
            check_retry(retry)
        core = StreamCore(pipeline, source=source, sample_rate=sample_rate)
        return Stream(self, core, timeout=timeout, max_pending=max_pending, retry=self.settings.retry if retry is None else retry)

    def stream_call(self, requests: Iterable[pb.StreamRequest], *, timeout: float | None = None) -> Iterator[pb.StreamResponse]:
        """The raw ``StreamPipeline`` call over ``requests`` (this client's headers and
        compression added): the responses as they come, statuses raised as ``grpc.RpcError``.
        Prefer :meth:`stream`."""
        responses: Iterator[pb.StreamResponse] = self.stub.StreamPipeline(
            iter(requests), metadata=self.settings.metadata(), timeout=timeout, compression=self.settings.grpc_compression()
        )
        return responses

    def stream_file(
        self,
        path: str | os.PathLike[str],
        pipeline: Pipeline | pb.PipelineManifest,
        *,
        chunk_ms: float = 20,
        source: str | None = None,
        timeout: float | None = None,
        max_pending: int = 8,
        dtype: SampleFormat = "f32",
    ) -> Iterator[Result]:
        """Streams a sound file through ``pipeline`` in chunks of ``chunk_ms`` and yields the
        results in order (one per chunk, then the flushed remainder, if any). The file is read
        as ``dtype`` samples (``AudioBuffer.file_format(path)`` keeps its own format). Files of
        any length go through: each request carries one chunk. A missing file, a bad
        ``chunk_ms`` or ``dtype`` raise before the stream opens."""
        chunks = AudioBuffer.iter_file(path, chunk_ms=chunk_ms, dtype=dtype)
        with self.stream(pipeline, source=source, timeout=timeout, max_pending=max_pending) as s:
            failure: list[BaseException] = []

            def feed() -> None:
                try:
                    for chunk in chunks:
                        s.send(chunk)
                    s.close()
                except BaseException as e:  # noqa: BLE001 - handed to the consumer below
                    if s.ended:
                        return  # the stream ended first; iterating raises its error
                    failure.append(e)
                    s.cancel()

            feeder = threading.Thread(target=feed, name="remotemedia-stream-file", daemon=True)
            feeder.start()
            try:
                yield from s
            except PipelineCancelledError:
                if failure:
                    raise failure[0] from None
                raise
            finally:
                if feeder.is_alive():
                    s.cancel()
                feeder.join()
            if failure:
                raise failure[0]

    # --- service information ----------------------------------------------------------------

    def version(self, client_version: str | None = None, *, timeout: float | None = None) -> pb.VersionResponse:
        """``GetVersion``: the server's versions, node types, and whether ``client_version``
        (default: this client's protocol version) is compatible. Needs no token."""
        if client_version is not None:
            check_header_text(client_version, "client_version")
        request = pb.VersionRequest(client_version=client_version or self.settings.protocol_version)
        response: pb.VersionResponse = self._call(
            "GetVersion",
            lambda t: self.stub.GetVersion(request, metadata=self.settings.metadata(), timeout=t),
            timeout,
            None,
        )
        return response

    def check_compatibility(self, *, timeout: float | None = None) -> pb.VersionResponse:
        """Asks the server about this client's protocol version; raises
        :class:`~remotemedia_client.errors.VersionMismatchError` (with the supported
        versions) when the server cannot serve it."""
        return check_version(self.version(timeout=timeout), self.settings.protocol_version)

    def nodes(self, *, timeout: float | None = None) -> list[str]:
        """Every node type the server runs, native and Python, sorted."""
        return sorted(self.version(timeout=timeout).version_info.supported_node_types)

    def catalogue(self, *, timeout: float | None = None) -> Catalogue:
        """The server's node catalogue: every node type's parameters, ports and runtimes,
        plug-ins included. Fetched once (``GetVersion``) and kept; ``run`` and ``stream`` use it
        to check pipelines with node types this client was not built with."""
        if self._catalogue is None:
            self._catalogue = BUILTIN_CATALOGUE.merged(Catalogue.from_version(self.version(timeout=timeout).version_info))
        return self._catalogue

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The gRPC health status of ``service`` (``""``: the server as a whole):
        ``"SERVING"``, ``"NOT_SERVING"`` or ``"SERVICE_UNKNOWN"``."""

        self._check_open()
        if not isinstance(service, str):
            raise TypeError(f"service must be a string, got {type(service).__name__}")

        def check(t: float | None) -> str:
            try:
                r = self._health.Check(health_pb2.HealthCheckRequest(service=service), timeout=t)
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.NOT_FOUND:
                    return "SERVICE_UNKNOWN"
                raise
            return str(health_pb2.HealthCheckResponse.ServingStatus.Name(r.status))

        return self._call("Health.Check", check, timeout, None)

    # --- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        """Closes the channel; calls made afterwards raise
        :class:`~remotemedia_client.errors.RemoteMediaError`."""
        self._closed = True
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.settings.address!r})"


class _Outbox:
    """A bounded hand-off from ``send`` to gRPC's request iterator; ``abort`` wakes everyone."""

    def __init__(self, limit: int) -> None:
        self._items: deque[object] = deque()
        self._cv = threading.Condition()
        self._limit = max(1, limit)
        self._aborted = False

    def put(self, item: object) -> bool:
        """Waits for room; ``False`` if the outbox was aborted."""
        with self._cv:
            while len(self._items) >= self._limit and not self._aborted:
                self._cv.wait()
            if self._aborted:
                return False
            self._items.append(item)
            self._cv.notify_all()
            return True

    def put_final(self, *items: object) -> None:
        with self._cv:
            if not self._aborted:
                self._items.extend(items)
                self._cv.notify_all()

    def get(self) -> object:
        with self._cv:
            while not self._items:
                self._cv.wait()
            item = self._items.popleft()
            self._cv.notify_all()
            return item

    def abort(self) -> None:
        with self._cv:
            self._aborted = True
            self._items.clear()
            self._items.append(_END)
            self._cv.notify_all()

    def requests(self) -> Iterator[pb.StreamRequest]:
        while (item := self.get()) is not _END:
            yield item  # type: ignore[misc]


class Stream:
    """A blocking streaming session (see :meth:`Client.stream`).

    ``send`` queues a chunk and blocks while ``max_pending`` chunks wait (the server reads a
    chunk only after answering the previous one, so a slow pipeline slows the sender).
    Results are read in the background as they arrive; iterate the stream to get them in
    sequence order. A node failing on one chunk raises ``NodeExecutionError`` (with
    ``.sequence``) from the iteration; the session goes on, so iteration may continue.
    Results wait in memory until they are read, however many the application sends first, so
    that sending everything before reading cannot deadlock: an application streaming for long
    without reading holds every result (about the size of what it sent); iterate as you send.

    A stream does nothing until it is opened (``with``, or :meth:`open`): before that,
    ``send``, ``close``, ``cancel`` and iteration raise ``RuntimeError``.
    """

    def __init__(self, client: Client, core: StreamCore, *, timeout: float | None, max_pending: int, retry: RetryPolicy) -> None:
        self._client = client
        self._core = core
        self._timeout = timeout
        self._max_pending = max_pending
        self._retry = retry
        self._results: deque[Item | Ended] = deque()
        self._results_cv = threading.Condition()
        self._outbox = _Outbox(max_pending)
        self._call: Any = None
        self._reader: threading.Thread | None = None
        self._closed = False
        self._cancelled = False
        self._final: Ended | None = None
        self._final_seen = False

    @property
    def session_id(self) -> str | None:
        return self._core.session_id

    @property
    def stats(self) -> StreamStats:
        """The latest totals the server reported."""
        return self._core.stats

    @property
    def sent(self) -> int:
        """Chunks handed to :meth:`send` so far."""
        return self._core.sent

    @property
    def ended(self) -> bool:
        """Whether the server has ended the stream (results may still wait to be read)."""
        return self._final is not None or self._peek_end() is not None

    def open(self) -> Stream:
        """Sends the manifest and waits for the server's ``ready`` (retrying refusals the
        retry policy allows: nothing has run yet). A stream opens once."""
        if self._call is not None:
            raise RuntimeError("the stream is already open; make a new one for another session")
        if unknown_node_types(self._core.pipeline):
            self._core.check(self._client.catalogue(timeout=self._timeout))
        settings = self._client.settings
        attempts = Attempts("StreamPipeline", self._retry, self._timeout)
        while True:
            left = attempts.start()
            self._outbox = _Outbox(self._max_pending)
            self._outbox.put_final(self._core.manifest_request())
            call = self._client.stub.StreamPipeline(
                self._outbox.requests(), metadata=settings.metadata(), timeout=left, compression=settings.grpc_compression()
            )
            try:
                self._core.on_first(next(call))
                break
            except grpc.RpcError as e:
                self._outbox.abort()
                err, delay = attempts.retry_after(e)
                if delay is None:
                    raise err from None
            except StopIteration:
                self._outbox.abort()
                raise RemoteMediaError("the server ended the stream without answering the manifest") from None
            except RemoteMediaError as refused:
                self._outbox.abort()
                raise self._status_of(call, refused) from None
            time.sleep(delay)
        self._call = call
        self._reader = threading.Thread(target=self._read, name="remotemedia-stream-reader", daemon=True)
        self._reader.start()
        return self

    @staticmethod
    def _status_of(call: Any, in_band: RemoteMediaError) -> RemoteMediaError:
        try:
            for _ in call:
                pass
        except grpc.RpcError as e:
            return merge(in_band, from_rpc_error(e))
        return in_band

    def _read(self) -> None:
        status: grpc.RpcError | RemoteMediaError | None = None
        try:
            for response in self._call:
                items = self._core.on_response(response)
                if items:
                    self._deliver(*items)
        except grpc.RpcError as e:
            status = e
        except RemoteMediaError as e:
            # A response this client cannot read: nothing after it can be trusted.
            status = e
            self._call.cancel()
        self._outbox.abort()
        self._deliver(*self._core.on_end(status, cancelled=self._cancelled))

    def _deliver(self, *items: Item | Ended) -> None:
        with self._results_cv:
            self._results.extend(items)
            self._results_cv.notify_all()

    def send(self, chunk: AudioInput, *, node_id: str | None = None, sample_rate: int | None = None) -> int:
        """Queues ``chunk`` (an :class:`AudioBuffer`, or a numpy array at the stream's or the
        given ``sample_rate``) for ``node_id`` (default: the stream's source) and returns its
        sequence number. Blocks while ``max_pending`` chunks are waiting to be sent."""
        self._check_opened()
        if self._closed or self._cancelled:
            raise RuntimeError("the stream is closed; open a new one to send more")
        self._raise_if_ended()
        request = self._core.chunk_request(chunk, node_id, sample_rate)
        if not self._outbox.put(request):
            self._join_reader()
            self._raise_if_ended()
            raise RuntimeError("the stream ended")
        return request.audio_chunk.sequence

    def _check_opened(self) -> None:
        if self._call is None:
            raise RuntimeError(NOT_OPEN)

    def _raise_if_ended(self) -> None:
        final = self._final or self._peek_end()
        if final is not None and final.error is not None:
            raise final.error

    def _peek_end(self) -> Ended | None:
        with self._results_cv:
            last = self._results[-1] if self._results else None
        return last if isinstance(last, Ended) else None

    def close(self) -> None:
        """Ends the input: the server flushes every node, sends their last output as one more
        result and final metrics, and ends the stream. Results stay readable."""
        self._check_opened()
        if self._closed or self._cancelled:
            return
        self._closed = True
        self._outbox.put_final(self._core.control_request(pb.StreamControl.COMMAND_CLOSE), _END)

    def cancel(self) -> None:
        """Ends the stream at once: the server stops the running chunk and frees the session.
        Iterating afterwards raises :class:`PipelineCancelledError`."""
        self._check_opened()
        if self._cancelled or self._final is not None:
            return
        self._cancelled = True
        self._outbox.abort()
        self._call.cancel()
        self._join_reader()

    def _join_reader(self) -> None:
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join()

    def __iter__(self) -> Iterator[Result]:
        return self

    def __next__(self) -> Result:
        self._check_opened()
        with self._results_cv:
            while not self._results:
                self._results_cv.wait()
            item = self._results[0]
            if not isinstance(item, Ended):
                self._results.popleft()
        if isinstance(item, Ended):
            self._final = item
            if item.error is not None and not self._final_seen:
                self._final_seen = True
                raise item.error
            raise StopIteration
        if isinstance(item, RemoteMediaError):
            raise item
        return item

    def wait(self) -> None:
        """Waits until the server has ended the stream (after :meth:`close`)."""
        self._join_reader()

    def __enter__(self) -> Stream:
        return self.open()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc_type is not None:
            self.cancel()
            return
        self.close()
        self._join_reader()
        end = self._peek_end()
        if end is not None and end.error is not None and not self._final_seen and not self._cancelled:
            self._final_seen = True
            raise end.error

    def __repr__(self) -> str:
        return f"Stream(session_id={self.session_id!r}, sent={self.sent})"
