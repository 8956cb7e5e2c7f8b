# Generated from proto/ by clients/python/scripts/gen_proto.py. Do not edit.
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AudioFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIO_FORMAT_UNSPECIFIED: _ClassVar[AudioFormat]
    AUDIO_FORMAT_F32: _ClassVar[AudioFormat]
    AUDIO_FORMAT_I16: _ClassVar[AudioFormat]
    AUDIO_FORMAT_I32: _ClassVar[AudioFormat]

class ErrorType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_TYPE_UNSPECIFIED: _ClassVar[ErrorType]
    ERROR_TYPE_VALIDATION: _ClassVar[ErrorType]
    ERROR_TYPE_NODE_EXECUTION: _ClassVar[ErrorType]
    ERROR_TYPE_RESOURCE_LIMIT: _ClassVar[ErrorType]
    ERROR_TYPE_AUTHENTICATION: _ClassVar[ErrorType]
    ERROR_TYPE_VERSION_MISMATCH: _ClassVar[ErrorType]
    ERROR_TYPE_INTERNAL: _ClassVar[ErrorType]
AUDIO_FORMAT_UNSPECIFIED: AudioFormat
AUDIO_FORMAT_F32: AudioFormat
AUDIO_FORMAT_I16: AudioFormat
AUDIO_FORMAT_I32: AudioFormat
ERROR_TYPE_UNSPECIFIED: ErrorType
ERROR_TYPE_VALIDATION: ErrorType
ERROR_TYPE_NODE_EXECUTION: ErrorType
ERROR_TYPE_RESOURCE_LIMIT: ErrorType
ERROR_TYPE_AUTHENTICATION: ErrorType
ERROR_TYPE_VERSION_MISMATCH: ErrorType
ERROR_TYPE_INTERNAL: ErrorType

class AudioBuffer(_message.Message):
    __slots__ = ("samples", "sample_rate", "channels", "format", "num_samples")
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    samples: bytes
    sample_rate: int
    channels: int
    format: AudioFormat
    num_samples: int
    def __init__(self, samples: _Optional[bytes] = ..., sample_rate: _Optional[int] = ..., channels: _Optional[int] = ..., format: _Optional[_Union[AudioFormat, str]] = ..., num_samples: _Optional[int] = ...) -> None: ...

class ErrorResponse(_message.Message):
    __slots__ = ("error_type", "message", "failing_node_id", "context", "stack_trace")
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FAILING_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    STACK_TRACE_FIELD_NUMBER: _ClassVar[int]
    error_type: ErrorType
    message: str
    failing_node_id: str
    context: str
    stack_trace: str
    def __init__(self, error_type: _Optional[_Union[ErrorType, str]] = ..., message: _Optional[str] = ..., failing_node_id: _Optional[str] = ..., context: _Optional[str] = ..., stack_trace: _Optional[str] = ...) -> None: ...

class ResourceLimits(_message.Message):
    __slots__ = ("max_memory_bytes", "max_timeout_ms", "max_audio_samples")
    MAX_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_AUDIO_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    max_memory_bytes: int
    max_timeout_ms: int
    max_audio_samples: int
    def __init__(self, max_memory_bytes: _Optional[int] = ..., max_timeout_ms: _Optional[int] = ..., max_audio_samples: _Optional[int] = ...) -> None: ...
