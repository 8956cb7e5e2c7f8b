"""Every ``remotemedia.v1`` message and enum in one namespace: ``pb.ExecuteRequest(...)``."""

from remotemedia_client._proto.remotemedia.v1.common_pb2 import *  # noqa: F403
from remotemedia_client._proto.remotemedia.v1.execution_pb2 import *  # noqa: F403
from remotemedia_client._proto.remotemedia.v1.manifest_pb2 import *  # noqa: F403
from remotemedia_client._proto.remotemedia.v1.service_pb2 import *  # noqa: F403
from remotemedia_client._proto.remotemedia.v1.service_pb2_grpc import PipelineServiceStub  # noqa: F401
from remotemedia_client._proto.remotemedia.v1.streaming_pb2 import *  # noqa: F403
