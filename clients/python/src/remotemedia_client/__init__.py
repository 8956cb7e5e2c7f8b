"""Python client for the RemoteMedia pipeline service (``remotemedia.v1`` over gRPC).

>>> from remotemedia_client import Client, Pipeline, GainNode
>>> pipeline = Pipeline.chain(GainNode("gain", gain_db=-6), name="quieter")

``Client`` blocks, ``AsyncClient`` is for asyncio; both take the same settings, build the same
requests and raise the same :mod:`~remotemedia_client.errors`.
"""

from remotemedia_client import nodes as _nodes
from remotemedia_client import pb
from remotemedia_client._core import PROTOCOL_VERSION, TLS, ResourceLimits
from remotemedia_client._log import enable_logging
from remotemedia_client.aio import AsyncClient, AsyncStream
from remotemedia_client.audio import AudioBuffer
from remotemedia_client.catalogue import BUILTIN_CATALOGUE, Catalogue, NodeType
from remotemedia_client.client import Client, Stream
from remotemedia_client.errors import (
    AuthenticationError,
    DeadlineExceededError,
    InternalError,
    NodeExecutionError,
    PipelineCancelledError,
    RemoteMediaError,
    ResourceLimitError,
    ServiceUnavailableError,
    ValidationError,
    VersionMismatchError,
    Violation,
)
from remotemedia_client.nodes import *  # noqa: F403  (a typed builder per node type, generated)
from remotemedia_client.pipeline import Connection, Node, Pipeline, PipelineConfig, Port, Runtime
from remotemedia_client.results import Metrics, NodeMetrics, NodeResult, Result, Segment, StreamStats, Transcript, Utterance
from remotemedia_client.retry import RetryPolicy

__version__ = "0.1.0"

__all__ = [
    "BUILTIN_CATALOGUE",
    "PROTOCOL_VERSION",
    "TLS",
    "AsyncClient",
    "AsyncStream",
    "AudioBuffer",
    "AuthenticationError",
    "Catalogue",
    "Client",
    "Connection",
    "DeadlineExceededError",
    "InternalError",
    "Metrics",
    "Node",
    "NodeExecutionError",
    "NodeMetrics",
    "NodeResult",
    "NodeType",
    "Pipeline",
    "PipelineCancelledError",
    "PipelineConfig",
    "Port",
    "RemoteMediaError",
    "ResourceLimitError",
    "ResourceLimits",
    "Result",
    "RetryPolicy",
    "Runtime",
    "Segment",
    "ServiceUnavailableError",
    "Stream",
    "StreamStats",
    "Transcript",
    "Utterance",
    "ValidationError",
    "VersionMismatchError",
    "Violation",
    "enable_logging",
    "pb",
]
__all__ += _nodes.__all__
