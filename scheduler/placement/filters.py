"""Feasibility filters. Each returns (mask, reason): True where a host passes, and the reason a
host that fails is counted under in the explanation.

Static filters read only the snapshot (node state, drivers, labels) and run once per equivalence
class over all hosts; dynamic filters read the plan's current allocation and are re-run on the
rows a reservation changed. The engine applies them in this order, and a host is counted under
the first one that rejects it:

    node ready -> driver available -> constraints (in spec order) -> distinct hosts -> fit per resource
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from packyard.spec import Constraint
from scheduler.placement.table import CPU, DISK, GPU, MEMORY, MISSING, HostTable
from scheduler.placement.view import View

Verdict = tuple[np.ndarray, str]

RESOURCE_NAMES = {CPU: "cpu", MEMORY: "memory", DISK: "disk"}
DISTINCT_REASON = "distinct hosts: already runs an instance of this group"


def node_ready(table: HostTable) -> Verdict:
    return table.ready, "node not ready"


def driver_available(table: HostTable, kind: str) -> Verdict:
    """The host's agent fingerprinted a working driver for the kind: attribute `driver.<kind>`
    is exactly "ok" (anything else is the reason it is not, e.g. "unavailable: no /dev/kvm")."""
    col = table.column(f"driver.{kind}")
    ok = col.codes == col.code("ok")
    # the agents' own reasons (a few at most: hosts share them), so the pending reason says why
    present = set(np.unique(col.codes[~ok]).tolist())
    why = sorted(v.removeprefix("unavailable: ") for v, c in col.vocab.items() if c in present and v != "ok")
    return ok, f"driver {kind} unavailable" + (f" ({'; '.join(why[:3])})" if why else "")


def describe(c: Constraint) -> str:
    if c.operator == "exists":
        return f"constraint {c.attribute} exists"
    value = f"({', '.join(c.value)})" if isinstance(c.value, list) else c.value
    return f"constraint {c.attribute} {c.operator} {value}"


def constraint(table: HostTable, c: Constraint) -> Verdict:
    """`label.X` reads labels[X], `node.name` the host name, anything else attributes[X].
    As in Nomad and Kubernetes, `!=` and `not_in` hold on a host that lacks the property."""
    col = table.column(c.attribute)
    codes = col.codes
    if c.operator == "exists":
        mask = codes != MISSING
    elif c.operator in ("=", "!="):
        assert isinstance(c.value, str)
        mask = codes == col.code(c.value)
        if c.operator == "!=":
            mask = ~mask
    else:
        assert isinstance(c.value, list)
        wanted = np.array([col.code(v) for v in c.value], dtype=np.int32)
        mask = np.isin(codes, wanted)
        if c.operator == "not_in":
            mask = ~mask
    return mask, describe(c)


def static(table: HostTable, kind: str, constraints: Iterable[Constraint]) -> list[Verdict]:
    """The static filters of an ask of `kind` with `constraints`, in pipeline order."""
    return [node_ready(table), driver_available(table, kind), *(constraint(table, c) for c in constraints)]


def eligible(table: HostTable, kind: str, constraints: Iterable[Constraint]) -> list[str]:
    """The hosts an instance of `kind` with `constraints` may run on, room aside: those passing
    every static filter (a system job runs one instance on each)."""
    mask = np.logical_and.reduce([m for m, _ in static(table, kind, constraints)])
    return [table.names[i] for i in np.flatnonzero(mask).tolist()]


def distinct_hosts(n: int, used: np.ndarray) -> Verdict:
    """At most one instance of the group per host: the hosts in `used` already hold one."""
    mask = np.ones(n, dtype=bool)
    mask[used] = False
    return mask, DISTINCT_REASON


def fits(view: View, resource: int) -> Verdict:
    """What is left of one resource (cpu, memory, disk) holds the instance."""
    return view.free[:, resource] >= view.need[resource], f"not enough {RESOURCE_NAMES[resource]}"


def gpu_fits(view: View) -> Verdict:
    """A share (< 1 GPU) needs one device with that much left; whole GPUs need that many wholly
    free devices."""
    gpu_milli = int(view.need[GPU])
    if gpu_milli < view.device_milli:
        mask = np.maximum.reduce(view.gpu_free, axis=1, initial=0) >= gpu_milli
    else:
        whole = np.add.reduce(view.gpu_free == view.device_milli, axis=1)
        mask = whole >= gpu_milli // view.device_milli
    return mask, "not enough gpu"
