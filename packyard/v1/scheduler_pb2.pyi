from packyard.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VersionRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class VersionResponse(_message.Message):
    __slots__ = ("version", "python", "leader")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PYTHON_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    version: str
    python: str
    leader: bool
    def __init__(self, version: _Optional[str] = ..., python: _Optional[str] = ..., leader: _Optional[bool] = ...) -> None: ...

class JobVersion(_message.Message):
    __slots__ = ("version", "submitted_at", "stable", "note", "changes", "current", "failed", "same_as")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    STABLE_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    SAME_AS_FIELD_NUMBER: _ClassVar[int]
    version: int
    submitted_at: float
    stable: bool
    note: str
    changes: _containers.RepeatedScalarFieldContainer[str]
    current: bool
    failed: bool
    same_as: int
    def __init__(self, version: _Optional[int] = ..., submitted_at: _Optional[float] = ..., stable: _Optional[bool] = ..., note: _Optional[str] = ..., changes: _Optional[_Iterable[str]] = ..., current: _Optional[bool] = ..., failed: _Optional[bool] = ..., same_as: _Optional[int] = ...) -> None: ...

class HistoryResponse(_message.Message):
    __slots__ = ("name", "versions")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    versions: _containers.RepeatedCompositeFieldContainer[JobVersion]
    def __init__(self, name: _Optional[str] = ..., versions: _Optional[_Iterable[_Union[JobVersion, _Mapping]]] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class SubmitRequest(_message.Message):
    __slots__ = ("spec_json",)
    SPEC_JSON_FIELD_NUMBER: _ClassVar[int]
    spec_json: str
    def __init__(self, spec_json: _Optional[str] = ...) -> None: ...

class SubmitResponse(_message.Message):
    __slots__ = ("name", "version", "changed", "instance_ids")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_IDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    changed: bool
    instance_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., changed: _Optional[bool] = ..., instance_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class Instance(_message.Message):
    __slots__ = ("id", "group", "node", "state", "reason", "exit_code", "has_exit_code", "kind", "reserved", "address", "updated_at", "desired", "restarts", "health", "events", "version", "image_digest")
    ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    HAS_EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    id: str
    group: str
    node: str
    state: str
    reason: str
    exit_code: int
    has_exit_code: bool
    kind: str
    reserved: _common_pb2.Resources
    address: str
    updated_at: float
    desired: str
    restarts: int
    health: str
    events: _containers.RepeatedCompositeFieldContainer[InstanceEvent]
    version: int
    image_digest: str
    def __init__(self, id: _Optional[str] = ..., group: _Optional[str] = ..., node: _Optional[str] = ..., state: _Optional[str] = ..., reason: _Optional[str] = ..., exit_code: _Optional[int] = ..., has_exit_code: _Optional[bool] = ..., kind: _Optional[str] = ..., reserved: _Optional[_Union[_common_pb2.Resources, _Mapping]] = ..., address: _Optional[str] = ..., updated_at: _Optional[float] = ..., desired: _Optional[str] = ..., restarts: _Optional[int] = ..., health: _Optional[str] = ..., events: _Optional[_Iterable[_Union[InstanceEvent, _Mapping]]] = ..., version: _Optional[int] = ..., image_digest: _Optional[str] = ...) -> None: ...

class InstanceEvent(_message.Message):
    __slots__ = ("at", "message")
    AT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    at: float
    message: str
    def __init__(self, at: _Optional[float] = ..., message: _Optional[str] = ...) -> None: ...

class JobStatus(_message.Message):
    __slots__ = ("name", "priority", "state", "version", "submitted_at", "instances", "spec_json", "deployment")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    SPEC_JSON_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    priority: int
    state: str
    version: int
    submitted_at: float
    instances: _containers.RepeatedCompositeFieldContainer[Instance]
    spec_json: str
    deployment: Deployment
    def __init__(self, name: _Optional[str] = ..., priority: _Optional[int] = ..., state: _Optional[str] = ..., version: _Optional[int] = ..., submitted_at: _Optional[float] = ..., instances: _Optional[_Iterable[_Union[Instance, _Mapping]]] = ..., spec_json: _Optional[str] = ..., deployment: _Optional[_Union[Deployment, _Mapping]] = ...) -> None: ...

class DeploymentGroup(_message.Message):
    __slots__ = ("desired", "placed", "healthy", "unhealthy")
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    PLACED_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    UNHEALTHY_FIELD_NUMBER: _ClassVar[int]
    desired: int
    placed: int
    healthy: int
    unhealthy: int
    def __init__(self, desired: _Optional[int] = ..., placed: _Optional[int] = ..., healthy: _Optional[int] = ..., unhealthy: _Optional[int] = ...) -> None: ...

class Deployment(_message.Message):
    __slots__ = ("version", "state", "description", "started_at", "groups", "target", "reverted_to")
    class GroupsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: DeploymentGroup
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[DeploymentGroup, _Mapping]] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    REVERTED_TO_FIELD_NUMBER: _ClassVar[int]
    version: int
    state: str
    description: str
    started_at: float
    groups: _containers.MessageMap[str, DeploymentGroup]
    target: int
    reverted_to: int
    def __init__(self, version: _Optional[int] = ..., state: _Optional[str] = ..., description: _Optional[str] = ..., started_at: _Optional[float] = ..., groups: _Optional[_Mapping[str, DeploymentGroup]] = ..., target: _Optional[int] = ..., reverted_to: _Optional[int] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class JobSummary(_message.Message):
    __slots__ = ("name", "state", "priority", "version", "instances_by_state", "submitted_at")
    class InstancesByStateEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_BY_STATE_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: str
    priority: int
    version: int
    instances_by_state: _containers.ScalarMap[str, int]
    submitted_at: float
    def __init__(self, name: _Optional[str] = ..., state: _Optional[str] = ..., priority: _Optional[int] = ..., version: _Optional[int] = ..., instances_by_state: _Optional[_Mapping[str, int]] = ..., submitted_at: _Optional[float] = ...) -> None: ...

class ListResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[JobSummary]
    def __init__(self, jobs: _Optional[_Iterable[_Union[JobSummary, _Mapping]]] = ...) -> None: ...

class StopRequest(_message.Message):
    __slots__ = ("name", "purge")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PURGE_FIELD_NUMBER: _ClassVar[int]
    name: str
    purge: bool
    def __init__(self, name: _Optional[str] = ..., purge: _Optional[bool] = ...) -> None: ...

class StopResponse(_message.Message):
    __slots__ = ("name", "stopping", "purge")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STOPPING_FIELD_NUMBER: _ClassVar[int]
    PURGE_FIELD_NUMBER: _ClassVar[int]
    name: str
    stopping: int
    purge: bool
    def __init__(self, name: _Optional[str] = ..., stopping: _Optional[int] = ..., purge: _Optional[bool] = ...) -> None: ...

class NodesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Node(_message.Message):
    __slots__ = ("name", "state", "address", "labels", "capacity", "allocated", "usage", "attributes", "instances", "images")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    ALLOCATED_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: str
    address: str
    labels: _containers.ScalarMap[str, str]
    capacity: _common_pb2.Resources
    allocated: _common_pb2.Resources
    usage: _common_pb2.Resources
    attributes: _containers.ScalarMap[str, str]
    instances: int
    images: _containers.RepeatedCompositeFieldContainer[NodeImage]
    def __init__(self, name: _Optional[str] = ..., state: _Optional[str] = ..., address: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., capacity: _Optional[_Union[_common_pb2.Resources, _Mapping]] = ..., allocated: _Optional[_Union[_common_pb2.Resources, _Mapping]] = ..., usage: _Optional[_Union[_common_pb2.Resources, _Mapping]] = ..., attributes: _Optional[_Mapping[str, str]] = ..., instances: _Optional[int] = ..., images: _Optional[_Iterable[_Union[NodeImage, _Mapping]]] = ...) -> None: ...

class NodeImage(_message.Message):
    __slots__ = ("digest", "references", "bytes")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    REFERENCES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    digest: str
    references: _containers.RepeatedScalarFieldContainer[str]
    bytes: int
    def __init__(self, digest: _Optional[str] = ..., references: _Optional[_Iterable[str]] = ..., bytes: _Optional[int] = ...) -> None: ...

class NodesResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    def __init__(self, nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ...) -> None: ...

class ProfilesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LearnedClass(_message.Message):
    __slots__ = ("size_class_bytes", "samples", "p50_bytes", "p95_bytes", "overhead_bytes")
    SIZE_CLASS_BYTES_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    P50_BYTES_FIELD_NUMBER: _ClassVar[int]
    P95_BYTES_FIELD_NUMBER: _ClassVar[int]
    OVERHEAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    size_class_bytes: int
    samples: int
    p50_bytes: int
    p95_bytes: int
    overhead_bytes: int
    def __init__(self, size_class_bytes: _Optional[int] = ..., samples: _Optional[int] = ..., p50_bytes: _Optional[int] = ..., p95_bytes: _Optional[int] = ..., overhead_bytes: _Optional[int] = ...) -> None: ...

class ProfileInfo(_message.Message):
    __slots__ = ("kind", "fixed_memory_bytes", "per_vcpu_memory_bytes", "memory_fraction", "fixed_cpu_milli", "learned")
    KIND_FIELD_NUMBER: _ClassVar[int]
    FIXED_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    PER_VCPU_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FRACTION_FIELD_NUMBER: _ClassVar[int]
    FIXED_CPU_MILLI_FIELD_NUMBER: _ClassVar[int]
    LEARNED_FIELD_NUMBER: _ClassVar[int]
    kind: str
    fixed_memory_bytes: int
    per_vcpu_memory_bytes: int
    memory_fraction: float
    fixed_cpu_milli: int
    learned: _containers.RepeatedCompositeFieldContainer[LearnedClass]
    def __init__(self, kind: _Optional[str] = ..., fixed_memory_bytes: _Optional[int] = ..., per_vcpu_memory_bytes: _Optional[int] = ..., memory_fraction: _Optional[float] = ..., fixed_cpu_milli: _Optional[int] = ..., learned: _Optional[_Iterable[_Union[LearnedClass, _Mapping]]] = ...) -> None: ...

class ProfilesResponse(_message.Message):
    __slots__ = ("profiles",)
    PROFILES_FIELD_NUMBER: _ClassVar[int]
    profiles: _containers.RepeatedCompositeFieldContainer[ProfileInfo]
    def __init__(self, profiles: _Optional[_Iterable[_Union[ProfileInfo, _Mapping]]] = ...) -> None: ...

class PlannedInstance(_message.Message):
    __slots__ = ("id", "group", "action", "node", "reason", "reserved")
    ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    id: str
    group: str
    action: str
    node: str
    reason: str
    reserved: _common_pb2.Resources
    def __init__(self, id: _Optional[str] = ..., group: _Optional[str] = ..., action: _Optional[str] = ..., node: _Optional[str] = ..., reason: _Optional[str] = ..., reserved: _Optional[_Union[_common_pb2.Resources, _Mapping]] = ...) -> None: ...

class PlanResponse(_message.Message):
    __slots__ = ("name", "changed", "version", "instances", "changes", "replaces")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    REPLACES_FIELD_NUMBER: _ClassVar[int]
    name: str
    changed: bool
    version: int
    instances: _containers.RepeatedCompositeFieldContainer[PlannedInstance]
    changes: _containers.RepeatedScalarFieldContainer[str]
    replaces: int
    def __init__(self, name: _Optional[str] = ..., changed: _Optional[bool] = ..., version: _Optional[int] = ..., instances: _Optional[_Iterable[_Union[PlannedInstance, _Mapping]]] = ..., changes: _Optional[_Iterable[str]] = ..., replaces: _Optional[int] = ...) -> None: ...
