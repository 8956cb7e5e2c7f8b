"""Every ``remotemedia.v1`` message and enum in one namespace: ``pb.ExecuteRequest(...)``, and
the generated ``PipelineServiceStub``."""

from typing import Any

from remotemedia_client._proto.remotemedia.v1 import service_pb2_grpc as _service_grpc
from remotemedia_client._proto.remotemedia.v1.common_pb2 import *  # noqa: F403
from remotemedia_client._proto.remotemedia.v1.execution_pb2 import *  # noqa: F403
from remotemedia_client._proto.remotemedia.v1.manifest_pb2 import *  # noqa: F403
from remotemedia_client._proto.remotemedia.v1.service_pb2 import *  # noqa: F403
from remotemedia_client._proto.remotemedia.v1.streaming_pb2 import *  # noqa: F403

# grpcio-tools writes no type stubs for service stubs; its methods take and return the messages
# above, on either a grpc.Channel or a grpc.aio.Channel.
PipelineServiceStub: Any = _service_grpc.PipelineServiceStub
