# Generated from proto/ by clients/python/scripts/gen_proto.py. Do not edit.
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RuntimeHint(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUNTIME_HINT_UNSPECIFIED: _ClassVar[RuntimeHint]
    RUNTIME_HINT_RUSTPYTHON: _ClassVar[RuntimeHint]
    RUNTIME_HINT_CPYTHON: _ClassVar[RuntimeHint]
    RUNTIME_HINT_CPYTHON_WASM: _ClassVar[RuntimeHint]
    RUNTIME_HINT_AUTO: _ClassVar[RuntimeHint]
    RUNTIME_HINT_RUST: _ClassVar[RuntimeHint]
RUNTIME_HINT_UNSPECIFIED: RuntimeHint
RUNTIME_HINT_RUSTPYTHON: RuntimeHint
RUNTIME_HINT_CPYTHON: RuntimeHint
RUNTIME_HINT_CPYTHON_WASM: RuntimeHint
RUNTIME_HINT_AUTO: RuntimeHint
RUNTIME_HINT_RUST: RuntimeHint

class PipelineManifest(_message.Message):
    __slots__ = ("version", "metadata", "nodes", "connections", "config")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    version: str
    metadata: ManifestMetadata
    nodes: _containers.RepeatedCompositeFieldContainer[NodeManifest]
    connections: _containers.RepeatedCompositeFieldContainer[Connection]
    config: PipelineConfig
    def __init__(self, version: _Optional[str] = ..., metadata: _Optional[_Union[ManifestMetadata, _Mapping]] = ..., nodes: _Optional[_Iterable[_Union[NodeManifest, _Mapping]]] = ..., connections: _Optional[_Iterable[_Union[Connection, _Mapping]]] = ..., config: _Optional[_Union[PipelineConfig, _Mapping]] = ...) -> None: ...

class ManifestMetadata(_message.Message):
    __slots__ = ("name", "description", "created_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    created_at: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., created_at: _Optional[str] = ...) -> None: ...

class NodeManifest(_message.Message):
    __slots__ = ("id", "node_type", "params", "is_streaming", "capabilities", "host", "runtime_hint")
    ID_FIELD_NUMBER: _ClassVar[int]
    NODE_TYPE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    IS_STREAMING_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_HINT_FIELD_NUMBER: _ClassVar[int]
    id: str
    node_type: str
    params: str
    is_streaming: bool
    capabilities: CapabilityRequirements
    host: str
    runtime_hint: RuntimeHint
    def __init__(self, id: _Optional[str] = ..., node_type: _Optional[str] = ..., params: _Optional[str] = ..., is_streaming: _Optional[bool] = ..., capabilities: _Optional[_Union[CapabilityRequirements, _Mapping]] = ..., host: _Optional[str] = ..., runtime_hint: _Optional[_Union[RuntimeHint, str]] = ...) -> None: ...

class Connection(_message.Message):
    __slots__ = ("to", "output_key", "input_key")
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_KEY_FIELD_NUMBER: _ClassVar[int]
    INPUT_KEY_FIELD_NUMBER: _ClassVar[int]
    to: str
    output_key: str
    input_key: str
    def __init__(self, to: _Optional[str] = ..., output_key: _Optional[str] = ..., input_key: _Optional[str] = ..., **kwargs) -> None: ...

class CapabilityRequirements(_message.Message):
    __slots__ = ("gpu", "cpu", "memory_gb")
    GPU_FIELD_NUMBER: _ClassVar[int]
    CPU_FIELD_NUMBER: _ClassVar[int]
    MEMORY_GB_FIELD_NUMBER: _ClassVar[int]
    gpu: GpuRequirement
    cpu: CpuRequirement
    memory_gb: float
    def __init__(self, gpu: _Optional[_Union[GpuRequirement, _Mapping]] = ..., cpu: _Optional[_Union[CpuRequirement, _Mapping]] = ..., memory_gb: _Optional[float] = ...) -> None: ...

class GpuRequirement(_message.Message):
    __slots__ = ("type", "min_memory_gb", "required")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MIN_MEMORY_GB_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    type: str
    min_memory_gb: float
    required: bool
    def __init__(self, type: _Optional[str] = ..., min_memory_gb: _Optional[float] = ..., required: _Optional[bool] = ...) -> None: ...

class CpuRequirement(_message.Message):
    __slots__ = ("cores", "arch")
    CORES_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    cores: int
    arch: str
    def __init__(self, cores: _Optional[int] = ..., arch: _Optional[str] = ...) -> None: ...

class PipelineConfig(_message.Message):
    __slots__ = ("enable_metrics", "retry", "circuit_breaker_threshold")
    ENABLE_METRICS_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    CIRCUIT_BREAKER_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    enable_metrics: bool
    retry: RetryPolicy
    circuit_breaker_threshold: int
    def __init__(self, enable_metrics: _Optional[bool] = ..., retry: _Optional[_Union[RetryPolicy, _Mapping]] = ..., circuit_breaker_threshold: _Optional[int] = ...) -> None: ...

class RetryPolicy(_message.Message):
    __slots__ = ("max_retries", "backoff", "initial_delay_ms", "multiplier")
    class Backoff(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        BACKOFF_UNSPECIFIED: _ClassVar[RetryPolicy.Backoff]
        BACKOFF_EXPONENTIAL: _ClassVar[RetryPolicy.Backoff]
        BACKOFF_FIXED: _ClassVar[RetryPolicy.Backoff]
        BACKOFF_NONE: _ClassVar[RetryPolicy.Backoff]
    BACKOFF_UNSPECIFIED: RetryPolicy.Backoff
    BACKOFF_EXPONENTIAL: RetryPolicy.Backoff
    BACKOFF_FIXED: RetryPolicy.Backoff
    BACKOFF_NONE: RetryPolicy.Backoff
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_FIELD_NUMBER: _ClassVar[int]
    INITIAL_DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    max_retries: int
    backoff: RetryPolicy.Backoff
    initial_delay_ms: int
    multiplier: float
    def __init__(self, max_retries: _Optional[int] = ..., backoff: _Optional[_Union[RetryPolicy.Backoff, str]] = ..., initial_delay_ms: _Optional[int] = ..., multiplier: _Optional[float] = ...) -> None: ...
