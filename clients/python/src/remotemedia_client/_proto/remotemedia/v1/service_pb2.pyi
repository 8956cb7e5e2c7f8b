# Generated from proto/ by clients/python/scripts/gen_proto.py. Do not edit.
from remotemedia_client._proto.remotemedia.v1 import execution_pb2 as _execution_pb2
from remotemedia_client._proto.remotemedia.v1 import manifest_pb2 as _manifest_pb2
from remotemedia_client._proto.remotemedia.v1 import streaming_pb2 as _streaming_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PortKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PORT_KIND_UNSPECIFIED: _ClassVar[PortKind]
    PORT_KIND_AUDIO: _ClassVar[PortKind]
    PORT_KIND_DATA: _ClassVar[PortKind]
PORT_KIND_UNSPECIFIED: PortKind
PORT_KIND_AUDIO: PortKind
PORT_KIND_DATA: PortKind

class VersionRequest(_message.Message):
    __slots__ = ("client_version",)
    CLIENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    client_version: str
    def __init__(self, client_version: _Optional[str] = ...) -> None: ...

class VersionResponse(_message.Message):
    __slots__ = ("version_info", "compatible", "compatibility_message")
    VERSION_INFO_FIELD_NUMBER: _ClassVar[int]
    COMPATIBLE_FIELD_NUMBER: _ClassVar[int]
    COMPATIBILITY_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    version_info: VersionInfo
    compatible: bool
    compatibility_message: str
    def __init__(self, version_info: _Optional[_Union[VersionInfo, _Mapping]] = ..., compatible: _Optional[bool] = ..., compatibility_message: _Optional[str] = ...) -> None: ...

class VersionInfo(_message.Message):
    __slots__ = ("protocol_version", "runtime_version", "supported_node_types", "supported_protocols", "build_timestamp", "node_types")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_VERSION_FIELD_NUMBER: _ClassVar[int]
    SUPPORTED_NODE_TYPES_FIELD_NUMBER: _ClassVar[int]
    SUPPORTED_PROTOCOLS_FIELD_NUMBER: _ClassVar[int]
    BUILD_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    NODE_TYPES_FIELD_NUMBER: _ClassVar[int]
    protocol_version: str
    runtime_version: str
    supported_node_types: _containers.RepeatedScalarFieldContainer[str]
    supported_protocols: _containers.RepeatedScalarFieldContainer[str]
    build_timestamp: str
    node_types: _containers.RepeatedCompositeFieldContainer[NodeTypeInfo]
    def __init__(self, protocol_version: _Optional[str] = ..., runtime_version: _Optional[str] = ..., supported_node_types: _Optional[_Iterable[str]] = ..., supported_protocols: _Optional[_Iterable[str]] = ..., build_timestamp: _Optional[str] = ..., node_types: _Optional[_Iterable[_Union[NodeTypeInfo, _Mapping]]] = ...) -> None: ...

class NodeTypeInfo(_message.Message):
    __slots__ = ("name", "aliases", "description", "params_schema", "inputs", "outputs", "runtimes", "details")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PARAMS_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    RUNTIMES_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    name: str
    aliases: _containers.RepeatedScalarFieldContainer[str]
    description: str
    params_schema: str
    inputs: _containers.RepeatedCompositeFieldContainer[PortInfo]
    outputs: _containers.RepeatedCompositeFieldContainer[PortInfo]
    runtimes: _containers.RepeatedScalarFieldContainer[_manifest_pb2.RuntimeHint]
    details: str
    def __init__(self, name: _Optional[str] = ..., aliases: _Optional[_Iterable[str]] = ..., description: _Optional[str] = ..., params_schema: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[PortInfo, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[PortInfo, _Mapping]]] = ..., runtimes: _Optional[_Iterable[_Union[_manifest_pb2.RuntimeHint, str]]] = ..., details: _Optional[str] = ...) -> None: ...

class PortInfo(_message.Message):
    __slots__ = ("name", "kind", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: PortKind
    description: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[PortKind, str]] = ..., description: _Optional[str] = ...) -> None: ...
