"""Thin synchronous and asynchronous clients over the generated stubs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import grpc
import grpc.aio

from remotemedia_client import pb

#: Protocol version sent in the ``remotemedia-protocol-version`` header.
PROTOCOL_VERSION = "v1"


def _metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    md: list[tuple[str, str]] = [("remotemedia-protocol-version", PROTOCOL_VERSION)]
    if token:
        md.append(("authorization", f"Bearer {token}"))
    return tuple(md)


class Client:
    """Blocking client. ``Client("localhost:50051", token=...)``."""

    def __init__(self, address: str, *, token: str | None = None, timeout: float | None = None) -> None:
        self._channel = grpc.insecure_channel(address)
        self._stub = pb.PipelineServiceStub(self._channel)
        self._metadata = _metadata(token)
        self._timeout = timeout

    def execute(self, request: pb.ExecuteRequest) -> pb.ExecuteResponse:
        return self._stub.ExecutePipeline(request, metadata=self._metadata, timeout=self._timeout)

    def stream(self, requests: Iterable[pb.StreamRequest]) -> Iterator[pb.StreamResponse]:
        return self._stub.StreamPipeline(iter(requests), metadata=self._metadata, timeout=self._timeout)

    def version(self, client_version: str = PROTOCOL_VERSION) -> pb.VersionResponse:
        return self._stub.GetVersion(pb.VersionRequest(client_version=client_version), timeout=self._timeout)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """asyncio client over ``grpc.aio``."""

    def __init__(self, address: str, *, token: str | None = None, timeout: float | None = None) -> None:
        self._channel = grpc.aio.insecure_channel(address)
        self._stub = pb.PipelineServiceStub(self._channel)
        self._metadata = _metadata(token)
        self._timeout = timeout

    async def execute(self, request: pb.ExecuteRequest) -> pb.ExecuteResponse:
        return await self._stub.ExecutePipeline(request, metadata=self._metadata, timeout=self._timeout)

    def stream(self) -> grpc.aio.StreamStreamCall:
        return self._stub.StreamPipeline(metadata=self._metadata, timeout=self._timeout)

    async def version(self, client_version: str = PROTOCOL_VERSION) -> pb.VersionResponse:
        return await self._stub.GetVersion(pb.VersionRequest(client_version=client_version), timeout=self._timeout)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

