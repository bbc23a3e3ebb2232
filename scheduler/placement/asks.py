"""What the engine is asked (GroupAsk) and what it answers (GroupPlacement).

An outcome is a value, never an exception: a group that does not fit comes back UNSCHEDULABLE with
per-filter counts saying why, so `ctl status` can answer "why is this pending?".
"""
from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from packyard.records import ResourceAmounts
from packyard.spec import Affinity, Constraint, Spread


class Status(enum.Enum):
    PLACED = "placed"                   # every instance has a host
    PARTIAL = "partial"                 # some have, `unplaced` have not
    UNSCHEDULABLE = "unschedulable"     # none has; `reasons` says which filters eliminated the hosts
    ERROR = "error"                     # the ask cannot be evaluated (`error` says why)


@dataclass(frozen=True)
class GroupAsk:
    """`count` instances of one group, all with the same raw `request` (overhead not included):
    one equivalence class, decided together."""
    job: str
    group: str
    count: int
    kind: str = "container"
    priority: int = 50                  # the job's: preemption may evict instances of lower priority
    request: ResourceAmounts = field(default_factory=ResourceAmounts)
    constraints: Sequence[Constraint] = ()
    distinct_hosts: bool = False
    # the host of every running instance of this group, a host once per instance on it:
    # distinct_hosts keeps new instances off these hosts, spread counts them per value
    existing_hosts: Sequence[str] = ()
    # soft preferences (scorers, never filters): spread evenly over a host property's values,
    # prefer (weight > 0) or avoid (weight < 0) hosts matching an affinity
    spread: Sequence[Spread] = ()
    affinity: Sequence[Affinity] = ()
    # bytes of the group's registry image each host holds (hosts without it left out): a
    # tie-break among equal hosts, more bytes first (locality.py)
    image_bytes: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError("count must not be negative")
        r = self.request
        if min(r.cpu_milli, r.memory_bytes, r.disk_bytes, r.gpu_milli) < 0:
            raise ValueError("request amounts must not be negative")


@dataclass(frozen=True)
class Running:
    """An instance that holds a reservation on a host (included in the host's `allocated`), as
    preemption sees it: a possible victim for an ask whose priority is high enough above its own."""
    instance: str                   # instance id, what the controller stops
    host: str
    priority: int                   # its job's priority
    reserved: ResourceAmounts       # overhead included, as reserved on the host
    gpus: tuple[int, ...] = ()      # its GPU devices on the host (without them it frees no device)


@dataclass(frozen=True)
class Preemption:
    """One instance of the group placed on `host` because `victims` (instance ids) are evicted
    from it: the controller must stop them (and reschedule them as pending) before the instance
    may start there. `instance` is its position in GroupPlacement.hosts."""
    instance: int
    host: str
    victims: tuple[str, ...]


@dataclass
class GroupPlacement:
    ask: GroupAsk
    reserved: ResourceAmounts           # per instance: request + the kind's overhead
    hosts: list[str]                    # one host per placed instance, in placement order
    unplaced: int
    # For the last instance that found no host: how many hosts each filter eliminated, every host
    # counted once, by the first filter (in pipeline order) that rejected it.
    reasons: dict[str, int]
    status: Status
    gpus: list[tuple[int, ...]] = field(default_factory=list)   # GPU device indices per instance
    error: str = ""
    # placements that evict lower-priority instances (only when place() is given `running`)
    preemptions: list[Preemption] = field(default_factory=list)
    # for an unplaced instance, when preemption was possible in principle: why it did not help
    preemption: str = ""

    @property
    def placed(self) -> int:
        return len(self.hosts)

    @property
    def preempt(self) -> list[str]:
        """Every instance id to evict for this group, in order."""
        return [v for p in self.preemptions for v in p.victims]

    def explain(self) -> str:
        """`12 hosts: not enough memory, 3: constraint label.zone = a` (largest first)."""
        parts = sorted(self.reasons.items(), key=lambda kv: (-kv[1], kv[0]))
        out = [f"{n}: {r}" for r, n in parts]
        if out:
            n = parts[0][1]
            out[0] = f"{n} {'host' if n == 1 else 'hosts'}: {parts[0][0]}"
        if self.preemption:
            out.append(self.preemption)
        return ", ".join(out)
