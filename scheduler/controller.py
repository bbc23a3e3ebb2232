"""The control loop: watch etcd → reconcile each changed job → place pending instances → commit
the plan to etcd → tell the agents. Runs as one task, so decisions never race each other; every
change is written to etcd (revision-checked) before any agent hears of it.
"""
from __future__ import annotations

import asyncio
import dataclasses
import heapq
import itertools
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import numpy as np

from packyard import keys, records
from packyard.etcd import Etcd, EtcdUnavailable, Event
from packyard.records import TERMINAL, InstanceRecord, ResourceAmounts, evolve
from packyard.spec import JobSpec, load_json
from packyard.v1 import agent_pb2, common_pb2
from scheduler import metrics, placement
from scheduler.agents import AgentClients
from scheduler.leader import Leadership
from scheduler.profiles import LearnerConfig, ProfileLearner
from scheduler.reconciler import Config as ReconcileConfig
from scheduler.reconciler import Result, reconcile
from scheduler.state import ClusterState, effective_state, holds_reservation

log = logging.getLogger(__name__)
COMMITS_IN_FLIGHT = 4     # transactions of one commit sent together (see Controller.commit)


@dataclass(frozen=True)
class ControllerConfig:
    tick: float = 1.0                 # re-evaluate at least this often (timeouts, retries)
    resend_after: float = 2.0         # re-send Start/Stop not yet acknowledged by a report
    resend_after_accepted: float = 8.0   # ... or, for a Start the agent accepted, this much later
    place_batch: int = 5000           # instances placed per evaluation at most (see place_pending)
    audit_every: float = 30.0         # each node's inventory is compared with etcd this often
    stop_grace: float = 10.0          # SIGTERM → SIGKILL for `ctl stop`
    persist_profiles_every: float = 5.0
    # a stopped job whose instances have all ended is forgotten (its records leave etcd) this long
    # after it was stopped, or at once if stopped with purge; 0: only those
    purge_stopped_after: float = 86400.0
    learner: LearnerConfig = LearnerConfig()
    reconcile: ReconcileConfig = ReconcileConfig()
    engine: placement.EngineConfig = dataclasses.field(default_factory=placement.EngineConfig)


def to_resources(a: ResourceAmounts) -> common_pb2.Resources:
    return common_pb2.Resources(cpu_milli=a.cpu_milli, memory_bytes=a.memory_bytes,
                                disk_bytes=a.disk_bytes, gpu_milli=a.gpu_milli)


class Controller:
    def __init__(self, etcd: Etcd, agents: AgentClients, config: ControllerConfig = ControllerConfig(),
                 clock: Callable[[], float] = time.time):
        self.etcd = etcd
        self.agents = agents
        self.config = config
        self.clock = clock
        self.state = ClusterState(on_report=self._count_end)
        self.learner = ProfileLearner(dict(self.config.engine.profiles), self.config.learner)
        self._profiles_saved = 0.0
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._told: dict[str, float] = {}          # instance id -> when an agent was last told
        self._failures: dict[str, int] = {}        # node -> Start calls failed in a row
        self._accepted: set[tuple[str, str]] = set()   # (instance, node): the node took its Start
        self._told_stray: dict[tuple[str, str], float] = {}
        self._audit_next = 0                           # round-robin position over the nodes
        self._leading_since = 0.0
        self._specs: dict[tuple[str, int], tuple[str, JobSpec]] = {}
        self._group_specs: dict[tuple[str, int, str], tuple[dict, agent_pb2.InstanceSpec, JobSpec]] = {}
        self._tasks: list[asyncio.Task] = []
        self._background: set[asyncio.Task] = set()
        self.ready = asyncio.Event()
        # One decision at a time: evaluations and API writes both read-modify-write the cache.
        self.lock = asyncio.Lock()
        self._stopping = False
        self._table_base: placement.HostTable | None = None
        self._table_nodes = -1            # the nodes_version _table_base was built at
        self._timers_at = 0.0             # when confirm timeouts and re-sends were last looked at
        # Placement runs only while leading; without an election (one replica, tests) always.
        self.leadership: Leadership | None = None
        self.leading = True

    # --- life cycle -----------------------------------------------------------------------
    async def start(self) -> None:
        _, saved = await self.etcd.get_prefix(keys.PROFILES)
        for kv in saved:
            self.learner.load(kv.value)
        self.learner.changed_kinds.clear()
        for prefix in (keys.NODES, keys.JOBS, keys.INSTANCES, keys.STATE, keys.USAGE):
            revision, kvs = await self.etcd.get_prefix(prefix)
            self._dirty |= self.state.load(prefix, kvs)
            self._observe_usage(kvs)
            self._tasks.append(await self.etcd.watch_prefix(prefix, revision + 1, self._on_events,
                                                            on_compacted=self._relister(prefix)))
        self._dirty.add("*")
        self._tasks.append(asyncio.get_running_loop().create_task(self._run()))
        metrics.LEADER.set(1 if self.leading else 0)
        self.ready.set()

    def follow(self, leadership: Leadership) -> None:
        """Place only while `leadership` says so. Followers keep their cache current through the
        same watches and serve the API, so a takeover starts from a warm cache."""
        self.leadership = leadership
        previous = leadership.on_change

        def changed(leading: bool) -> None:
            previous(leading)
            self.set_leading(leading)
        leadership.on_change = changed
        self.set_leading(leadership.leading)

    def set_leading(self, leading: bool) -> None:
        self.leading = leading
        metrics.LEADER.set(1 if leading else 0)
        if leading:
            self._leading_since = self.clock()
            # every job is looked at afresh; what another leader told agents and we did not is
            # missing from _told, so it is said again at once (agents take repeats)
            self.kick("*")

    async def stop(self) -> None:
        self._stopping = True
        for t in self._tasks + list(self._background):
            t.cancel()
        for t in self._tasks + list(self._background):
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass

    def _relister(self, prefix: str):
        """For a watch that fell behind etcd's compaction: list the prefix again, replace what
        the cache holds under it, and go on watching from there."""
        async def relist(compact_revision: int) -> int:
            revision, kvs = await self.etcd.get_prefix(prefix)
            self._dirty |= self.state.reload(prefix, kvs)
            self.kick()
            return revision + 1
        return relist

    async def _on_events(self, batch: list[Event]) -> None:
        for ev in batch:
            self._dirty |= self.state.apply(ev)
        self._observe_usage(batch)
        self.kick()

    @staticmethod
    def _count_end(old: records.StateRecord | None, new: records.StateRecord) -> None:
        if new.state in TERMINAL and (old is None or old.state != new.state):
            reason = new.reason if new.reason == "OOMKilled" or not new.reason else new.reason.split(":")[0]
            metrics.INSTANCE_ENDS.labels(new.state, reason[:40]).inc()

    def _observe_usage(self, kvs) -> None:
        for kv in kvs:
            if kv.key.startswith(keys.USAGE) and kv.value:
                self.learner.observe(records.loads(records.UsageRecord, kv.value))

    async def save_profiles(self, now: float) -> None:
        """Learned profiles go to etcd (debounced): a restarted scheduler starts from them."""
        if not self.learner.changed_kinds or now - self._profiles_saved < self.config.persist_profiles_every:
            return
        kinds, self.learner.changed_kinds = self.learner.changed_kinds, set()
        try:
            await self.etcd.put_many([(keys.profile(k), records.dumps(self.learner.record(k)))
                                      for k in sorted(kinds) if k])
        except Exception:
            self.learner.changed_kinds |= kinds   # etcd away: saved on a later evaluation
            raise
        self._profiles_saved = now

    def engine_config(self) -> placement.EngineConfig:
        """The configured engine with the profiles as learned so far and the current mix."""
        mix = self.config.engine.workload_mix or self.workload_mix()
        return dataclasses.replace(self.config.engine, profiles=self.learner.profiles(), workload_mix=mix)

    def kick(self, job: str | None = None) -> None:
        if job:
            self._dirty.add(job)
        self._wake.set()

    async def _run(self) -> None:
        # The flag, not only cancellation, ends the loop: on Python 3.11 asyncio.wait_for can
        # swallow a cancel that lands as the awaited event fires, and the loop would run on.
        while not self._stopping:
            try:
                async with asyncio.timeout(self.config.tick):
                    await self._wake.wait()
            except TimeoutError:
                pass                   # timers (confirm timeouts, re-sends) are due even without events
            self._wake.clear()
            await asyncio.sleep(0)     # an evaluation kicked by the last one lets the loop run first
            if not self.leading:
                continue
            try:
                async with self.lock:
                    await self.evaluate()
            except Exception as e:
                if isinstance(e, EtcdUnavailable):   # a line, not a traceback, per try while etcd is away
                    log.warning("evaluation failed: %s; retrying on the next tick", e)
                else:
                    log.exception("evaluation failed; retrying on the next tick")
                self._dirty.add("*")
                await asyncio.sleep(self.config.tick)

    # --- one evaluation ---------------------------------------------------------------------
    async def evaluate(self) -> None:
        now = self.clock()
        # timers are looked at once per tick, not on every batch of events: the instances
        # awaiting an agent are many while a big job starts, and none is due sooner
        timers = now - self._timers_at >= self.config.tick or "*" in self._dirty
        due, starts, stops = self.scan_unsettled(now) if timers else (set(), [], [])
        dirty, self._dirty = self._dirty | due, set()
        jobs = list(self.state.jobs) if "*" in dirty else [j for j in dirty if j in self.state.jobs]
        ready = self.ready_nodes() if jobs else set()    # most evaluations reconcile nothing
        for name in jobs:
            result = self.reconcile_job(name, ready, now)
            if not result.empty:
                await self.apply(result)
        await self.place_pending()
        if timers:
            self._timers_at = now
            await self.resend(now, starts, stops)
            await self.purge_ended(now)
        await self.save_profiles(now)

    def ready_nodes(self) -> set[str]:
        return set(self.state.nodes)

    def spec_of(self, job: records.JobRecord) -> JobSpec:
        # keyed by name and version, and checked against the text: a purged job's name can come
        # back as version 1 of another spec
        key = (job.name, job.version)
        cached = self._specs.get(key)
        if cached is None or cached[0] != job.spec_json:
            cached = self._specs[key] = (job.spec_json, load_json(job.spec_json))
        return cached[1]

    def reconcile_job(self, name: str, ready: set[str], now: float) -> Result:
        job = self.state.jobs[name]
        return reconcile(job, self.spec_of(job), self.state.job_entries(name), ready, now,
                         self.config.reconcile, self._accepted)

    async def apply(self, result: Result) -> None:
        """Write a reconcile result; then tell agents to stop what should no longer run."""
        writes = [*result.create, *result.stop, *result.lost, *result.unassign]
        await self.commit(writes)
        to_stop = [r for r in result.stop if r.node]
        await self.tell_stop(to_stop)

    async def commit(self, recs: list[InstanceRecord],
                     first: tuple[str, bytes, int] | None = None, fenced: bool = True) -> bool:
        """Revision-checked writes (a record changed by someone else since we read it is left
        alone and re-evaluated), applied to the cache at once so the next decision sees them.
        `first` (key, value, expected revision) goes into the first transaction: a job record
        that must not be written unless its instances are, and vice versa for the first chunk.
        `fenced` writes (the leader's decisions) also require the leader key to be still ours;
        API writes (any replica may take a submission) are not fenced."""
        guard = None
        if fenced and self.leadership is not None:
            if not self.leadership.leading:
                return False
            guard = (keys.LEADER, self.leadership.revision)
        step = self.etcd.txn_ops - 1
        chunks = [recs[i:i + step] for i in range(0, len(recs), step)]
        if first is not None:
            # the first transaction alone: if it fails, nothing else is written
            if not await self._commit_chunk(chunks[0] if chunks else [], guard, first):
                self._dirty.add("*")
                return False
            chunks = chunks[1:]
        # the rest a few transactions at a time: etcd commits concurrent proposals together
        # (a 100,000-instance submission took 4 s one transaction after another)
        ok_all = True
        for i in range(0, len(chunks), COMMITS_IN_FLIGHT):
            done = await asyncio.gather(*(self._commit_chunk(c, guard)
                                          for c in chunks[i:i + COMMITS_IN_FLIGHT]))
            if not all(done):
                self._dirty.add("*")
                ok_all = False
        return ok_all

    async def _commit_chunk(self, chunk: list[InstanceRecord], guard: tuple[str, int] | None,
                            first: tuple[str, bytes, int] | None = None) -> bool:
        writes = [first] if first is not None else []
        instances, writing = self.state.instances, self.state.writing
        for r in chunk:
            entry = instances.get(r.id)
            value = records.dumps(r)
            writes.append((keys.instance(r.job, r.id), value, entry.mod_revision if entry else 0))
            # the watch may bring our own write back before the reply does: it takes the record
            # from here instead of parsing the value
            writing[r.id] = (value, r)
        try:
            revision = await self.etcd.put_if_unchanged(writes, guard=guard)
        finally:
            for r in chunk:
                writing.pop(r.id, None)
        if not revision:
            return False
        if first is not None:
            key, value, _ = first
            self.state.apply(Event("put", key, value, revision))
        for r in chunk:            # the records we hold: no need to parse what we just wrote
            entry = instances.get(r.id)
            if entry is None or entry.mod_revision < revision:   # unless the watch was first
                self.state.put_instance(r, revision)
        return True

    # --- forgetting stopped jobs ---------------------------------------------------------------
    async def purge_ended(self, now: float) -> None:
        """Forget stopped jobs whose instances have all ended: those stopped with purge, and the
        rest purge_stopped_after seconds after they were stopped, so that etcd does not keep
        every instance ever run."""
        after = self.config.purge_stopped_after
        for name, job in list(self.state.jobs.items()):
            if job.desired != "stop" or not (job.purge or (after > 0 and now - job.updated_at >= after)):
                continue
            entries = self.state.job_entries(name)
            if all(effective_state(e.record, e.state) in TERMINAL for e in entries):
                await self._purge(name, entries)

    async def _purge(self, name: str, entries: list) -> None:
        """Instance and state records first, the job record last, each transaction guarded by the
        job record's revision: a job submitted again meanwhile is left alone."""
        guard = (keys.job(name), self.state.job_revisions.get(name, 0))
        doomed = []
        for e in entries:
            doomed.append(keys.instance(name, e.id))
            doomed += [keys.state(node, e.id) for node in self.state.reports.get(e.id, {})]
        doomed.append(guard[0])
        step = self.etcd.txn_ops - 1
        for i in range(0, len(doomed), step):
            chunk = doomed[i:i + step]
            if not await self.etcd.put_if_unchanged([], deletes=chunk, guard=guard):
                return
            for key in chunk:          # at once, not when the watch brings them: no second purge
                self.state.apply(Event("delete", key, b"", 0))
        log.info("job %s purged: %d instances forgotten", name, len(entries))

    # --- placement ----------------------------------------------------------------------------
    def pending(self) -> dict[tuple[str, str], set[str]]:
        """Instance ids waiting for a node, by (job, group)."""
        return {k: ids for k, ids in self.state.pending_groups.items() if k[0] in self.state.jobs}

    def host_table(self) -> placement.HostTable:
        """The ready hosts with their allocation now. The hosts' own part (capacity, labels,
        attributes) is built again only when a node record changed; the allocation comes from
        the cache's running sums: an evaluation does not walk the instances."""
        if self._table_base is None or self._table_nodes != self.state.nodes_version:
            self._table_base = placement.HostTable.from_hosts(
                placement.Host(name=n.name, capacity=ResourceAmounts.of(n.capacity),
                               allocated=ResourceAmounts(), ready=True, labels=n.labels,
                               attributes=n.attributes) for n in self.state.nodes.values())
            self._table_nodes = self.state.nodes_version
        base = self._table_base
        zero = (0, 0, 0, 0)
        allocated = np.array([self.state.node_alloc.get(n, zero) for n in base.names],
                             dtype=np.int64).reshape(len(base), 4)
        gpu_free = base.gpu_capacity.copy()
        for node, used in self.gpu_devices().items():
            gpu_free[base.index(node), :len(used)] -= np.array(used, dtype=np.int64)
        return base.with_allocation(allocated, gpu_free)

    def host_table_hosts(self, exclude: set[str] = frozenset()) -> list[placement.Host]:
        alloc = self.state.allocated(exclude)
        devices = self.gpu_devices(exclude)
        return [placement.Host(name=n.name, capacity=ResourceAmounts.of(n.capacity),
                               allocated=alloc.get(n.name, ResourceAmounts()), ready=True,
                               labels=n.labels, attributes=n.attributes,
                               gpu_allocated=devices.get(n.name))
                for n in self.state.nodes.values()]

    def gpu_devices(self, exclude: set[str] = frozenset()) -> dict[str, tuple[int, ...]]:
        """Milli-GPUs held on each device of each node, from the instances' recorded devices."""
        used: dict[str, list[int]] = {}
        for iid in self.state.gpu_holders:
            r = self.state.instances[iid].record
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
        those of jobs that an ask of priority `above` could evict, if given."""
        out = []
        limit = None if above is None else above - self.config.engine.preempt_margin
        jobs = [j for j in self.state.holding_by_job if j in self.state.jobs and
                (limit is None or self.spec_of(self.state.jobs[j]).priority <= limit)]
        for job_name in jobs:
            job = self.state.jobs[job_name]
            priority = self.spec_of(job).priority
            for iid in sorted(self.state.by_job.get(job_name, ())):
                e = self.state.instances.get(iid)
                if e is None or iid not in self.state.holding:
                    continue
                r = e.record
                if r.desired != "run" or r.node not in self.state.nodes:
                    continue
                out.append(placement.Running(instance=r.id, host=r.node, priority=priority,
                                             reserved=ResourceAmounts.of(r.reserved), gpus=tuple(r.gpus)))
        return out

    def workload_mix(self) -> placement.WorkloadMix | None:
        """The shapes running now: what the GPU-aware scorers expect to keep arriving."""
        counts = {shape: float(n) for shape, n in self.state.shapes.items()}
        return placement.WorkloadMix.of(counts) if counts else None

    async def place_pending(self) -> None:
        pending = self.pending()
        metrics.PENDING.set(len(self.state.pending_ids))
        metrics.NODES.labels("ready").set(len(self.state.nodes))
        metrics.NODES.labels("down").set(len(self.state.down))
        if not pending:
            return
        started = time.perf_counter()
        asks, members = [], []
        # higher priority first, then first come first served
        def urgency(k: tuple[str, str]) -> tuple:
            job = self.state.jobs[k[0]]
            return (-self.spec_of(job).priority, job.submitted_at, k)
        order = sorted(pending, key=urgency)
        # A bounded batch per evaluation: placing 100,000 instances at once would hold the event
        # loop for seconds (watches, the API and agents' replies all wait); in batches, the
        # first instances are committed and starting while the next are placed.
        budget, more = self.config.place_batch, False
        for job_name, group_name in order:
            if budget <= 0:
                more = True
                break
            job = self.state.jobs[job_name]
            spec = self.spec_of(job)
            group = spec.group(group_name)
            ids = pending[(job_name, group_name)]
            more |= len(ids) > budget
            if len(ids) <= 4 * budget:   # lowest slots first (what users and tests expect to see)
                chosen = heapq.nsmallest(budget, ids, key=_index_of)
            else:                        # a huge group: any batch will do, without ranking them all
                chosen = sorted(itertools.islice(ids, budget), key=_index_of)
            entries = [self.state.instances[i] for i in chosen]
            budget -= len(entries)
            asks.append(self.ask_for(spec, group, len(entries)))
            members.append(entries)
        table = self.host_table()
        # victims can only be of jobs below the most urgent ask: usually none, and listing every
        # running instance would cost more than the placement
        victims = self.running(above=max(a.priority for a in asks))
        results = placement.place(table, asks, self.engine_config(), running=victims)
        metrics.PLACEMENT_SECONDS.observe(time.perf_counter() - started)
        now = self.clock()
        placed: list[InstanceRecord] = []
        unplaced: list[InstanceRecord] = []
        evicted: list[InstanceRecord] = []
        evicted_for: dict[str, tuple[str, ...]] = {}    # placed instance id -> its victims
        for result, entries in zip(results, members, strict=True):
            for p in result.preemptions:
                evicted_for[entries[p.instance].id] = p.victims
            for victim in result.preempt:
                # stopped to make room; its slot gets a new instance from the reconciler, pending
                # until there is room for its (lower) priority again
                v = self.state.instances[victim].record
                evicted.append(evolve(v, desired="stop", reason=f"preempted by {result.ask.job} "
                                                                f"(priority {result.ask.priority})"))
                self._dirty.add(v.job)
            reserved = dataclasses.asdict(result.reserved)
            gpus = result.gpus or [()] * len(result.hosts)
            for entry, host, devices in zip(entries, result.hosts, gpus, strict=False):
                placed.append(evolve(entry.record, node=host, reserved=reserved, placed_at=now,
                                     attempts=entry.record.attempts + 1, reason="", gpus=list(devices)))
            metrics.PLACEMENTS.labels(result.ask.kind).inc(len(result.hosts))
            reason = explain(result)
            if result.unplaced:
                first = max(result.reasons.items(), key=lambda kv: kv[1])[0] if result.reasons else "no ready host"
                metrics.UNPLACED.labels(first).inc(result.unplaced)
            for entry in entries[len(result.hosts):]:
                if entry.record.reason != reason:
                    unplaced.append(evolve(entry.record, reason=reason))
        if evicted and not await self.commit(evicted):
            # a placement that needs room made by eviction waits until the eviction is in etcd
            stale = {v.id for v in evicted if not self._is_current(v)}
            placed = [r for r in placed if not stale & set(evicted_for.get(r.id, ()))]
        await self.commit(placed + unplaced)
        await self.tell_stop([r for r in evicted if self._is_current(r)])
        await self.tell_start([r for r in placed if self._is_current(r)])
        if evicted or more:
            self.kick()

    def ask_for(self, spec: JobSpec, group, count: int) -> placement.GroupAsk:
        """One placement decision for `count` new instances of a group; the hosts its running
        instances are on feed spread (and distinct hosts)."""
        res = group.resources
        # only spread looks at them (a walk over the whole job: not for a group without spread)
        existing = [e.record.node for e in self.state.job_entries(spec.name)
                    if e.record.group == group.name and e.record.desired == "run" and holds_reservation(e)] \
            if group.spread else []
        return placement.GroupAsk(
            job=spec.name, group=group.name, count=count, kind=group.kind, priority=spec.priority,
            request=ResourceAmounts(res.cpu, res.memory, res.disk, res.gpu),
            constraints=list(group.constraints), existing_hosts=existing,
            spread=list(group.spread), affinity=list(group.affinity))

    def plan(self, spec: JobSpec, version: int) -> list[tuple[str, InstanceRecord, str, str]]:
        """What submitting `spec` would do, decided like place_pending but committed nowhere:
        (action, record, node, reason) for every instance of the job."""
        now = self.clock()
        job = records.JobRecord(name=spec.name, spec_json=spec.to_json(), version=version,
                                submitted_at=now)
        entries = self.state.job_entries(spec.name)
        result = reconcile(job, spec, entries, self.ready_nodes(), now, self.config.reconcile)
        stopping = {r.id: r for r in (*result.stop, *result.lost)}
        pending = [r for r in result.create] + [
            e.record for e in entries if e.record.desired == "run" and not e.record.node
            and not e.record.lost and e.id not in stopping]
        # capacity freed by what this submission stops counts, as it will once they end
        hosts = self.host_table_hosts(exclude=set(stopping))
        table = placement.HostTable.from_hosts(hosts)
        by_group: dict[str, list[InstanceRecord]] = defaultdict(list)
        for r in pending:
            by_group[r.group].append(r)
        asks = [self.ask_for(spec, spec.group(name), len(recs)) for name, recs in by_group.items()]
        out: list[tuple[str, InstanceRecord, str, str]] = []
        for ask, res in zip(asks, placement.place(table, asks, self.engine_config()), strict=True):
            recs = sorted(by_group[ask.group], key=lambda r: r.index)
            reserved = dataclasses.asdict(res.reserved)
            for i, r in enumerate(recs):
                placed = i < len(res.hosts)
                out.append(("place", evolve(r, reserved=reserved), res.hosts[i] if placed else "",
                            "" if placed else explain(res)))
        for r in stopping.values():
            out.append(("stop", r, r.node, r.reason or "its group changed or was scaled down"))
        for e in entries:
            if e.record.desired == "run" and e.record.node and not e.record.lost and e.id not in stopping:
                out.append(("keep", e.record, e.record.node, ""))
        return out

    def _is_current(self, r: InstanceRecord) -> bool:
        """The commit of `r` went through (a refused transaction leaves the cache as it was)."""
        e = self.state.instances.get(r.id)
        return e is not None and e.record == r

    # --- telling agents -----------------------------------------------------------------------
    def instance_spec(self, r: InstanceRecord) -> agent_pb2.InstanceSpec:
        job = self.state.jobs[r.job]
        key = (job.name, job.version, r.group)
        made = self._group_specs.get(key)
        spec = self.spec_of(job)
        if made is None or made[0] != r.reserved or made[2] is not spec:
            # the same for every instance of the group (its reserved amounts too, unless the
            # overhead profile changed between placements): made once
            group = spec.group(r.group)
            res = group.resources
            made = self._group_specs[key] = (r.reserved, agent_pb2.InstanceSpec(
                job=r.job, group=r.group, kind=r.kind,
                request=to_resources(ResourceAmounts(res.cpu, res.memory, res.disk, res.gpu)),
                limit=to_resources(ResourceAmounts.of(r.reserved)),
                driver_json=json.dumps(group.driver_config())), spec)
        out = agent_pb2.InstanceSpec()
        out.CopyFrom(made[1])
        out.id = r.id
        return out

    async def tell_start(self, recs: list[InstanceRecord]) -> None:
        by_node: dict[str, list[InstanceRecord]] = defaultdict(list)
        for r in recs:
            by_node[r.node].append(r)
        # assume the agent takes them (a reply can take seconds on a busy cluster, and re-sending
        # meanwhile only adds work); _start_on brings the re-send forward if it does not
        later = self.clock() + self.config.resend_after_accepted
        for node, rs in by_node.items():
            for r in rs:
                self._told[r.id] = later
            self._spawn(self._start_on(node, rs))

    async def _start_on(self, node: str, recs: list[InstanceRecord]) -> None:
        rec = self.state.nodes.get(node)
        if rec is None:
            return
        specs = [self.instance_spec(r) for r in recs if r.job in self.state.jobs]
        try:
            reply = await self.agents.start(node, rec.address, specs, epoch=rec.epoch)
            for res in reply.results:
                if res.accepted:
                    self._accepted.add((res.id, node))
                else:
                    log.warning("agent %s refused %s: %s", node, res.id, res.error)
                    self._told[res.id] = self.clock()
            self._failures.pop(node, None)
        except Exception as e:  # unreachable agent: resend / confirm timeout deal with it
            # a busy agent times out; saying it all again at once would only bury it deeper:
            # each failure in a row doubles the wait before the next try (up to 30 s)
            fails = self._failures[node] = self._failures.get(node, 0) + 1
            wait = min(self.config.resend_after * 2 ** (fails - 1), 30.0)
            log.warning("telling %s to start %d instances failed (%d in a row; again in %.0f s): %s",
                        node, len(recs), fails, wait, _why(e))
            told = self.clock() + wait - self.config.resend_after
            for r in recs:
                self._told[r.id] = told

    async def tell_stop(self, recs: list[InstanceRecord]) -> None:
        by_node: dict[str, list[str]] = defaultdict(list)
        now = self.clock()
        for r in recs:
            by_node[r.node].append(r.id)
            self._told[r.id] = now
        for node, ids in by_node.items():
            self._spawn(self._stop_on(node, ids))

    async def _stop_on(self, node: str, ids: list[str]) -> None:
        rec = self.state.nodes.get(node)
        if rec is None:
            return
        try:
            await self.agents.stop(node, rec.address, ids, self.config.stop_grace)
        except Exception as e:
            log.warning("telling %s to stop %d instances failed: %s", node, len(ids), e)

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def scan_unsettled(self, now: float) -> tuple[set[str], list[InstanceRecord], list[InstanceRecord]]:
        """One pass over the instances an agent has yet to act on: the jobs with one whose node
        did not confirm in time (the reconciler puts it back to pending: the only reconcile
        decision a clock makes), and the Starts and Stops to say again."""
        timeout = self.config.reconcile.confirm_timeout
        due: set[str] = set()
        starts, stops = [], []
        for iid in self.state.unsettled:
            e = self.state.instances[iid]
            r = e.record
            if r.desired == "run" and not r.lost and now - r.placed_at > timeout:
                due.add(r.job)
            if r.node not in self.state.nodes or now - self._told.get(iid, 0.0) < self.config.resend_after:
                continue
            if r.lost:
                # fencing: its node was declared down and came back still running it, while a
                # replacement runs elsewhere; one of the two must go, and it is this one
                stops.append(r)
            elif r.desired == "run":
                starts.append(r)              # told, never heard of since (unsettled: no report)
            else:
                stops.append(r)               # told to stop, not ended yet
        return due, starts, stops

    async def resend(self, now: float, starts: list[InstanceRecord], stops: list[InstanceRecord]) -> None:
        """Start/Stop messages can be lost (agent restarting, network cut): say them again until
        the agent's report shows it heard. Only what is still as scanned: the evaluation between
        the scan and now may have moved some."""
        def current(r: InstanceRecord) -> bool:
            e = self.state.instances.get(r.id)
            return e is not None and e.record is r and r.id in self.state.unsettled
        starts = [r for r in starts if current(r)]
        stops = [r for r in stops if current(r)]
        if starts:
            await self.tell_start(starts)
        if stops:
            await self.tell_stop(stops)
        self.stop_strays(now)
        self.audit(now)

    def audit(self, now: float) -> None:
        """Ask agents what they really run, and stop what is not placed on them: a copy whose
        reports never reached etcd (cut off at the wrong moment) is seen nowhere else. Nodes back
        from the dead at once, the others in turn (every node once per audit_every). Not in the
        first seconds of a leadership: a cache still catching up would see strays that aren't."""
        if now - self._leading_since < 5.0:
            return
        nodes = sorted(self.state.nodes)
        due = set(self.state.returned) & set(nodes)
        self.state.returned.clear()
        if nodes:
            share = max(1, round(len(nodes) * self.config.tick / self.config.audit_every))
            start = self._audit_next % len(nodes)
            due.update((nodes + nodes)[start:start + min(share, len(nodes))])
            self._audit_next = start + share
        for node in sorted(due):
            self._spawn(self._audit_node(node))

    async def _audit_node(self, node: str) -> None:
        rec = self.state.nodes.get(node)
        if rec is None:
            return
        try:
            reply = await self.agents.inventory(node, rec.address)
        except Exception as e:
            log.debug("inventory of %s failed: %s", node, _why(e))
            return
        if reply.node != node:     # an agent that cannot answer for this node alone: trust nothing
            return
        extra = []
        for i in reply.instances:
            if i.state == "stopping":      # told already, on its way out (a grace period)
                continue
            e = self.state.instances.get(i.id)
            r = e.record if e is not None else None
            if r is None or r.node != node or r.lost or r.desired != "run":
                extra.append(i.id)
        if extra:
            log.info("node %s runs %d instances not placed there: stopping them", node, len(extra))
            await self._stop_on(node, extra)

    def stop_strays(self, now: float) -> None:
        """Copies running on a node their instance is not placed on (a Start given up on and
        placed elsewhere, a node back from the dead) are stopped: one instance never runs twice
        for long."""
        by_node: dict[str, list[str]] = defaultdict(list)
        for iid, nodes in list(self.state.strays.items()):
            for node in nodes:
                if node in self.state.nodes and \
                        now - self._told_stray.get((iid, node), 0.0) >= self.config.resend_after:
                    self._told_stray[(iid, node)] = now
                    by_node[node].append(iid)
        for node, ids in by_node.items():
            log.info("stopping %d stray instances on %s", len(ids), node)
            self._spawn(self._stop_on(node, ids))
        if len(self._accepted) > 2 * len(self.state.unsettled) + 1000:   # prune now and then, not per tick
            self._accepted = {(i, n) for i, n in self._accepted if i in self.state.unsettled}
        self._told_stray = {k: t for k, t in self._told_stray.items() if k[0] in self.state.strays}


def _index_of(iid: str) -> int:
    """The slot index of an instance id `<job>.<group>.<index>-<generation>`."""
    return int(iid.rsplit(".", 1)[1].split("-", 1)[0])


def _why(e: Exception) -> str:
    """One line for a log: a gRPC error's code and details, else the exception."""
    if isinstance(e, grpc.aio.AioRpcError):
        return f"{e.code().name}: {e.details()}"
    return str(e) or type(e).__name__


def explain(result: placement.GroupPlacement) -> str:
    """Why instances of a group are still pending: `no host fits: 2 not enough memory, ...`."""
    if not result.reasons:
        return "no ready host" if not result.hosts else ""
    parts = [f"{n} {reason}" for reason, n in sorted(result.reasons.items(), key=lambda kv: -kv[1])]
    why = "no host fits: " + ", ".join(parts)
    return f"{why}; {result.preemption}" if result.preemption else why
