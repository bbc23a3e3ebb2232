"""The control loop and the API's writes. One evaluation: reconcile each changed job → decide
placements (`placing`) → commit to etcd (`commit`) → tell the agents (`dispatch`). Runs as one
task, and API writes take the same lock, so decisions never race each other; every change is in
etcd (revision-checked) before any agent hears of it, and before the API acknowledges it.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from packyard import keys, records, specdiff
from packyard.etcd import Etcd, EtcdUnavailable, Event
from packyard.records import TERMINAL, InstanceRecord, JobRecord
from packyard.spec import JobSpec, load_json
from packyard.tasks import cancel_and_wait
from packyard.update import update_policy
from scheduler import changes, deployments, metrics, placement, versions
from scheduler.agents import AgentClients
from scheduler.caps import Caps
from scheduler.caps import check as check_caps
from scheduler.commit import NOT_LEADING, Committer, Guard, Write
from scheduler.dispatch import DispatchConfig, Dispatcher
from scheduler.leader import Leadership
from scheduler.placing import Decision, Placer, Planned
from scheduler.profiles import LearnerConfig, ProfileLearner
from scheduler.reconciler import Config as ReconcileConfig
from scheduler.reconciler import Result, group_hash, look_again, reconcile
from scheduler.rollout_timer import RolloutTimer
from scheduler.specs import SpecCache
from scheduler.state import ClusterState, effective_state

log = logging.getLogger(__name__)
RETRIES_ON_CONFLICT = 6     # waits 0.05 .. 1.6 s in all: longer than a watch takes to catch up


@dataclass(frozen=True)
class ControllerConfig:
    tick: float = 1.0                 # re-evaluate at least this often (timeouts, retries)
    resend_after: float = 2.0         # re-send Start/Stop not yet acknowledged by a report
    resend_after_accepted: float = 8.0   # ... or, for a Start the agent accepted, this much later
    place_batch: int = 5000           # instances placed per evaluation at most (see Placer)
    audit_every: float = 30.0         # each node's inventory is compared with etcd this often
    stop_grace: float = 10.0          # SIGTERM → SIGKILL for `ctl stop`
    persist_profiles_every: float = 5.0
    # a stopped job whose instances have all ended is forgotten (its records leave etcd) this long
    # after it was stopped, or at once if stopped with purge; 0: only those
    purge_stopped_after: float = 86400.0
    caps: Caps = Caps()     # total instances per job and per cluster
    learner: LearnerConfig = LearnerConfig()
    reconcile: ReconcileConfig = ReconcileConfig()
    engine: placement.EngineConfig = dataclasses.field(default_factory=placement.EngineConfig)

    def dispatch(self) -> DispatchConfig:
        return DispatchConfig(resend_after=self.resend_after, resend_after_accepted=self.resend_after_accepted,
                              audit_every=self.audit_every, stop_grace=self.stop_grace, tick=self.tick)


class NotFound(Exception):
    """The API named a job the cluster does not have."""


class Conflict(Exception):
    """The write lost a race with another writer; the caller may try again."""


class Refused(Exception):
    """The API asked for something the job's state does not allow (nothing to roll back to)."""


@dataclass(frozen=True)
class Submitted:
    version: int
    changed: bool
    instance_ids: tuple[str, ...]


@dataclass(frozen=True)
class Stopped:
    stopping: int                     # instances still meant to run when the stop was written
    purge: bool


@dataclass(frozen=True)
class PlanOutcome:
    changed: bool
    version: int
    instances: tuple[Planned, ...]
    changes: tuple[str, ...] = ()      # field by field, against the running version
    replaces: int = 0                  # running instances a submit would replace


@dataclass(frozen=True)
class Version:
    record: records.VersionRecord
    changes: tuple[str, ...]
    current: bool
    same_as: int = 0                   # the newest older kept version with this very spec


class Controller:
    def __init__(self, etcd: Etcd, agents: AgentClients, config: ControllerConfig = ControllerConfig(),
                 clock: Callable[[], float] = time.time):
        self.etcd = etcd
        self.agents = agents
        self.config = config
        self.clock = clock
        self.state = ClusterState(on_report=_count_end)
        self.changes = changes.ChangeFeed()    # what the watch RPCs wait on (scheduler.changes)
        self.specs = SpecCache()
        self.learner = ProfileLearner(dict(self.config.engine.profiles), self.config.learner)
        self.committer = Committer(etcd, self.state, fence=self._fence)
        self.placer = Placer(self.state, self.specs, batch=config.place_batch)
        self.dispatcher = Dispatcher(agents, self.state, self.specs, config.dispatch(), clock)
        self._profiles_saved = 0.0
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.ready = asyncio.Event()
        # One decision at a time: evaluations and API writes both read-modify-write the cache.
        self.lock = asyncio.Lock()
        self._stopping = False
        self._timers_at = 0.0
        self.rollouts = RolloutTimer(config.tick)    # when rolling jobs are looked at on time alone
        self._min_healthy: dict[str, float] = {}    # rolling jobs: their least min_healthy_time
        # Placement runs only while leading; without an election (one replica, tests) always.
        self.leadership: Leadership | None = None
        self.leading = True

    # --- life cycle -----------------------------------------------------------------------
    async def start(self) -> None:
        _, saved = await self.etcd.get_prefix(keys.PROFILES)
        for kv in saved:
            self.learner.load(kv.value)
        self.learner.changed_kinds.clear()
        for prefix in (keys.NODES, keys.JOBS, keys.DEPLOYMENTS, keys.VERSIONS, keys.INSTANCES, keys.STATE,
                       keys.USAGE):
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
            self.dispatcher.leading_from(self.clock())
            self.kick("*")             # every job is looked at afresh

    def _fence(self) -> Guard:
        if self.leadership is None:
            return None
        if not self.leadership.leading:
            return NOT_LEADING
        return (keys.LEADER, self.leadership.revision)

    async def stop(self) -> None:
        self._stopping = True
        # (a cancellation lost to Python 3.11's wait_for race would otherwise hang stop)
        await asyncio.gather(*(cancel_and_wait(t) for t in self._tasks))
        await self.dispatcher.close()

    def _relister(self, prefix: str):
        """For a watch that fell behind etcd's compaction: list the prefix again, replace what
        the cache holds under it, and go on watching from there."""
        async def relist(compact_revision: int) -> int:
            revision, kvs = await self.etcd.get_prefix(prefix)
            self._dirty |= self.state.reload(prefix, kvs)
            self.rollouts.forget()
            self.changes.publish({changes.EVERYTHING})
            self.kick()
            return revision + 1
        return relist

    async def _on_events(self, batch: list[Event]) -> None:
        now = self.clock()
        for ev in batch:
            self._dirty |= self.state.apply(ev)
            if ev.key.startswith(keys.INSTANCES):
                iid = keys.last(ev.key)
                self.rollouts.changed(keys.instance_job(iid), iid, now)
            elif ev.key.startswith(keys.STATE):
                # a report dirties no job, yet may move its rollout on: an instance now running
                # turns healthy once it has served min_healthy_time
                self._heard_report(keys.last(ev.key))
        self._observe_usage(batch)
        self.changes.publish(changes.topics_of(ev.key for ev in batch))
        self.kick()

    def _heard_report(self, iid: str) -> None:
        job = keys.instance_job(iid)
        min_healthy = self._min_healthy.get(job)
        if min_healthy is None:
            self.rollouts.heard(job)
            return
        entry = self.state.instances.get(iid)
        rep = entry.state if entry is not None else None
        self.rollouts.heard(job, deployments.report_matters_at(rep, min_healthy, self.clock()), iid)

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
        mix = self.config.engine.workload_mix or self.placer.workload_mix()
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
        scanned = self.dispatcher.scan(now, self.config.reconcile.confirm_timeout) if timers else None
        dirty, self._dirty = self._dirty | (scanned.overdue_jobs if scanned else set()), set()
        # due on time alone, and for nothing else: looked at once what changed is placed (a small
        # job submitted meanwhile does not wait for a big rollout's look), narrowly if that will
        # do (`_look_again`); at every evaluation those that may be narrow, once a tick the rest
        on_time_alone = self._rollouts_due(now, timers) - dirty if "*" not in dirty else set()
        jobs = list(self.state.jobs) if "*" in dirty else [j for j in dirty if j in self.state.jobs]
        ready = set(self.state.nodes) if jobs or on_time_alone else set()   # most evaluations reconcile nothing
        for name in jobs:
            await self._look(name, self.reconcile_job(name, ready, now))
        await self.place_pending(now)
        for name in on_time_alone:
            if name in self.state.jobs:
                narrow = self._look_again(name, ready, now)
                await self._look(name, narrow if narrow is not None else self.reconcile_job(name, ready, now),
                                 whole=narrow is None)
        if scanned is not None:
            self._timers_at = now
            self.dispatcher.resend(now, scanned)
            await self.purge_ended(now)
        await self.save_profiles(now)

    async def _look(self, name: str, result: Result, whole: bool = True) -> None:
        if whole:
            self._looked(name, result)
        if not result.empty:
            await self.apply(result)
            if result.create or result.unassign:
                self.kick()            # placed by the next evaluation, at once
        await self._revert_if_owed(name)

    def _rollouts_due(self, now: float, whole: bool) -> set[str]:
        """Rolling jobs looked at again now: see scheduler/rollout_timer.py."""
        rolling = {j: self.state.deployments[j] for j in self.state.rolling_out()}
        self._min_healthy = {j: t for j, t in self._min_healthy.items() if j in rolling}
        return self.rollouts.due(now, rolling, self.state.instance_count, whole)

    def _look_again(self, name: str, ready: set[str], now: float) -> Result | None:
        """A look at a rolling job on time alone that judges only the instances whose time came
        (scheduler/rollout_timer.py), if that will do; None: reconcile the whole job."""
        deployment = self.state.deployments.get(name)
        narrow = self.rollouts.narrow(name, deployment, now) if deployment is not None else None
        if narrow is None:
            return None
        due, rest_at = narrow
        instances = self.state.instances
        entries = [(instances[iid], placed) for iid, placed in due if iid in instances]
        if len(entries) != len(due):
            return None
        job = self.state.jobs[name]
        result = look_again(job, self.specs.of(job), entries, ready, now, deployment, rest_at, self.config.reconcile)
        if result is not None:
            self.rollouts.looked_again(name, result.wake_at, result.deployment or deployment, result.waiting)
            self._min_healthy_of(name, result)
        return result

    def _looked(self, name: str, result: Result) -> None:
        self.rollouts.looked(name, result.wake_at, result.deployment or self.state.deployments.get(name),
                             result.waiting)
        self._min_healthy_of(name, result)

    def _min_healthy_of(self, name: str, result: Result) -> None:
        if result.wake_at is None:
            self._min_healthy.pop(name, None)
        else:
            self._min_healthy[name] = min((update_policy(g.update).min_healthy_time
                                           for g in self.specs.of(self.state.jobs[name]).groups), default=0.0)

    def reconcile_job(self, name: str, ready: set[str], now: float) -> Result:
        job = self.state.jobs[name]
        spec = self.specs.of(job)
        return reconcile(job, spec, self.state.job_entries(name), ready, now,
                         self.config.reconcile, self.dispatcher.accepted, eligible=self.placer.eligible(spec),
                         deployment=self.state.deployments.get(name))

    async def apply(self, result: Result) -> None:
        """Write a reconcile result (the deployment record with the first instances: a rollout's
        step and its record land together or not at all); then tell agents to stop what should
        no longer run. A deployment that ended marks its version stable or failed in the same
        transaction: what a revert or rollback may go back to is in etcd with the outcome."""
        d, writes = result.deployment, []
        if d is not None:
            if not d.rolling and d.state == "failed":
                d = self._revert_decided(d)
            writes.append((keys.deployment(d.job), records.dumps(d), self.state.deployment_revision(d.job)))
            if not d.rolling and d.state in ("successful", "reverted"):
                writes += self._mark(d.job, d.target, stable=True)
            elif not d.rolling and d.state == "failed":
                writes += self._mark(d.job, d.target, failed=True)
        ok = await self.commit([*result.create, *result.stop, *result.lost, *result.unassign], writes)
        if ok and d is not None and not d.rolling:
            metrics.DEPLOYMENTS.labels(d.state if d.state != "reverted" else "rolled back").inc()
            self.kick(d.job)           # what the rollout held back (a failed instance's reschedule) goes on
        self.dispatcher.stop(r for r in result.stop if r.node)

    def _mark(self, job: str, number: int, **outcome: bool) -> list[Write]:
        """The write marking a version stable or failed (its deployment's outcome), if it is kept
        and not yet."""
        v = self.state.versions.get(job, {}).get(number)
        if v is None or all(getattr(v, k) == want for k, want in outcome.items()):
            return []
        return [(keys.version(job, number), records.dumps(dataclasses.replace(v, **outcome)),
                 self.state.version_revision(job, number))]

    def _auto_revert(self, job: JobRecord) -> bool:
        return any(update_policy(g.update).auto_revert for g in self.specs.of(job).groups)

    def _revert_decided(self, failed: records.DeploymentRecord) -> records.DeploymentRecord:
        """The failed deployment of the current version as written: with auto_revert, where it
        goes back to (`reverted_to`, `versions.revert_target`), or why nowhere in its description.
        Decided here, written with the failure: a scheduler taking over before the revert's own
        write reads the decision from etcd (`_revert_if_owed`), and a watcher (`ctl submit
        --wait`) sees a failure that is about to be reverted for what it is."""
        job = self.state.jobs.get(failed.job)
        if (job is None or failed.target != failed.version or job.version != failed.version
                or job.desired != "run" or not self._auto_revert(job)):
            return failed
        way = versions.revert_target(self.state.versions.get(job.name, {}), job.version)
        if way.target is None:
            log.warning("deployment of %s version %d failed; not reverted: %s", job.name, job.version, way.nowhere)
            return dataclasses.replace(failed, description=f"{failed.description}; not reverted: {way.nowhere}")
        log.info("deployment of %s version %d failed; reverting to version %d, %s", job.name, job.version,
                 way.target.version, way.why)
        return dataclasses.replace(failed, reverted_to=way.target.version)

    async def _revert_if_owed(self, name: str) -> None:
        """auto_revert: a failed deployment of the job's current version that was decided to go
        back (`reverted_to`) rolls back as a new job version made from that version, rolled out
        the same way under the failed deployment (`reverted`). Owed is read from etcd alone (no
        newer version since), so a scheduler that took over between the failure's write and the
        revert's makes the revert itself, once."""
        d = self.state.deployments.get(name)
        if d is None or d.rolling or d.state != "failed" or d.target != d.version or not d.reverted_to:
            return                     # not failed, not to be reverted, or the way back itself failed
        job = self.state.jobs.get(name)
        if job is None or job.version != d.version or job.desired != "run":
            return
        target = self.state.versions.get(name, {}).get(d.reverted_to)
        if target is None:
            return
        reverting = dataclasses.replace(
            d, state="reverted", rolling=True, target=job.version + 1, healthy=[], progress_at=self.clock(),
            description=f"{d.description}; reverted to version {target.version} (as version {job.version + 1})")
        log.info("%s", reverting.description)
        if await self._write_version(load_json(target.spec_json), f"revert to version {target.version} "
                                     f"after version {d.version} failed", fenced=True, deployment=reverting):
            metrics.DEPLOYMENTS.labels("reverted").inc()

    async def commit(self, recs: list[InstanceRecord], first: Write | list[Write] | None = None,
                     fenced: bool = True, drop: list[str] | tuple[str, ...] = ()) -> bool:
        """`Committer.commit`; what it refused is decided again, for every job (the refusal
        means our view was stale somewhere)."""
        ok = await self.committer.commit(recs, first, fenced, drop)
        if not ok:
            self._dirty.add("*")
        return ok

    async def place_pending(self, now: float) -> None:
        metrics.PENDING.set(self.state.pending_count())
        metrics.NODES.labels("ready").set(len(self.state.nodes))
        metrics.NODES.labels("down").set(len(self.state.down))
        if not self.state.pending_count():
            # most evaluations place nothing: the engine config (profiles, the running mix over
            # every instance) is not worth making then (it cost a small job 3 ms next to 100,000)
            return
        decision = self.placer.decide(self.engine_config(), now)
        if not decision.results:
            return
        _observe(decision)
        self._dirty |= {v.job for v in decision.evicted}   # their slots need a new instance
        placed = decision.placed
        if decision.evicted and not await self.commit(list(decision.evicted)):
            # a placement that needs room made by eviction waits until the eviction is in etcd
            stale = {v.id for v in decision.evicted if not self.committer.is_current(v)}
            placed = tuple(r for r in placed if not stale & set(decision.evicted_for.get(r.id, ())))
        await self.commit([*placed, *decision.unplaced])
        self.dispatcher.stop(r for r in decision.evicted if self.committer.is_current(r))
        self.dispatcher.start(r for r in placed if self.committer.is_current(r))
        if decision.evicted or decision.more:
            self.kick()

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
                await self.committer.purge(name, entries)

    # --- the API's writes (any replica takes them: not fenced) ------------------------------------
    async def submit(self, spec: JobSpec, note: str = "") -> Submitted:
        """Write a job (a new version if its spec changed) and its instances' changes, in one
        transaction before returning. Submitting the same spec again is a no-op, so a retried
        submission is never placed twice."""
        # A conflict means our cache was behind etcd (another replica wrote this job, or the one
        # before us died mid-submission and ctl failed over to us): wait for the watch to catch
        # up and decide again.
        delay = 0.05
        for _ in range(RETRIES_ON_CONFLICT):
            done = await self._submit(spec, note)
            if done is not None:
                return done
            await asyncio.sleep(delay)
            delay *= 2
        raise Conflict(f"job '{spec.name}' kept changing while submitting; submit again")

    async def _submit(self, spec: JobSpec, note: str = "") -> Submitted | None:
        async with self.lock:
            old = self.state.jobs.get(spec.name)
            if old is not None and old.spec_json == spec.to_json() and old.desired == "run":
                return Submitted(old.version, False, self._running_ids(spec.name))
            check_caps(spec, (self.specs.of(j) for j in self.state.jobs.values()
                              if j.desired == "run" and j.name != spec.name),
                       len(self.state.nodes), self.config.caps)
            job = await self._write_version(spec, note, fenced=False)
            if job is None:
                return None
        self.kick(spec.name)
        return Submitted(job.version, True, self._running_ids(spec.name))

    async def _write_version(self, spec: JobSpec, note: str, fenced: bool,
                             deployment: records.DeploymentRecord | None = None) -> JobRecord | None:
        """The job's next version (lock held): its job and version records, its first instance
        changes and its deployment, in one transaction; the oldest versions forgotten with it.
        None if etcd had changed meanwhile. `deployment`: the record to start from (a revert
        goes on in the failed one)."""
        old = self.state.jobs.get(spec.name)
        now = self.clock()
        old_spec = self.specs.of(old) if old is not None and old.desired == "run" else None
        deploy = versions.changes_what_runs(old_spec, spec)
        job = JobRecord(name=spec.name, spec_json=spec.to_json(), version=old.version + 1 if old else 1,
                        desired="run", submitted_at=now, updated_at=now, deploy=deploy)
        result = reconcile(job, spec, self.state.job_entries(spec.name), set(self.state.nodes), now,
                           self.config.reconcile, eligible=self.placer.eligible(spec),
                           deployment=deployment or self.state.deployments.get(spec.name))
        kept = self.state.versions.get(spec.name, {})
        before = kept.get(old.version) if old is not None else None
        # a count-only change runs what the version before it ran: its outcome too
        same = not deploy and before is not None
        version = records.VersionRecord(job=job.name, version=job.version, spec_json=job.spec_json,
                                        submitted_at=now, note=note, stable=same and before.stable,
                                        failed=same and before.failed)
        writes = [(keys.job(job.name), records.dumps(job), self.state.job_revision(job.name)),
                  (keys.version(job.name, job.version), records.dumps(version),
                   self.state.version_revision(job.name, job.version))]
        rollout = result.deployment or deployment     # a revert's record is written even if unchanged
        if rollout is not None:
            writes.append((keys.deployment(job.name), records.dumps(rollout),
                           self.state.deployment_revision(job.name)))
        drop = [keys.version(job.name, n) for n in versions.forgotten(kept, job.version)]
        if not await self.commit([*result.create, *result.stop, *result.lost], first=writes,
                                 fenced=fenced, drop=drop):
            return None
        self.dispatcher.stop(r for r in result.stop if r.node)
        return job

    async def stop_job(self, name: str, purge: bool = False) -> Stopped:
        """Mark a job stopped (and to be purged, if asked); the next evaluation stops its
        instances."""
        async with self.lock:
            job = self.state.jobs.get(name)
            if job is None:
                raise NotFound(f"job '{name}' not found")
            purge = job.purge or purge
            if job.desired != "stop" or job.purge != purge:
                job = dataclasses.replace(job, desired="stop", purge=purge, updated_at=self.clock())
                write = (keys.job(job.name), records.dumps(job), self.state.job_revision(job.name))
                if not await self.commit([], first=write, fenced=False):
                    raise Conflict("job changed meanwhile; try again")
        self.kick(name)
        stopping = sum(1 for e in self.state.job_entries(name)
                       if e.record.desired == "run" and not e.record.lost)
        return Stopped(stopping, job.purge)

    async def plan(self, spec: JobSpec) -> PlanOutcome:
        """What submitting `spec` would do, decided as an evaluation would, written nowhere."""
        async with self.lock:
            old = self.state.jobs.get(spec.name)
            unchanged = old is not None and old.spec_json == spec.to_json() and old.desired == "run"
            version = old.version if unchanged else (old.version + 1 if old else 1)
            planned = self.placer.plan(spec, version, self.engine_config(), self.clock(), self.config.reconcile)
            running = old is not None and old.desired == "run"
            changes = specdiff.diff(json.loads(old.spec_json) if running else None, json.loads(spec.to_json()))
            hashes = {g.name: (group_hash(g), g.count) for g in spec.groups}
            replaces = 0 if not running else sum(
                1 for e in self.state.job_entries(spec.name)
                if e.record.desired == "run" and not e.record.lost and e.record.group in hashes
                and e.record.index < hashes[e.record.group][1] and e.record.ghash != hashes[e.record.group][0])
        return PlanOutcome(not unchanged, version, tuple(planned), tuple(changes), replaces)

    async def history(self, name: str) -> list[Version]:
        """The job's kept versions, oldest first, each with what it changed."""
        job = self.state.jobs.get(name)
        if job is None:
            raise NotFound(f"job '{name}' not found")
        kept = sorted(self.state.versions.get(name, {}).values(), key=lambda v: v.version)
        out, before, seen = [], None, {}
        for v in kept:
            spec = json.loads(v.spec_json)
            changes = specdiff.diff(before, spec) if before is not None or v.version == 1 else ["(earlier versions forgotten)"]
            out.append(Version(v, tuple(changes), v.version == job.version, seen.get(v.spec_json, 0)))
            before, seen[v.spec_json] = spec, v.version
        return out

    async def promote(self, name: str) -> records.DeploymentRecord:
        """A deployment awaiting promotion (its canaries healthy) goes on with the rest."""
        async with self.lock:
            if name not in self.state.jobs:
                raise NotFound(f"job '{name}' not found")
            d = self.state.deployments.get(name)
            if d is None or not d.rolling or d.promoted or d.state != "awaiting promotion":
                canaries = any(update_policy(g.update).canary for g in self.specs.of(self.state.jobs[name]).groups)
                why = "it has no deployment" if d is None else f"its deployment of version {d.version} is {d.state}"
                if d is not None and d.state == "running" and not d.promoted:
                    why += " (its canaries are not all healthy yet)" if canaries else " (it has no canaries)"
                raise Refused(f"job '{name}' has nothing to promote: {why}")
            promoted = dataclasses.replace(d, promoted=True, state="running",
                                           description=f"version {d.version}: canaries promoted")
            write = (keys.deployment(name), records.dumps(promoted), self.state.deployment_revision(name))
            if not await self.commit([], first=write, fenced=False):
                raise Conflict("the deployment changed meanwhile; try again")
        self.kick(name)
        return promoted

    async def rollback_target(self, name: str, version: int = 0) -> tuple[JobSpec, int]:
        """The spec (and its version) that rolling `name` back to `version` submits (0: where an
        automatic revert of the current version would go, `versions.way_back`); NotFound or
        Refused. Apart from `rollback` so that the API admits that very spec as it admits a Submit
        (--allow-privileged) before it is submitted."""
        job = self.state.jobs.get(name)
        if job is None:
            raise NotFound(f"job '{name}' not found")
        kept = self.state.versions.get(name, {})
        if version:
            target = kept.get(version)
            if target is None:
                known = ", ".join(str(n) for n in sorted(kept)) or "none"
                raise NotFound(f"job '{name}' has no version {version} (kept: {known})")
        else:
            way = versions.way_back(kept, job.version)     # as an automatic revert would go
            target = way.target
            if target is None:
                raise Refused(f"job '{name}' has no stable version before version {job.version} to roll "
                              f"back to ({way.why})")
        if target.version == job.version and job.desired == "run":
            raise Refused(f"job '{name}' already runs version {job.version}")
        return load_json(target.spec_json), target.version

    async def rollback(self, spec: JobSpec, version: int) -> Submitted:
        """Back to `version` (its spec from `rollback_target`), as a new version rolled out like any change."""
        return await self.submit(spec, note=f"rollback to version {version}")

    def _running_ids(self, job: str) -> tuple[str, ...]:
        return tuple(e.id for e in self.state.job_entries(job) if e.record.desired == "run")


def _count_end(old: records.StateRecord | None, new: records.StateRecord) -> None:
    if new.state in TERMINAL and (old is None or old.state != new.state):
        reason = new.reason if new.reason == "OOMKilled" or not new.reason else new.reason.split(":")[0]
        metrics.INSTANCE_ENDS.labels(new.state, reason[:40]).inc()


def _observe(decision: Decision) -> None:
    metrics.PLACEMENT_SECONDS.observe(decision.seconds)
    for result in decision.results:
        metrics.PLACEMENTS.labels(result.ask.kind).inc(len(result.hosts))
        if result.unplaced:
            first = max(result.reasons.items(), key=lambda kv: kv[1])[0] if result.reasons else "no ready host"
            metrics.UNPLACED.labels(first).inc(result.unplaced)
