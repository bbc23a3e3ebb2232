"""The scheduler's view of the cluster: an in-memory cache of etcd, loaded at one revision and kept
current by watches (no polling). Every decision reads this; every change goes to etcd first and
comes back here through the watch, so the cache never holds anything etcd does not.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass

import orjson

from packyard import keys, records
from packyard.etcd import KV, Event
from packyard.records import (
    EXITED,
    FAILED,
    LOST,
    PENDING,
    RUNNING,
    STARTING,
    STOPPED,
    TERMINAL,
    DeploymentRecord,
    InstanceRecord,
    JobRecord,
    NodeRecord,
    StateRecord,
    UsageRecord,
    VersionRecord,
)


@dataclass(slots=True)
class Entry:
    """An instance as the scheduler sees it: its record, its revision, the agent's report.
    Slots: one per instance (56 bytes, against 152 with a __dict__)."""
    record: InstanceRecord
    mod_revision: int
    state: StateRecord | None = None

    @property
    def id(self) -> str:
        return self.record.id


def effective_state(rec: InstanceRecord, rep: StateRecord | None) -> str:
    """What `ctl status` shows: the agent's report where there is one for the current node."""
    if rec.lost:
        return LOST
    if rep is not None:
        return rep.state
    if not rec.node:
        return STOPPED if rec.desired == "stop" else PENDING
    return STARTING


def holds_reservation(e: Entry) -> bool:
    """Counts against its node's capacity: assigned and not yet known to have ended."""
    r = e.record
    if not r.node or r.lost:
        return False
    return e.state is None or e.state.state not in TERMINAL


def group_of(iid: str) -> tuple[str, str]:
    """(job, group) of an instance id `<job>.<group>.<index>-<generation>`."""
    job, group, _ = iid.split(".", 2)
    return job, group


def _is_system(spec_json: str) -> bool:
    """The job spec (its JSON, as stored) is of a system job."""
    try:
        spec = orjson.loads(spec_json)
    except orjson.JSONDecodeError:
        return False
    return isinstance(spec, dict) and spec.get("type") == "system"


def unsettled(e: Entry) -> bool:
    """An agent has yet to act on it: told to start and not heard of since, told to stop and not
    ended, or lost (its node declared down) yet reported still running — fencing must stop it."""
    r = e.record
    if not r.node:
        return False
    if r.lost:
        return e.state is not None and e.state.state not in TERMINAL
    if r.desired == "run":
        return e.state is None
    return effective_state(r, e.state) not in TERMINAL


# kinds of reserved amounts shared among holders before the table starts again (a cluster has a
# few: its jobs' shapes; a scheduler that met more in its lifetime only stops sharing old ones)
AMOUNTS_KEPT = 4096


class ClusterState:
    """The cache. `nodes`, `down`, `jobs`, `instances` and `usage` are the records as etcd holds
    them (read them, never write them); the indexes behind the query methods below are kept as
    events are applied, so that an evaluation costs what changed, not the size of the cluster
    (100,000 instances: a full scan is ~50 ms, and an evaluation made several). Only the watches
    (`apply`, `load`, `reload`) and the scheduler's own commits (`put_own_write`, `expect_own_write`)
    change it."""

    def __init__(self, on_report: Callable[[StateRecord | None, StateRecord], None] | None = None):
        self.nodes: dict[str, NodeRecord] = {}      # ready: their lease is alive
        self.down: dict[str, NodeRecord] = {}       # seen, lease since expired
        self.jobs: dict[str, JobRecord] = {}
        self.instances: dict[str, Entry] = {}
        self.usage: dict[str, UsageRecord] = {}     # node -> latest measurement
        # told of every report as it lands (old, new): the controller counts instance ends by it
        self.on_report = on_report
        self._job_revisions: dict[str, int] = {}
        self._by_job: dict[str, set[str]] = defaultdict(set)
        # job -> its instance ids sorted, kept until one comes or goes (see job_entries)
        self._job_order: dict[str, list[str]] = {}
        # reports can arrive before the instance record (watch order across prefixes): keep them,
        # per instance and node: a node it was moved away from may still report it (see strays)
        self._reports: dict[str, dict[str, StateRecord]] = {}
        # instance -> nodes reporting it running (or starting) that it is not placed on: left over
        # from a Start the scheduler gave up waiting for, or a node back from the dead. Stopped.
        self._strays: dict[str, set[str]] = {}
        self._pending_ids: set[str] = set()         # to place: run, no node, not lost
        self._pending_groups: dict[tuple[str, str], set[str]] = {}   # the same by group
        self._unsettled: set[str] = set()           # an agent has yet to act (see `unsettled`)
        self._holding: dict[str, tuple[str, tuple[int, int, int, int]]] = {}
        # the amounts in `_holding`, one tuple for every holder of the same (a tuple each was
        # ~4 MiB at 100,000 instances: README, issue 12); emptied past AMOUNTS_KEPT kinds
        self._amounts: dict[tuple[int, int, int, int], tuple[int, int, int, int]] = {}
        self._node_alloc: dict[str, list[int]] = {}   # node -> [cpu, mem, disk, gpu]
        self._shapes: dict[tuple[int, int, int], int] = {}   # reserved shape -> count
        self._gpu_holders: set[str] = set()
        self._holding_by_job: dict[str, int] = {}
        self._returned: set[str] = set()            # nodes back after being down (audited first)
        self.deployments: dict[str, DeploymentRecord] = {}   # job -> its latest rollout (issue 14)
        self._deployment_revisions: dict[str, int] = {}
        self.versions: dict[str, dict[int, VersionRecord]] = {}   # job -> its kept versions (history)
        self._version_revisions: dict[tuple[str, int], int] = {}
        self._system_jobs: set[str] = set()         # jobs of type system: a node's arrival concerns them
        # instance id -> (value, record) of our own writes in flight (see expect_own_write)
        self._writing: dict[str, tuple[bytes, InstanceRecord]] = {}
        self._nodes_version = 0     # bumped on every node event: what was built from nodes is stale

    # --- loading and applying etcd events -------------------------------------------------
    def load(self, prefix: str, kvs: list[KV]) -> set[str]:
        dirty: set[str] = set()
        for kv in kvs:
            dirty |= self.apply(Event("put", kv.key, kv.value, kv.mod_revision))
        return dirty

    def reload(self, prefix: str, kvs: list[KV]) -> set[str]:
        """Everything under `prefix` is now `kvs`: keys the cache holds that are not among them
        were deleted while we could not watch (a compacted watch lists again)."""
        present = {kv.key for kv in kvs}
        for key in self._keys_under(prefix):
            if key not in present:
                self.apply(Event("delete", key, b"", 0))
        return self.load(prefix, kvs) | {"*"}

    def _keys_under(self, prefix: str) -> list[str]:
        if prefix == keys.NODES:
            return [keys.node(n) for n in self.nodes]
        if prefix == keys.JOBS:
            return [keys.job(j) for j in self.jobs]
        if prefix == keys.INSTANCES:
            return [keys.instance(e.record.job, iid) for iid, e in self.instances.items()]
        if prefix == keys.STATE:
            return [keys.state(node, iid) for iid, by_node in self._reports.items() for node in by_node]
        if prefix == keys.USAGE:
            return [keys.usage(n) for n in self.usage]
        if prefix == keys.DEPLOYMENTS:
            return [keys.deployment(j) for j in self.deployments]
        if prefix == keys.VERSIONS:
            return [keys.version(j, n) for j, kept in self.versions.items() for n in kept]
        return []

    def apply(self, ev: Event) -> set[str]:
        """Apply one event; return the names of jobs whose situation changed ("*" = all jobs)."""
        if ev.key.startswith(keys.NODES):
            name = keys.last(ev.key)
            self._nodes_version += 1
            if ev.kind == "put":
                old, new = self.nodes.get(name), records.loads(NodeRecord, ev.value)
                self.nodes[name] = new
                if self.down.pop(name, None) is not None:
                    self._returned.add(name)   # back from the dead: what does it still run?
                # new capacity: the next placement pass sees it. A node that joined (or came back,
                # or whose labels or attributes changed) may be eligible for system jobs, which
                # run an instance on each; a record put again unchanged (an agent restarted
                # within its lease) is nothing new to them.
                if old is None or old.labels != new.labels or old.attributes != new.attributes:
                    return set(self._system_jobs)
                return set()
            if name in self.nodes:
                self.down[name] = self.nodes.pop(name)
            return {"*"}              # its instances are lost: every job looks again
        if ev.key.startswith(keys.JOBS):
            name = keys.last(ev.key)
            if ev.kind == "put":
                job = self.jobs[name] = records.loads(JobRecord, ev.value)
                self._job_revisions[name] = ev.revision
                if _is_system(job.spec_json):
                    self._system_jobs.add(name)
                else:
                    self._system_jobs.discard(name)
            else:
                self.jobs.pop(name, None)
                self._job_revisions.pop(name, None)
                self._system_jobs.discard(name)
            return {name}
        if ev.key.startswith(keys.DEPLOYMENTS):
            name = keys.last(ev.key)
            if ev.kind == "put":
                self.deployments[name] = records.loads(DeploymentRecord, ev.value)
                self._deployment_revisions[name] = ev.revision
            else:
                self.deployments.pop(name, None)
                self._deployment_revisions.pop(name, None)
            return set()              # the scheduler's own record of a rollout: nothing to decide
        if ev.key.startswith(keys.VERSIONS):
            job, number = ev.key[len(keys.VERSIONS):].split("/", 1)
            kept = self.versions.setdefault(job, {})
            if ev.kind == "put":
                kept[int(number)] = records.loads(VersionRecord, ev.value)
                self._version_revisions[(job, int(number))] = ev.revision
            else:
                kept.pop(int(number), None)
                self._version_revisions.pop((job, int(number)), None)
                if not kept:
                    del self.versions[job]
            return set()              # history: nothing to decide
        if ev.key.startswith(keys.INSTANCES):
            iid = keys.last(ev.key)
            job = keys.instance_job(iid)
            if ev.kind == "put":
                entry = self.instances.get(iid)
                if entry is not None and entry.mod_revision >= ev.revision:
                    return set()      # our own commit, applied when it was made
                mine = self._writing.pop(iid, None)
                # our own commit still awaiting its reply: the record in hand, not parsed again
                rec = mine[1] if mine is not None and mine[0] == ev.value else \
                    records.loads(InstanceRecord, ev.value)
                self.put_instance(rec, ev.revision)
            else:
                self.instances.pop(iid, None)
                self._by_job[job].discard(iid)
                self._job_order.pop(job, None)
                self._index(iid, None)
                self._find_strays(iid, "")
            # no reconcile needed: instance records are written by the reconciling scheduler
            # itself, or together with their job record (whose event marks the job)
            return set()
        if ev.key.startswith(keys.USAGE):
            name = keys.last(ev.key)
            if ev.kind == "put":
                self.usage[name] = records.loads(UsageRecord, ev.value)
            else:
                self.usage.pop(name, None)
            return set()
        if ev.key.startswith(keys.STATE):
            node, iid = ev.key[len(keys.STATE):].split("/", 1)
            if ev.kind == "put":
                new = records.loads(StateRecord, ev.value)
                by_node = self._reports.setdefault(iid, {})
                if self.on_report is not None:
                    self.on_report(by_node.get(node), new)
                by_node[node] = new
            elif iid in self._reports:
                self._reports[iid].pop(node, None)
                if not self._reports[iid]:
                    del self._reports[iid]
            entry = self.instances.get(iid)
            if entry is not None:
                self._attach_report(entry)
            else:
                self._find_strays(iid, "")
            # a report changes no reconcile decision (the confirm timeout is a timer: see
            # dispatch.Dispatcher.scan; an ended instance frees room, which placement sees),
            # except a failure for good: its job may reschedule it
            if ev.kind == "put" and new.state == FAILED and entry is not None and entry.record.node == node:
                return {entry.record.job}
            return set()
        return set()

    # --- the scheduler's own writes --------------------------------------------------------
    def expect_own_write(self, rec: InstanceRecord, value: bytes) -> None:
        """`rec`, serialised as `value`, is being written by this scheduler: the watch may bring it
        back before etcd's reply does, and takes the record from here instead of parsing it."""
        self._writing[rec.id] = (value, rec)

    def forget_own_write(self, iid: str) -> None:
        """The write of `iid` got its reply (or failed): nothing more to expect from the watch."""
        self._writing.pop(iid, None)

    def put_own_write(self, rec: InstanceRecord, revision: int) -> None:
        """A record this scheduler committed at `revision`, applied at once so that the next
        decision sees it (unless the watch was first)."""
        entry = self.instances.get(rec.id)
        if entry is None or entry.mod_revision < revision:
            self.put_instance(rec, revision)

    def put_instance(self, rec: InstanceRecord, revision: int) -> None:
        """An instance record as written at `revision` (from a watch, or our own commit)."""
        entry = self.instances.get(rec.id)
        if entry is None:
            entry = self.instances[rec.id] = Entry(rec, revision)
            self._by_job[rec.job].add(rec.id)
            self._job_order.pop(rec.job, None)
        else:
            entry.record, entry.mod_revision = rec, revision
        self._attach_report(entry)

    def _attach_report(self, entry: Entry) -> None:
        # a report counts only if it comes from the node the instance is placed on now
        entry.state = self._reports.get(entry.id, {}).get(entry.record.node)
        self._find_strays(entry.id, entry.record.node)
        self._index(entry.id, entry)

    def _find_strays(self, iid: str, placed_on: str) -> None:
        reports = self._reports.get(iid)
        if not reports or (len(reports) == 1 and placed_on in reports):   # the usual case, quickly
            if iid in self._strays:
                del self._strays[iid]
            return
        nodes = {n for n, rep in reports.items() if n != placed_on and rep.state not in TERMINAL}
        if nodes:
            self._strays[iid] = nodes
        else:
            self._strays.pop(iid, None)

    def _index(self, iid: str, e: Entry | None) -> None:
        """Move the instance to where it now belongs in each index (most events, a report of an
        instance already counted, change none of them: each index is touched only if it moves)."""
        r = e.record if e is not None else None
        pending = r is not None and r.desired == "run" and not r.node and not r.lost
        if pending != (iid in self._pending_ids):
            group = group_of(iid)
            if pending:
                self._pending_ids.add(iid)
                self._pending_groups.setdefault(group, set()).add(iid)
            else:
                self._pending_ids.discard(iid)
                if not self._pending_ids:      # emptied: made anew, a set keeps its largest table
                    self._pending_ids = set()  # (4 MiB once a 100,000-instance job was placed)
                self._pending_groups[group].discard(iid)
                if not self._pending_groups[group]:
                    del self._pending_groups[group]
        if e is not None and unsettled(e):
            self._unsettled.add(iid)
        else:
            self._unsettled.discard(iid)
        held = None
        if e is not None and holds_reservation(e):
            res = r.reserved
            amounts = (res.get("cpu_milli", 0), res.get("memory_bytes", 0), res.get("disk_bytes", 0),
                       res.get("gpu_milli", 0))
            if len(self._amounts) >= AMOUNTS_KEPT:
                self._amounts.clear()
            held = (r.node, self._amounts.setdefault(amounts, amounts))
        old = self._holding.get(iid)
        if held != old:
            if old is not None:
                self._hold(iid, old, -1)
            if held is not None:
                self._hold(iid, held, +1)
        if held is not None and r.gpus:
            self._gpu_holders.add(iid)
        else:
            self._gpu_holders.discard(iid)

    def _hold(self, iid: str, held: tuple[str, tuple[int, int, int, int]], sign: int) -> None:
        """Count (+1) or uncount (-1) an instance's reservation in the running sums."""
        node, amounts = held
        if sign > 0:
            self._holding[iid] = held
        else:
            del self._holding[iid]
        alloc = self._node_alloc.setdefault(node, [0, 0, 0, 0])
        for i, v in enumerate(amounts):
            alloc[i] += sign * v
        shape = (amounts[0], amounts[1], amounts[3])
        self._shapes[shape] = self._shapes.get(shape, 0) + sign
        if not self._shapes[shape]:
            del self._shapes[shape]
        job = keys.instance_job(iid)
        self._holding_by_job[job] = self._holding_by_job.get(job, 0) + sign
        if not self._holding_by_job[job]:
            del self._holding_by_job[job]

    # --- queries ----------------------------------------------------------------------------
    def job_entries(self, job: str) -> list[Entry]:
        """The job's instances in id order. The order is kept while none of them comes or goes: a
        rolling job is looked at again and again with the same 20,000, and sorting their ids was
        a tenth of each look."""
        ids = self._job_order.get(job)
        if ids is None:
            ids = self._job_order[job] = sorted(self._by_job.get(job, ()))
        instances = self.instances
        return [instances[i] for i in ids if i in instances]

    def state_of(self, e: Entry) -> str:
        return effective_state(e.record, e.state)

    def allocated(self, exclude: set[str] = frozenset()) -> dict[str, records.ResourceAmounts]:
        sums = {node: list(a) for node, a in self._node_alloc.items()}
        for iid in exclude:
            held = self._holding.get(iid)
            if held is not None:
                alloc = sums[held[0]]
                for i, v in enumerate(held[1]):
                    alloc[i] -= v
        out: dict[str, records.ResourceAmounts] = defaultdict(records.ResourceAmounts)
        out.update((node, records.ResourceAmounts(*a)) for node, a in sums.items())
        return out

    def counts(self, job: str) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for e in self.job_entries(job):
            out[self.state_of(e)] += 1
        return dict(out)

    def placed_per_node(self) -> dict[str, int]:
        """Node -> instances placed on it and not lost (whatever they are doing)."""
        count: dict[str, int] = {}
        for e in self.instances.values():
            if e.record.node and not e.record.lost:
                count[e.record.node] = count.get(e.record.node, 0) + 1
        return count

    def deployment_revision(self, job: str) -> int:
        """The mod revision of the job's deployment record (0: none): what its next write expects."""
        return self._deployment_revisions.get(job, 0)

    def version_revision(self, job: str, number: int) -> int:
        return self._version_revisions.get((job, number), 0)

    def instance_count(self, job: str) -> int:
        return len(self._by_job.get(job, ()))

    def rolling_out(self) -> Iterator[str]:
        """Jobs whose deployment is rolling: time alone moves them on (min_healthy_time, deadlines)."""
        return (j for j, d in self.deployments.items() if d.rolling)

    def job_revision(self, job: str) -> int:
        """The etcd revision of the job's record as cached (0: no such job): the comparison a
        write of that record carries."""
        return self._job_revisions.get(job, 0)

    @property
    def nodes_version(self) -> int:
        """Changes whenever a node record does: anything built from `nodes` is stale after."""
        return self._nodes_version

    def pending_by_group(self) -> Mapping[tuple[str, str], Set[str]]:
        """Instance ids waiting for a node, by (job, group), of jobs that exist. Read-only."""
        return {k: ids for k, ids in self._pending_groups.items() if k[0] in self.jobs}

    def pending_count(self) -> int:
        return len(self._pending_ids)

    def unsettled_entries(self) -> Iterator[Entry]:
        """The instances an agent has yet to act on (see `unsettled`)."""
        return (self.instances[i] for i in self._unsettled)

    def is_unsettled(self, iid: str) -> bool:
        return iid in self._unsettled

    def unsettled_count(self) -> int:
        return len(self._unsettled)

    def allocations(self) -> Mapping[str, Sequence[int]]:
        """Node -> what instances hold on it now, [cpu milli, memory bytes, disk bytes, gpu milli];
        nodes holding nothing may be absent. Read-only: the host table reads 5,000 of these per
        decision, and a tuple copied for each cost a small job 3 ms next to 100,000 instances."""
        return self._node_alloc

    def holds(self, iid: str) -> bool:
        """The instance counts against its node's capacity (see `holds_reservation`)."""
        return iid in self._holding

    def jobs_holding(self) -> Iterator[str]:
        """Jobs with at least one instance holding a reservation."""
        return iter(list(self._holding_by_job))

    def gpu_holders(self) -> Iterator[InstanceRecord]:
        """Records of the instances holding GPU devices."""
        return (self.instances[i].record for i in self._gpu_holders)

    def shape_counts(self) -> Mapping[tuple[int, int, int], int]:
        """(cpu milli, memory bytes, gpu milli) -> instances holding that reservation. Read-only."""
        return self._shapes

    def stray_copies(self) -> Mapping[str, Set[str]]:
        """Instance -> nodes reporting it alive that it is not placed on. Read-only."""
        return self._strays

    def reports_of(self, iid: str) -> Mapping[str, StateRecord]:
        """Node -> the latest report of `iid` from that node (any node, not only its own)."""
        return self._reports.get(iid, {})

    def all_reports(self) -> Iterator[tuple[str, str, StateRecord]]:
        """(instance, node, report) for every report held."""
        return ((iid, node, rep) for iid, by_node in self._reports.items() for node, rep in by_node.items())

    def take_returned(self) -> set[str]:
        """Nodes that came back after being down since the last call (their inventory is suspect)."""
        out, self._returned = self._returned, set()
        return out


__all__ = ["ClusterState", "Entry", "effective_state", "holds_reservation",
           "PENDING", "STARTING", "RUNNING", "EXITED", "FAILED", "LOST", "STOPPED"]
