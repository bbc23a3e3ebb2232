"""From the cluster state to a placement decision, as a value: which pending instances go where,
which stay pending and why, which running ones are evicted to make room. The engine
(`placement/`) decides on a host table and asks; this module builds those from the cache and
turns the engine's answer into the instance records to commit. It writes nothing and calls
nothing back: the controller commits and tells agents. `plan` is the same decision for a spec
not submitted yet (`ctl plan`).
"""
from __future__ import annotations

import dataclasses
import heapq
import itertools
import time
from collections import defaultdict
from collections.abc import Mapping, Set
from dataclasses import dataclass, field

import numpy as np

from packyard import imageref, records
from packyard.records import NO_ITEMS, InstanceRecord, ResourceAmounts, evolve
from packyard.spec import Affinity, Constraint, JobSpec
from scheduler import placement
from scheduler.images import ImageIndex
from scheduler.reconciler import Config as ReconcileConfig
from scheduler.reconciler import reconcile
from scheduler.specs import SpecCache
from scheduler.state import ClusterState, holds_reservation


@dataclass(frozen=True)
class Decision:
    """One placement pass. `placed` and `unplaced` (with a new reason) are updated records;
    `evicted` are running instances to stop for room, `evicted_for` maps a placed instance to
    the victims it needs gone first."""
    placed: tuple[InstanceRecord, ...] = ()
    unplaced: tuple[InstanceRecord, ...] = ()
    evicted: tuple[InstanceRecord, ...] = ()
    evicted_for: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    more: bool = False                   # pending instances left for the next pass (batching)
    results: tuple[placement.GroupPlacement, ...] = ()
    seconds: float = 0.0                 # time the decision took

    @property
    def empty(self) -> bool:
        return not (self.placed or self.unplaced or self.evicted)


@dataclass(frozen=True)
class Planned:
    """What submitting a spec would do to one instance (`ctl plan`)."""
    action: str                          # place | stop | keep
    record: InstanceRecord
    node: str
    reason: str


class Placer:
    def __init__(self, state: ClusterState, specs: SpecCache, batch: int = 5000):
        self.state = state
        self.specs = specs
        # instances placed per decision at most: placing 100,000 at once would hold the event
        # loop for seconds (watches, the API and agents' replies all wait); in batches, the
        # first instances are committed and starting while the next are placed
        self.batch = batch
        self.images = ImageIndex(state)                  # which hosts hold a registry image
        self._table_base: placement.HostTable | None = None
        self._table_nodes: tuple[int, str] = (-1, "")   # the nodes_version and GPU model it was built for

    # --- the decision -------------------------------------------------------------------------
    def decide(self, engine: placement.EngineConfig, now: float) -> Decision:
        """Place what is pending now, most urgent first, a bounded batch."""
        pending = self.state.pending_by_group()
        if not pending:
            return Decision()
        started = time.perf_counter()
        asks, members, more = self._asks(pending, now)
        if not asks:                  # all of it waits for a reschedule delay
            return Decision(more=more)
        table = self.host_table(engine.gpu_model)
        # victims can only be of jobs below the most urgent ask: usually none, and listing every
        # running instance would cost more than the placement
        victims = self.running(above=max(a.priority for a in asks) - engine.preempt_margin)
        results = placement.place(table, asks, engine, running=victims)
        placed: list[InstanceRecord] = []
        unplaced: list[InstanceRecord] = []
        evicted: list[InstanceRecord] = []
        evicted_for: dict[str, tuple[str, ...]] = {}
        for result, entries in zip(results, members, strict=True):
            for p in result.preemptions:
                evicted_for[entries[p.instance].id] = p.victims
            for victim in result.preempt:
                # stopped to make room; its slot gets a new instance from the reconciler, pending
                # until there is room for its (lower) priority again
                v = self.state.instances[victim].record
                evicted.append(evolve(v, desired="stop", reason=f"preempted by {result.ask.job} "
                                                                f"(priority {result.ask.priority})"))
            reserved = dataclasses.asdict(result.reserved)
            gpus = result.gpus or [()] * len(result.hosts)
            for entry, host, devices in zip(entries, result.hosts, gpus, strict=False):
                placed.append(evolve(entry.record, node=host, reserved=reserved, placed_at=now,
                                     attempts=entry.record.attempts + 1, reason="",
                                     gpus=list(devices) if devices else NO_ITEMS))
            reason = explain(result)
            for entry in entries[len(result.hosts):]:
                if entry.record.reason != reason:
                    unplaced.append(evolve(entry.record, reason=reason))
        return Decision(tuple(placed), tuple(unplaced), tuple(evicted), evicted_for, more,
                        tuple(results), time.perf_counter() - started)

    def _asks(self, pending: Mapping[tuple[str, str], Set[str]], now: float) -> tuple[list, list, bool]:
        """One ask per pending group (per set of nodes to avoid, for rescheduled instances; per
        instance, for a system job's, each pinned to its node), higher priority first, then first
        come first served, up to the batch: (asks, the entries each ask is for, whether some are
        left for later). A rescheduled instance waits for its delay (`not_before`); a rollout's
        replacement for its old instance to end."""
        def urgency(k: tuple[str, str]) -> tuple:
            job = self.state.jobs[k[0]]
            return (-self.specs.of(job).priority, job.submitted_at, k)
        asks, members = [], []
        budget, more = self.batch, False
        for job_name, group_name in sorted(pending, key=urgency):
            if budget <= 0:
                more = True
                break
            spec = self.specs.of(self.state.jobs[job_name])
            ids = pending[(job_name, group_name)]
            more |= len(ids) > budget
            if len(ids) <= 4 * budget:   # lowest slots first (what users and tests expect to see)
                chosen = heapq.nsmallest(budget, ids, key=_index_of)
            else:                        # a huge group: any batch will do, without ranking them all
                chosen = sorted(itertools.islice(ids, budget), key=_index_of)
            by_avoid: dict[tuple[tuple[str, ...], str, str], list] = {}
            for i in chosen:
                e = self.state.instances[i]
                if e.record.not_before > now:
                    continue
                if e.record.replaces and self.state.holds(e.record.replaces):
                    continue          # a rollout's: stop, then start, in the room the old one frees
                by_avoid.setdefault((self._avoided(e.record.avoid), e.record.pinned,
                                     self._home(e.record.replaces)), []).append(e)
            for (avoid, pinned, home), entries in by_avoid.items():
                budget -= len(entries)
                ask = self.ask_for(spec, spec.group(group_name), len(entries), pinned)
                if avoid:
                    ask = dataclasses.replace(ask, constraints=[*ask.constraints, Constraint(
                        attribute="node.name", operator="not_in", value=list(avoid))])
                if home:              # back where the instance it replaces was, where it fits
                    ask = dataclasses.replace(ask, affinity=[*ask.affinity, Affinity(
                        attribute="node.name", operator="=", value=home, weight=100)])
                asks.append(ask)
                members.append(entries)
        return asks, members, more

    def _home(self, replaced: str) -> str:
        """The ready node a rollout's replacement prefers: the one its old instance ran on."""
        old = self.state.instances.get(replaced) if replaced else None
        return old.record.node if old is not None and old.record.node in self.state.nodes else ""

    def _avoided(self, nodes: list[str]) -> tuple[str, ...]:
        """The nodes a rescheduled instance avoids: none when that would leave no ready node."""
        avoid = tuple(sorted(n for n in nodes if n in self.state.nodes))
        return avoid if len(avoid) < len(self.state.nodes) else ()

    def ask_for(self, spec: JobSpec, group, count: int, pinned: str = "") -> placement.GroupAsk:
        """One placement decision for `count` new instances of a group (on node `pinned` only,
        if given: a system job's); the hosts its running instances are on feed spread (and
        distinct hosts)."""
        res = group.resources
        # only spread looks at them (a walk over the whole job: not for a group without spread)
        existing = [e.record.node for e in self.state.job_entries(spec.name)
                    if e.record.group == group.name and e.record.desired == "run" and holds_reservation(e)] \
            if group.spread and not pinned else []
        pin = [Constraint(attribute="node.name", operator="=", value=pinned)] if pinned else []
        return placement.GroupAsk(
            job=spec.name, group=group.name, count=count, kind=group.kind, priority=spec.priority,
            request=ResourceAmounts(res.cpu, res.memory, res.disk, res.gpu),
            constraints=[*group.constraints, *pin], existing_hosts=existing,
            spread=list(group.spread), affinity=list(group.affinity), image_bytes=self._image_bytes(spec, group))

    def _image_bytes(self, spec: JobSpec, group) -> dict[str, int]:
        """Bytes of the group's registry image each host holds, as the agents report their stores
        (the image locality tie-break); a host where the job's own instances of that image are
        placed counts as holding it all (pulled, or pulling: its report may not be in yet)."""
        image = group.container.image if group.kind == "container" and group.container else None
        if not image or not imageref.is_reference(image):
            return {}
        held = self.images.holders(image)
        same = {g.name for g in spec.groups if g.kind == "container" and g.container and g.container.image == image}
        whole = max(held.values(), default=1)
        for e in self.state.job_entries(spec.name):
            if e.record.group in same and e.record.node and holds_reservation(e):
                held[e.record.node] = whole
        return held

    def eligible(self, spec: JobSpec) -> dict[str, frozenset[str]] | None:
        """For a system job, the ready nodes each group runs an instance on: those passing the
        static filters placement applies (its kind's driver, its constraints), room aside. None
        for other jobs (the reconciler's `eligible`)."""
        if spec.type != "system":
            return None
        table = self._base_table(self._table_nodes[1] or "devices")   # whichever it was built for
        return {g.name: frozenset(placement.eligible(table, g.kind, g.constraints)) for g in spec.groups}

    # --- the hosts as the engine sees them ------------------------------------------------------
    def host_table(self, gpu_model: str = "devices") -> placement.HostTable:
        """The ready hosts with their allocation now. The hosts' own part (capacity, labels,
        attributes) is built again only when a node record changed; the allocation comes from
        the cache's running sums: a decision does not walk the instances."""
        base = self._base_table(gpu_model)
        alloc, zero = self.state.allocations(), (0, 0, 0, 0)
        allocated = np.array([alloc.get(n, zero) for n in base.names], dtype=np.int64).reshape(len(base), 4)
        gpu_free = base.gpu_capacity.copy()
        for node, used in self.gpu_devices().items():
            gpu_free[base.index(node), :len(used)] -= np.array(used, dtype=np.int64)
        return base.with_allocation(allocated, gpu_free)

    def _base_table(self, gpu_model: str) -> placement.HostTable:
        """The hosts' own part of the table (nothing allocated), built again when a node changed."""
        if self._table_base is None or self._table_nodes != (self.state.nodes_version, gpu_model):
            self._table_base = placement.HostTable.from_hosts(
                (placement.Host(name=n.name, capacity=ResourceAmounts.of(n.capacity),
                                allocated=ResourceAmounts(), ready=True, labels=n.labels,
                                attributes=n.attributes) for n in self.state.nodes.values()),
                gpu_model=gpu_model)
            self._table_nodes = (self.state.nodes_version, gpu_model)
        return self._table_base

    def hosts(self, exclude: Set[str] = frozenset()) -> list[placement.Host]:
        """The ready hosts as if the instances in `exclude` had ended."""
        alloc = self.state.allocated(set(exclude))
        devices = self.gpu_devices(exclude)
        return [placement.Host(name=n.name, capacity=ResourceAmounts.of(n.capacity),
                               allocated=alloc.get(n.name, ResourceAmounts()), ready=True,
                               labels=n.labels, attributes=n.attributes,
                               gpu_allocated=devices.get(n.name))
                for n in self.state.nodes.values()]

    def gpu_devices(self, exclude: Set[str] = frozenset()) -> dict[str, tuple[int, ...]]:
        """Milli-GPUs held on each device of each node, from the instances' recorded devices."""
        used: dict[str, list[int]] = {}
        for r in self.state.gpu_holders():
            if r.id in exclude or r.node not in self.state.nodes:
                continue
            width = -(-self.state.nodes[r.node].capacity.get("gpu_milli", 0) // 1000)
            per_device = used.setdefault(r.node, [0] * width)
            share = r.reserved.get("gpu_milli", 0) if len(r.gpus) == 1 else 1000
            for d in r.gpus:
                if d < width:
                    per_device[d] = min(1000, per_device[d] + min(share, 1000))
        return {node: tuple(v) for node, v in used.items()}

    def running(self, above: int | None = None) -> list[placement.Running]:
        """Instances holding reservations, as preemption sees them (possible victims); only
        those of jobs of priority `above` or lower, if given."""
        out = []
        for job_name in self.state.jobs_holding():
            job = self.state.jobs.get(job_name)
            if job is None:
                continue
            priority = self.specs.of(job).priority
            if above is not None and priority > above:
                continue
            for e in self.state.job_entries(job_name):
                r = e.record
                if not self.state.holds(r.id) or r.desired != "run" or r.node not in self.state.nodes:
                    continue
                out.append(placement.Running(instance=r.id, host=r.node, priority=priority,
                                             reserved=ResourceAmounts.of(r.reserved), gpus=tuple(r.gpus)))
        return out

    def workload_mix(self) -> placement.WorkloadMix | None:
        """The shapes running now: what the GPU-aware scorers expect to keep arriving, with how
        many of each are restricted by their group's constraints to some hosts (the GPUs those
        need are kept for them: placement/scarcity.reserved). Only GPU groups with constraints
        are walked (the shapes themselves are kept counted by the state)."""
        counts = {shape: float(n) for shape, n in self.state.shape_counts().items()}
        if not counts:
            return None
        restricted: dict[tuple[int, int, int], dict] = {}
        # (every pass asks for the mix: no walk at all while nothing running holds a GPU)
        for job_name in self.state.jobs_holding() if any(gpu for _, _, gpu in counts) else ():
            job = self.state.jobs.get(job_name)
            spec = self.specs.of(job) if job is not None else None
            groups = {g.name: placement.where_of(g.constraints) for g in spec.groups
                      if g.constraints and g.resources.gpu} if spec is not None else {}
            if not groups:
                continue
            for e in self.state.job_entries(job_name):
                r = e.record
                if r.group in groups and self.state.holds(r.id):
                    res = r.reserved
                    shape = (res.get("cpu_milli", 0), res.get("memory_bytes", 0), res.get("gpu_milli", 0))
                    by = restricted.setdefault(shape, {})
                    by[groups[r.group]] = by.get(groups[r.group], 0) + 1
        return placement.WorkloadMix.of(counts, restricted=restricted)

    # --- dry run ----------------------------------------------------------------------------------
    def plan(self, spec: JobSpec, version: int, engine: placement.EngineConfig, now: float,
             reconcile_config: ReconcileConfig) -> list[Planned]:
        """What submitting `spec` would do, decided like `decide` but committed nowhere."""
        job = records.JobRecord(name=spec.name, spec_json=spec.to_json(), version=version,
                                submitted_at=now)
        entries = self.state.job_entries(spec.name)
        result = reconcile(job, spec, entries, set(self.state.nodes), now, reconcile_config,
                           eligible=self.eligible(spec))
        stopping = {r.id: r for r in (*result.stop, *result.lost)}
        pending = [r for r in result.create] + [
            e.record for e in entries if e.record.desired == "run" and not e.record.node
            and not e.record.lost and e.id not in stopping]
        # capacity freed by what this submission stops counts, as it will once they end
        table = placement.HostTable.from_hosts(self.hosts(exclude=set(stopping)), gpu_model=engine.gpu_model)
        by_group: dict[tuple[str, str], list[InstanceRecord]] = defaultdict(list)
        for r in pending:
            by_group[(r.group, r.pinned)].append(r)
        slots = list(by_group)
        asks = [self.ask_for(spec, spec.group(name), len(by_group[(name, pinned)]), pinned)
                for name, pinned in slots]
        out: list[Planned] = []
        for key, res in zip(slots, placement.place(table, asks, engine), strict=True):
            recs = sorted(by_group[key], key=lambda r: r.index)
            reserved = dataclasses.asdict(res.reserved)
            for i, r in enumerate(recs):
                placed = i < len(res.hosts)
                out.append(Planned("place", evolve(r, reserved=reserved), res.hosts[i] if placed else "",
                                   "" if placed else explain(res)))
        for r in stopping.values():
            out.append(Planned("stop", r, r.node, r.reason or "its group changed or was scaled down"))
        for e in entries:
            if e.record.desired == "run" and e.record.node and not e.record.lost and e.id not in stopping:
                out.append(Planned("keep", e.record, e.record.node, ""))
        return out


def explain(result: placement.GroupPlacement) -> str:
    """Why instances of a group are still pending: `no host fits: 2 not enough memory, ...`."""
    if not result.reasons:
        return "no ready host" if not result.hosts else ""
    parts = [f"{n} {reason}" for reason, n in sorted(result.reasons.items(), key=lambda kv: -kv[1])]
    why = "no host fits: " + ", ".join(parts)
    return f"{why}; {result.preemption}" if result.preemption else why


def _index_of(iid: str) -> int:
    """The slot index of an instance id `<job>.<group>.<index>-<generation>`."""
    return int(iid.rsplit(".", 1)[1].split("-", 1)[0])
