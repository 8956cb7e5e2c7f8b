# Generated from proto/ by clients/python/scripts/gen_proto.py. Do not edit.
from remotemedia_client._proto.remotemedia.v1 import common_pb2 as _common_pb2
from remotemedia_client._proto.remotemedia.v1 import execution_pb2 as _execution_pb2
from remotemedia_client._proto.remotemedia.v1 import manifest_pb2 as _manifest_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StreamRequest(_message.Message):
    __slots__ = ("manifest", "audio_chunk", "control")
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    AUDIO_CHUNK_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    manifest: _manifest_pb2.PipelineManifest
    audio_chunk: AudioChunk
    control: StreamControl
    def __init__(self, manifest: _Optional[_Union[_manifest_pb2.PipelineManifest, _Mapping]] = ..., audio_chunk: _Optional[_Union[AudioChunk, _Mapping]] = ..., control: _Optional[_Union[StreamControl, _Mapping]] = ...) -> None: ...

class AudioChunk(_message.Message):
    __slots__ = ("node_id", "buffer", "sequence")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    BUFFER_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    buffer: _common_pb2.AudioBuffer
    sequence: int
    def __init__(self, node_id: _Optional[str] = ..., buffer: _Optional[_Union[_common_pb2.AudioBuffer, _Mapping]] = ..., sequence: _Optional[int] = ...) -> None: ...

class StreamControl(_message.Message):
    __slots__ = ("command",)
    class Command(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        COMMAND_UNSPECIFIED: _ClassVar[StreamControl.Command]
        COMMAND_CLOSE: _ClassVar[StreamControl.Command]
        COMMAND_CANCEL: _ClassVar[StreamControl.Command]
    COMMAND_UNSPECIFIED: StreamControl.Command
    COMMAND_CLOSE: StreamControl.Command
    COMMAND_CANCEL: StreamControl.Command
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    command: StreamControl.Command
    def __init__(self, command: _Optional[_Union[StreamControl.Command, str]] = ...) -> None: ...

class StreamResponse(_message.Message):
    __slots__ = ("ready", "result", "error", "metrics")
    READY_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    ready: StreamReady
    result: _execution_pb2.ExecutionResult
    error: _common_pb2.ErrorResponse
    metrics: StreamMetrics
    def __init__(self, ready: _Optional[_Union[StreamReady, _Mapping]] = ..., result: _Optional[_Union[_execution_pb2.ExecutionResult, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.ErrorResponse, _Mapping]] = ..., metrics: _Optional[_Union[StreamMetrics, _Mapping]] = ...) -> None: ...

class StreamReady(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class StreamMetrics(_message.Message):
    __slots__ = ("chunks_processed", "average_latency_ms", "total_samples")
    CHUNKS_PROCESSED_FIELD_NUMBER: _ClassVar[int]
    AVERAGE_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    chunks_processed: int
    average_latency_ms: float
    total_samples: int
    def __init__(self, chunks_processed: _Optional[int] = ..., average_latency_ms: _Optional[float] = ..., total_samples: _Optional[int] = ...) -> None: ...
