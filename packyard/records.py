"""The JSON records stored under the keys of packyard.keys. Compact (short separators, no nulls)
because issue 7 stores hundreds of thousands of them.
"""
from __future__ import annotations

import dataclasses
import operator
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import orjson

T = TypeVar("T")

# Instance states as users see them (ctl status). `pending` and `starting` are the scheduler's view
# (no node yet / node told but no report yet); the rest are reported by the agent, which also
# reports `starting` while a restart in place waits. `complete`: a batch instance that exited 0.
PENDING, STARTING, RUNNING, EXITED, FAILED, LOST, STOPPED, COMPLETE = (
    "pending", "starting", "running", "exited", "failed", "lost", "stopped", "complete")
STATES = (PENDING, STARTING, RUNNING, EXITED, FAILED, LOST, STOPPED, COMPLETE)
TERMINAL = frozenset({EXITED, FAILED, LOST, STOPPED, COMPLETE})
MAX_EVENTS = 10          # an instance's last events kept in its state record


def dumps(record: Any) -> bytes:
    # The fields as they are, not dataclasses.asdict(): asdict deep-copies every value, which was a
    # tenth of the scheduler's time committing 20,000 placements. Read by name (the records with
    # slots have no __dict__ for vars(): ~0.5 µs a dump more). orjson, not json: a 100,000-instance job
    # is 200,000 records written and as many read, and json's Python layers were a third of it.
    # Left out: None, an empty string, list, tuple or mapping, and 0 or False where that is the
    # field's default (`loads` gives the default back): an instance written pending, placed and
    # reported carried `"attempts":0,"lost":false,"not_before":0.0,"restarts":0...`, ~110 of its
    # ~560 bytes, 16% more WAL for etcd than 1cab3bd at 100,000 instances (README, issue 12).
    # By type, not `v not in (None, "", {}, [])`: that compares each of ~20 values with each of
    # those, which was most of the time of a dump.
    shape = _shape(type(record))
    keeps = shape.keeps
    data = {k: v for k, v in zip(shape.names, shape.values(record), strict=False)
            if v or (v is not None and type(v) not in _CONTAINERS and k in keeps)}
    # A copy the size of its content: orjson hands back its whole write buffer (grown as it
    # writes: 4 or 8 KiB for a placed instance's ~300 bytes), and the scheduler holds a commit's
    # worth of these (IN_FLIGHT transactions, 4,096 records) while etcd takes them: 32 MiB of its
    # peak at 20,000 instances under tracemalloc, ~1.5 MiB copied (README, issue 12). ~0.15 µs
    # a record, against ~2.8 µs for the dump.
    return memoryview(orjson.dumps(data, option=_OPTIONS)).tobytes()


# The one empty value of every record's list field left empty (most of them: an instance with no
# GPUs, never rescheduled, no events) instead of a fresh [] each, ~56 bytes a field a record.
# Immutable, so no record can change another's: code replaces such a field (evolve(r,
# avoid=[...])), never appends to it; filled, the field is a list as before.
NO_ITEMS: tuple = ()
_CONTAINERS = frozenset({str, list, tuple, dict})


def evolve(record: T, **changes: Any) -> T:
    """dataclasses.replace() for our records, without its per-field work (replace() was a sixth
    of the scheduler's time placing 100,000 instances): every value read at once, the changed
    ones put in place, and __init__ given them all by position (~1.4 µs for a placed instance,
    ~0.4 more than the __dict__ copy this was before records had slots; 3.6 for replace()).
    Shallow, like replace(): a dict or list field is shared with the original unless changed."""
    shape = _shape(type(record))
    values = list(shape.values(record))
    for name, value in changes.items():
        values[shape.index[name]] = value
    return type(record)(*values)


def loads(cls: type[T], raw: bytes | str) -> T:
    data = orjson.loads(raw)
    shape = _shape(cls)
    for name in shape.repeated:
        value = data.get(name)
        if type(value) is str:
            data[name] = sys.intern(value)
    if data.keys() <= shape.index.keys():       # the usual case: written by this version
        return cls(**data)
    return cls(**{k: v for k, v in data.items() if k in shape.index})


class _Shape(NamedTuple):
    """A record class's fields, for the functions above (records with slots have no __dict__)."""
    names: tuple[str, ...]
    values: Callable[[Any], tuple]      # record -> every field's value, in field order
    index: dict[str, int]               # field -> its position in __init__
    repeated: tuple[str, ...]           # string fields read as one shared copy (see REPEATED)
    keeps: frozenset[str]               # fields whose 0 or False is written: not their default


def _shape(cls: type) -> _Shape:
    shape = _SHAPES.get(cls)
    if shape is None:
        names = tuple(f.name for f in dataclasses.fields(cls))
        shape = _SHAPES[cls] = _Shape(names, operator.attrgetter(*names), {n: i for i, n in enumerate(names)},
                                      REPEATED.get(cls, ()),
                                      frozenset(f.name for f in dataclasses.fields(cls) if not _falsy_default(f)))
    return shape


_SHAPES: dict[type, _Shape] = {}


def _falsy_default(f: dataclasses.Field) -> bool:
    """The field's default is 0, False or empty: its falsy values are that default."""
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return False
    return value is not None and not value
# sorted keys: the same record is the same bytes; integer keys written as strings, as json did
_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


@dataclass
class ResourceAmounts:
    """Exact integer amounts; the same units as packyard.v1.Resources."""
    cpu_milli: int = 0
    memory_bytes: int = 0
    disk_bytes: int = 0
    gpu_milli: int = 0

    @classmethod
    def of(cls, d: dict[str, int] | None) -> ResourceAmounts:
        return cls(**(d or {}))

    def __add__(self, o: ResourceAmounts) -> ResourceAmounts:
        return ResourceAmounts(self.cpu_milli + o.cpu_milli, self.memory_bytes + o.memory_bytes,
                               self.disk_bytes + o.disk_bytes, self.gpu_milli + o.gpu_milli)


@dataclass
class NodeRecord:
    name: str
    address: str                        # the agent's gRPC host:port
    capacity: dict[str, int]            # ResourceAmounts fields
    labels: dict[str, str] = field(default_factory=dict)
    attributes: dict[str, str] = field(default_factory=dict)   # drivers, cgroup version, kernel...
    started_at: float = 0.0
    epoch: int = 0                      # the lease it was registered under (see agent.proto)
    # registry images the host's store holds (issue 16, placement's image locality): each
    # {"digest", "references": [...], "bytes"}; written by the agent as its store changes
    images: list[dict] = field(default_factory=list)


@dataclass
class JobRecord:
    name: str
    spec_json: str
    version: int = 1
    desired: str = "run"                # run | stop
    submitted_at: float = 0.0
    updated_at: float = 0.0
    purge: bool = False                 # stopped, and to be forgotten once every instance ended
    # issue 14: this version changed what instances run (or is the first): it gets a deployment
    deploy: bool = False


# slots (here and StateRecord: one of each per instance, in the scheduler's cache and the
# simulated fleet's): 22 fields take 209 bytes, where an object and its __dict__ took 336
# (tests/packyard/test_records.py keeps them so)
@dataclass(slots=True)
class InstanceRecord:
    id: str
    job: str
    group: str
    index: int
    kind: str
    version: int                        # the job version this instance was made for
    ghash: str = ""                     # hash of its group's spec: a changed group is replaced
    desired: str = "run"                # run | stop
    node: str = ""                      # empty while pending
    reserved: dict[str, int] = field(default_factory=dict)   # on `node`, overhead included
    gpus: Sequence[int] = NO_ITEMS                  # GPU devices of `node` it holds (a share: one)
    placed_at: float = 0.0
    attempts: int = 0                   # placements so far (re-placed after lost / unconfirmed)
    reason: str = ""                    # why it is pending, or why it was lost
    lost: bool = False                  # its node went away; kept for status, never run again
    # rescheduled (issue 13): a new instance for a slot whose last one failed for good
    avoid: Sequence[str] = NO_ITEMS                           # nodes this slot failed on
    not_before: float = 0.0                                   # not placed before (the delay)
    rescheduled_at: Sequence[float] = NO_ITEMS                  # when the slot was rescheduled
    events: Sequence[dict] = NO_ITEMS                         # the scheduler's: {"at", "message"}
    # a system job's (issue 13): the node this instance belongs to, placed there or nowhere
    pinned: str = ""
    # a deployment's (issue 14): the old instance this one replaces, placed once that one has
    # ended (stop, then start: its room is free again), and when this one was made
    replaces: str = ""
    created_at: float = 0.0


@dataclass(slots=True)
class StateRecord:
    id: str
    state: str                          # starting | running | exited | failed | stopped
    reason: str = ""
    exit_code: int | None = None
    address: str = ""                   # the instance's own IP on the host's bridge
    updated_at: float = 0.0
    restarts: int = 0                   # restarted in place by its agent, in all
    events: Sequence[dict] = NO_ITEMS   # the last MAX_EVENTS: {"at": time, "message": ...}
    health: str = ""                    # its check: passing | failing | "" (unknown, or no check)
    started_at: float = 0.0             # when its current run began (running): healthy after how long
    image_digest: str = ""              # the registry image's digest it runs (issue 16)


@dataclass
class InstanceUsage:
    """One instance as measured by its agent. cpu_milli is the rate over the last interval."""
    kind: str
    cpu_milli: int = 0
    memory_bytes: int = 0
    oom_kills: int = 0
    request_cpu_milli: int = 0
    request_memory_bytes: int = 0
    overhead_memory_bytes: int | None = None     # VMs: QEMU beyond the guest RAM it backs
    job: str = ""
    group: str = ""
    disk_bytes: int | None = None                # containers: writable layer + logs; None: not measured
    request_disk_bytes: int = 0                  # resources.disk (0: unlimited)


@dataclass
class UsageRecord:
    """A node's measured usage, rewritten every few seconds under the agent's lease (the latest
    sample only: history belongs in Prometheus, not etcd)."""
    node: str
    at: float
    host: dict[str, float] = field(default_factory=dict)   # cpu_milli, memory_bytes, load1
    instances: dict[str, dict] = field(default_factory=dict)   # id -> InstanceUsage fields


@dataclass
class ProfileRecord:
    """An overhead profile learned by the scheduler, with its evidence, per size class."""
    kind: str
    updated_at: float
    classes: list[dict] = field(default_factory=list)   # LearnedClass fields


@dataclass
class DeploymentRecord:
    """The rollout of a job version that changed groups (issue 14), written by the scheduler.
    `groups`: per group, {"desired", "placed", "healthy", "unhealthy"} new instances. A failed
    deployment whose group says auto_revert goes on as `reverted`, rolling out `target`: the job
    version made from `reverted_to` (scheduler/versions.py `way_back`)."""
    job: str
    version: int
    target: int = 0                     # the job version it rolls out (its own, unless reverted)
    # auto_revert: the version it goes back to, decided as it failed (written with the failure,
    # then the revert: `reverted`, `target` made from it); 0: not reverted
    reverted_to: int = 0
    rolling: bool = True                # still replacing instances
    promoted: bool = False              # its canaries were promoted (ctl promote, or auto_promote)
    state: str = "running"              # running | successful | failed | reverted | awaiting promotion
    started_at: float = 0.0
    progress_at: float = 0.0            # the last time a new instance turned healthy (or the start)
    description: str = ""
    groups: dict[str, dict[str, int]] = field(default_factory=dict)
    # new instances seen healthy: counted for good. Runs of slots per group and generation
    # (scheduler/healthy_set.py); a record of an earlier version holds their ids
    healthy: list[str] = field(default_factory=list)


@dataclass
class VersionRecord:
    """One submitted version of a job (issue 14: `ctl history`, rollbacks), kept for the last
    KEPT_VERSIONS versions. Stable: its deployment succeeded; failed: its deployment failed (a
    count-only change inherits both; a version superseded while rolling out is neither)."""
    job: str
    version: int
    spec_json: str
    submitted_at: float = 0.0
    stable: bool = False
    failed: bool = False
    note: str = ""                      # how it came to be: "rollback to version 2", ...


KEPT_VERSIONS = 10


# String fields whose values repeat from record to record (a job's name, its group's, the node,
# the state...): read from JSON, each record would have its own copy of each, ~50-65 bytes a
# string (~330 bytes an instance with its state record); interned (sys.intern), every record
# read holds the same one. Ids, unique, are left as they come. An interned string no record
# holds any longer is freed as any other.
REPEATED: dict[type, tuple[str, ...]] = {
    InstanceRecord: ("job", "group", "kind", "ghash", "desired", "node", "reason", "pinned"),
    StateRecord: ("state", "reason", "health", "image_digest"),
}
