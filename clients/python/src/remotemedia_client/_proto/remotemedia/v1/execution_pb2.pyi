# Generated from proto/ by clients/python/scripts/gen_proto.py. Do not edit.
from remotemedia_client._proto.remotemedia.v1 import common_pb2 as _common_pb2
from remotemedia_client._proto.remotemedia.v1 import manifest_pb2 as _manifest_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NodeStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_STATUS_UNSPECIFIED: _ClassVar[NodeStatus]
    NODE_STATUS_SUCCESS: _ClassVar[NodeStatus]
    NODE_STATUS_SKIPPED: _ClassVar[NodeStatus]
    NODE_STATUS_FAILED: _ClassVar[NodeStatus]

class ExecutionStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXECUTION_STATUS_UNSPECIFIED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_SUCCESS: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_PARTIAL_SUCCESS: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_FAILED: _ClassVar[ExecutionStatus]
NODE_STATUS_UNSPECIFIED: NodeStatus
NODE_STATUS_SUCCESS: NodeStatus
NODE_STATUS_SKIPPED: NodeStatus
NODE_STATUS_FAILED: NodeStatus
EXECUTION_STATUS_UNSPECIFIED: ExecutionStatus
EXECUTION_STATUS_SUCCESS: ExecutionStatus
EXECUTION_STATUS_PARTIAL_SUCCESS: ExecutionStatus
EXECUTION_STATUS_FAILED: ExecutionStatus

class ExecuteRequest(_message.Message):
    __slots__ = ("manifest", "audio_inputs", "data_inputs", "resource_limits", "client_version", "output_nodes")
    class AudioInputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _common_pb2.AudioBuffer
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_common_pb2.AudioBuffer, _Mapping]] = ...) -> None: ...
    class DataInputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    AUDIO_INPUTS_FIELD_NUMBER: _ClassVar[int]
    DATA_INPUTS_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_LIMITS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_NODES_FIELD_NUMBER: _ClassVar[int]
    manifest: _manifest_pb2.PipelineManifest
    audio_inputs: _containers.MessageMap[str, _common_pb2.AudioBuffer]
    data_inputs: _containers.ScalarMap[str, str]
    resource_limits: _common_pb2.ResourceLimits
    client_version: str
    output_nodes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, manifest: _Optional[_Union[_manifest_pb2.PipelineManifest, _Mapping]] = ..., audio_inputs: _Optional[_Mapping[str, _common_pb2.AudioBuffer]] = ..., data_inputs: _Optional[_Mapping[str, str]] = ..., resource_limits: _Optional[_Union[_common_pb2.ResourceLimits, _Mapping]] = ..., client_version: _Optional[str] = ..., output_nodes: _Optional[_Iterable[str]] = ...) -> None: ...

class ExecuteResponse(_message.Message):
    __slots__ = ("result", "error")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    result: ExecutionResult
    error: _common_pb2.ErrorResponse
    def __init__(self, result: _Optional[_Union[ExecutionResult, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.ErrorResponse, _Mapping]] = ...) -> None: ...

class ExecutionResult(_message.Message):
    __slots__ = ("audio_outputs", "data_outputs", "metrics", "node_results", "status", "sequence")
    class AudioOutputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _common_pb2.AudioBuffer
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_common_pb2.AudioBuffer, _Mapping]] = ...) -> None: ...
    class DataOutputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    AUDIO_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    DATA_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    NODE_RESULTS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    audio_outputs: _containers.MessageMap[str, _common_pb2.AudioBuffer]
    data_outputs: _containers.ScalarMap[str, str]
    metrics: ExecutionMetrics
    node_results: _containers.RepeatedCompositeFieldContainer[NodeResult]
    status: ExecutionStatus
    sequence: int
    def __init__(self, audio_outputs: _Optional[_Mapping[str, _common_pb2.AudioBuffer]] = ..., data_outputs: _Optional[_Mapping[str, str]] = ..., metrics: _Optional[_Union[ExecutionMetrics, _Mapping]] = ..., node_results: _Optional[_Iterable[_Union[NodeResult, _Mapping]]] = ..., status: _Optional[_Union[ExecutionStatus, str]] = ..., sequence: _Optional[int] = ...) -> None: ...

class ExecutionMetrics(_message.Message):
    __slots__ = ("wall_time_ms", "cpu_time_ms", "memory_used_bytes", "node_metrics", "serialization_time_ms")
    class NodeMetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: NodeMetrics
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[NodeMetrics, _Mapping]] = ...) -> None: ...
    WALL_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    CPU_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    NODE_METRICS_FIELD_NUMBER: _ClassVar[int]
    SERIALIZATION_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    wall_time_ms: float
    cpu_time_ms: float
    memory_used_bytes: int
    node_metrics: _containers.MessageMap[str, NodeMetrics]
    serialization_time_ms: float
    def __init__(self, wall_time_ms: _Optional[float] = ..., cpu_time_ms: _Optional[float] = ..., memory_used_bytes: _Optional[int] = ..., node_metrics: _Optional[_Mapping[str, NodeMetrics]] = ..., serialization_time_ms: _Optional[float] = ...) -> None: ...

class NodeMetrics(_message.Message):
    __slots__ = ("execution_time_ms", "memory_bytes", "samples_processed", "custom_metrics")
    EXECUTION_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PROCESSED_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_METRICS_FIELD_NUMBER: _ClassVar[int]
    execution_time_ms: float
    memory_bytes: int
    samples_processed: int
    custom_metrics: str
    def __init__(self, execution_time_ms: _Optional[float] = ..., memory_bytes: _Optional[int] = ..., samples_processed: _Optional[int] = ..., custom_metrics: _Optional[str] = ...) -> None: ...

class NodeResult(_message.Message):
    __slots__ = ("node_id", "status", "error", "output_metadata")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_METADATA_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    status: NodeStatus
    error: _common_pb2.ErrorResponse
    output_metadata: str
    def __init__(self, node_id: _Optional[str] = ..., status: _Optional[_Union[NodeStatus, str]] = ..., error: _Optional[_Union[_common_pb2.ErrorResponse, _Mapping]] = ..., output_metadata: _Optional[str] = ...) -> None: ...
