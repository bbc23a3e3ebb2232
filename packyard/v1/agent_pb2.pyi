from packyard.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InstanceSpec(_message.Message):
    __slots__ = ("id", "job", "group", "kind", "request", "limit", "driver_json", "gpus", "job_type", "restart", "check")
    ID_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    DRIVER_JSON_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    JOB_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESTART_FIELD_NUMBER: _ClassVar[int]
    CHECK_FIELD_NUMBER: _ClassVar[int]
    id: str
    job: str
    group: str
    kind: str
    request: _common_pb2.Resources
    limit: _common_pb2.Resources
    driver_json: str
    gpus: _containers.RepeatedScalarFieldContainer[int]
    job_type: str
    restart: RestartPolicy
    check: HealthCheck
    def __init__(self, id: _Optional[str] = ..., job: _Optional[str] = ..., group: _Optional[str] = ..., kind: _Optional[str] = ..., request: _Optional[_Union[_common_pb2.Resources, _Mapping]] = ..., limit: _Optional[_Union[_common_pb2.Resources, _Mapping]] = ..., driver_json: _Optional[str] = ..., gpus: _Optional[_Iterable[int]] = ..., job_type: _Optional[str] = ..., restart: _Optional[_Union[RestartPolicy, _Mapping]] = ..., check: _Optional[_Union[HealthCheck, _Mapping]] = ...) -> None: ...

class RestartPolicy(_message.Message):
    __slots__ = ("attempts", "interval_seconds", "delay_seconds", "mode")
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DELAY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    attempts: int
    interval_seconds: float
    delay_seconds: float
    mode: str
    def __init__(self, attempts: _Optional[int] = ..., interval_seconds: _Optional[float] = ..., delay_seconds: _Optional[float] = ..., mode: _Optional[str] = ...) -> None: ...

class HealthCheck(_message.Message):
    __slots__ = ("type", "command", "port", "path", "interval_seconds", "timeout_seconds", "failures", "grace_seconds")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    GRACE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    type: str
    command: _containers.RepeatedScalarFieldContainer[str]
    port: int
    path: str
    interval_seconds: float
    timeout_seconds: float
    failures: int
    grace_seconds: float
    def __init__(self, type: _Optional[str] = ..., command: _Optional[_Iterable[str]] = ..., port: _Optional[int] = ..., path: _Optional[str] = ..., interval_seconds: _Optional[float] = ..., timeout_seconds: _Optional[float] = ..., failures: _Optional[int] = ..., grace_seconds: _Optional[float] = ...) -> None: ...

class StartRequest(_message.Message):
    __slots__ = ("node", "instances", "node_epoch")
    NODE_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    NODE_EPOCH_FIELD_NUMBER: _ClassVar[int]
    node: str
    instances: _containers.RepeatedCompositeFieldContainer[InstanceSpec]
    node_epoch: int
    def __init__(self, node: _Optional[str] = ..., instances: _Optional[_Iterable[_Union[InstanceSpec, _Mapping]]] = ..., node_epoch: _Optional[int] = ...) -> None: ...

class StartResult(_message.Message):
    __slots__ = ("id", "accepted", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    accepted: bool
    error: str
    def __init__(self, id: _Optional[str] = ..., accepted: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...

class StartResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[StartResult]
    def __init__(self, results: _Optional[_Iterable[_Union[StartResult, _Mapping]]] = ...) -> None: ...

class AgentStopRequest(_message.Message):
    __slots__ = ("node", "ids", "grace_seconds")
    NODE_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    GRACE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    node: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    grace_seconds: float
    def __init__(self, node: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ..., grace_seconds: _Optional[float] = ...) -> None: ...

class AgentStopResponse(_message.Message):
    __slots__ = ("stopping",)
    STOPPING_FIELD_NUMBER: _ClassVar[int]
    stopping: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, stopping: _Optional[_Iterable[str]] = ...) -> None: ...

class InventoryRequest(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: str
    def __init__(self, node: _Optional[str] = ...) -> None: ...

class InventoryEntry(_message.Message):
    __slots__ = ("id", "state", "gpus")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    id: str
    state: str
    gpus: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, id: _Optional[str] = ..., state: _Optional[str] = ..., gpus: _Optional[_Iterable[int]] = ...) -> None: ...

class InventoryResponse(_message.Message):
    __slots__ = ("node", "instances")
    NODE_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    node: str
    instances: _containers.RepeatedCompositeFieldContainer[InventoryEntry]
    def __init__(self, node: _Optional[str] = ..., instances: _Optional[_Iterable[_Union[InventoryEntry, _Mapping]]] = ...) -> None: ...
