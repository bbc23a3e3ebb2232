"""Deployments (issue 14): a changed group rolls out a few instances at a time. Pure, like the
reconciler that calls it: from the old and new instances of each group, the deployment as etcd
holds it and the time, which old instances to replace now and the deployment record to write.

- A new instance is **healthy** once it has run `min_healthy_time` without a restart, its check
  (if it has one) passing; **unhealthy** if it failed, was restarted, or is not healthy
  `healthy_deadline` after it was made. Healthy once is healthy for good (`record.healthy`, scheduler/healthy_set.py).
- At most `max_parallel` new instances of a group are in flight (not yet healthy) at a time, so
  no more than `max_parallel` slots are ever without a serving instance; an old instance that is
  not running costs nothing to replace and goes first.
- One unhealthy instance, or no instance turning healthy within `progress_deadline`, fails the
  deployment: nothing more is replaced. Every slot new and healthy: successful.
- A version gets a deployment when it changed what instances run, or is the job's first
  (`JobRecord.deploy`); a count-only change scales without one. A deployment the controller
  reverted (auto_revert) rolls its `target`, the version made from the one it went back to
  (`reverted_to`, chosen by scheduler/versions.py `revert_target`), the same way, and stays
  `reverted` once that is done.
- `canary: N`: first N new instances start beside old ones (in their slots; nothing stopped),
  then the deployment is `awaiting promotion` once they are healthy; promoted (`ctl promote`, or
  `auto_promote`), each canary's old instance is retired and the rest rolls as above.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from packyard.durations import format_duration
from packyard.policies import UpdatePolicy
from packyard.records import COMPLETE, RUNNING, TERMINAL, DeploymentRecord, StateRecord, evolve
from scheduler.healthy_set import HealthySet
from scheduler.state import Entry

HEALTHY, UNHEALTHY, WAITING = "healthy", "unhealthy", "waiting"
RUNNING_STATE, SUCCESSFUL, FAILED, REVERTED = "running", "successful", "failed", "reverted"
AWAITING_PROMOTION = "awaiting promotion"


@dataclass(frozen=True)
class GroupRollout:
    """One group of the job as the reconciler found it."""
    name: str
    count: int
    policy: UpdatePolicy
    has_check: bool
    old: Sequence[Entry]          # live instances of an earlier spec of the group (slots below count)
    new: Sequence[Entry]          # live instances of the current spec (slots below count)


@dataclass(frozen=True)
class Step:
    replace: tuple[Entry, ...] = ()               # old instances to stop and replace now
    deployment: DeploymentRecord | None = None    # to write (None: unchanged, or no deployment)
    canaries: tuple[Entry, ...] = ()              # old instances to start a canary beside (same slot)
    retire: tuple[Entry, ...] = ()                # old instances to stop, replaced already (a canary)
    # The earliest time at which time alone can change this step (an instance's min_healthy_time
    # or healthy_deadline running out, the progress_deadline); None: only events can. Until then a
    # rollout need not be looked at again unless something happened to the job.
    wake_at: float | None = None
    # The new instances found waiting (not yet healthy nor unhealthy): id -> (when `judge` said
    # it may find otherwise, placed then). Only for a rollout that replaces nothing (no group has
    # an old instance: a job's first deployment) and goes on: a later look on time alone need
    # judge only these, those whose time came or that something was heard of (`rejudge`). None:
    # a look must see the whole job (what an update replaces depends on every instance).
    waiting: dict[str, tuple[float, bool]] | None = None


def instance_health(e: Entry, policy: UpdatePolicy, has_check: bool, since: float, now: float) -> tuple[str, str]:
    """(HEALTHY | UNHEALTHY | WAITING, why it is unhealthy). `since`: when it was made."""
    return judge(e.state, policy, has_check, since, now)[:2]


def judge(rep: StateRecord | None, policy: UpdatePolicy, has_check: bool, since: float, now: float
          ) -> tuple[str, str, float | None]:
    """`instance_health` of an instance whose report is `rep`, and for one found WAITING, the
    earliest time at which it may find otherwise without any new report (min_healthy_time served,
    or healthy_deadline passed); None for the others. Early rather than late: a look that finds
    nothing new is only wasted work. One call for both: a look at a rolling job of 20,000 asks
    it of every new instance not yet seen healthy."""
    up = None                          # when min_healthy_time is served, if running
    if rep is not None:
        state = rep.state
        if state in TERMINAL and state != COMPLETE:
            return UNHEALTHY, (f"{state}" + (f": {rep.reason}" if rep.reason else "")
                               + (f" after {rep.restarts} restart(s)" if rep.restarts else "")), None
        if rep.restarts:
            last = rep.events[-1]["message"] if rep.events and isinstance(rep.events[-1], dict) else ""
            return UNHEALTHY, f"restarted {rep.restarts} time(s)" + (f" ({last})" if last else ""), None
        if state == RUNNING:
            up_since = rep.started_at or rep.updated_at
            if now - up_since >= policy.min_healthy_time and (not has_check or rep.health == "passing"):
                return HEALTHY, "", None
            up = up_since + policy.min_healthy_time
    if now - since > policy.healthy_deadline:
        why = f"not healthy within {format_duration(policy.healthy_deadline)}"
        if rep is not None and rep.health == "failing":
            why += f" (check failing: {rep.reason})" if rep.reason else " (check failing)"
        return UNHEALTHY, why, None
    at = _just_after(since + policy.healthy_deadline)   # unhealthy once strictly past it
    if up is not None and up > now:
        at = min(at, up)
    return WAITING, "", max(at, now)


def report_matters_at(rep: StateRecord | None, min_healthy_time: float, now: float) -> float:
    """When a new report `rep` of an instance can first change its rollout: a first run (no
    restarts) only once it has served min_healthy_time; anything else at once."""
    if rep is not None and rep.state == RUNNING and not rep.restarts:
        return max(now, (rep.started_at or rep.updated_at) + min_healthy_time)
    return now


def step(job: str, version: int, deploy: bool, groups: Sequence[GroupRollout],
         current: DeploymentRecord | None, now: float) -> Step:
    """What the rollout of job version `version` does now. `deploy`: the version changed what
    instances run (or is the first)."""
    changing = any(g.old for g in groups)
    dep = rollout_of(current, version)
    if dep is None and not deploy and current is not None and current.rolling and rollout_of(current, version - 1):
        # a count-only version submitted while the one before it still rolls out runs the very
        # instances that rollout judges: it goes on as this version's (its healthy slots kept), or
        # nothing would ever conclude it (left rolling, the version never stable). A revert's
        # rollout stays the revert's (its `version` the failed one), rolling the new count.
        own = (current.target or current.version) == current.version
        dep = evolve(current, target=version, version=version if own else current.version,
                     description=f"rolling out version {version}" if own else current.description)
    if dep is None:
        if not (deploy or changing):
            return Step()              # only counts changed: scaled without a deployment
        dep = DeploymentRecord(job=job, version=version, target=version, started_at=now, progress_at=now,
                               description=f"rolling out version {version}")
    if not dep.rolling:
        return Step()                  # ended (a failure replaces nothing more; a new version rolls anew)

    healthy = HealthySet(dep.healthy)
    progress_at = dep.progress_at
    counts: dict[str, dict[str, int]] = {}
    replace: list[Entry] = []
    canaries: list[Entry] = []
    retire: list[Entry] = []
    problems: list[str] = []
    in_canary_phase, ready = False, []      # ready: per canary group, its canaries all healthy
    wake_at: float | None = None
    waiting: dict[str, tuple[float, bool]] = {}
    for g in groups:
        # one pass over the new instances: their health and how many are placed
        n_healthy = n_unhealthy = in_flight = placed = 0
        policy, has_check = g.policy, g.has_check
        seen = healthy.of_group(g.name)
        n_seen = len(seen)
        for e in g.new:
            r = e.record
            if r.node:
                placed += 1
            suffixes = seen[r.index] if r.index < n_seen else None
            if suffixes is not None and r.id.endswith(suffixes):    # seen healthy before
                n_healthy += 1
                continue
            since = r.created_at or dep.started_at
            health, why, at = judge(e.state, policy, has_check, since, now)
            if health == HEALTHY:
                healthy.add(g.name, r.index, r.id)
                progress_at = now
                n_healthy += 1
            else:
                in_flight += 1
                if health == UNHEALTHY:
                    n_unhealthy += 1
                    problems.append(f"{r.id} is unhealthy: {why}")
                else:
                    waiting[r.id] = (at, bool(r.node))
                    if wake_at is None or at < wake_at:
                        wake_at = at
        counts[g.name] = {"desired": g.count, "placed": placed, "healthy": n_healthy, "unhealthy": n_unhealthy}
        paired, serving, idle = _old_by_slot(g)
        # two old copies of a slot (canaries of a superseded version): one serves on, the other goes
        unpaired: dict[int, Entry] = {}
        for e in (*serving, *idle):
            if e.record.index in unpaired:
                retire.append(e)
            else:
                unpaired[e.record.index] = e
        wanted = min(policy.canary, g.count) if g.old and not dep.promoted and dep.state != REVERTED else 0
        if wanted:
            in_canary_phase = True
            if problems:
                continue
            more = max(0, wanted - len(paired))
            canaries += sorted(unpaired.values(), key=lambda e: e.record.index)[:more]
            ready.append(not more and n_healthy >= len(g.new))
            continue                   # nothing is replaced before the promotion
        retire += paired               # promoted (or never a canary): the canary keeps the slot
        if problems:
            continue
        # an old instance not running serves nobody: replacing it first costs nothing; then as many
        # serving ones as max_parallel leaves room for
        budget = policy.max_parallel - in_flight
        replace += [e for e in idle if unpaired[e.record.index] is e]
        if budget > 0:
            replace += [e for e in serving if unpaired[e.record.index] is e][:budget]

    state, description, promoted = dep.state, dep.description, dep.promoted
    if in_canary_phase and all(ready) and not canaries:
        if any(g.policy.auto_promote for g in groups if g.old):
            # promoted by this look, which goes on as a look at the promoted deployment (the
            # canaries' old instances retired, the rest rolled): the record written says nothing
            # the controller would look again for, so a later look might be the progress_deadline's
            promoted_dep = evolve(dep, promoted=True, state=RUNNING_STATE, progress_at=now,
                                  description=f"version {version}: canaries healthy, promoted")
            after = step(job, version, deploy, groups, promoted_dep, now)
            return dataclasses.replace(after, deployment=after.deployment or promoted_dep)
        else:
            state = AWAITING_PROMOTION
            description = f"version {version}: canaries healthy; ctl promote {job} to roll out the rest"
        progress_at = now              # a wait for a person is not a lack of progress
    settled = not changing and not replace and not retire
    new, wake_at = _conclude(dep, version, groups, counts, healthy, progress_at, problems, settled, wake_at,
                             state, description, promoted, now)
    if not new.rolling:
        replace, canaries = [], []     # failed (done: there was nothing left to replace)
    narrow = waiting if new.rolling and not changing and not problems else None
    return Step(tuple(replace), new if new != current else None, tuple(canaries), tuple(retire), wake_at, narrow)


def rejudge(version: int, groups: Sequence[GroupRollout], placed: Mapping[str, int],
            current: DeploymentRecord | None, rest_at: float | None, now: float) -> Step | None:
    """`step` of a rollout that replaces nothing (its last look's `Step.waiting` was not None)
    when, since the look that left `current`, only time passed and the instances in each `g.new`
    changed (their reports, their placement): those are judged again, every other new instance
    stands as that look left it (healthy, or waiting until `rest_at` at the earliest), and
    `current`'s counts move by what changed (`placed`: per group, instances placed since minus
    unplaced). The same record and wake as `step` over the whole job (tests/scheduler/
    test_rollout_timer.py), at the cost of the instances judged: a look on time alone at 100,000
    instances was ~0.9 s, and a small job submitted meanwhile waited it out. `Step.waiting` holds
    those of `g.new` still waiting. None: `step` must look at the whole job (one turned unhealthy:
    the failure, its description, are the whole look's to decide)."""
    dep = rollout_of(current, version)
    if dep is None or not dep.rolling:
        return None
    healthy = HealthySet(dep.healthy)
    progress_at = dep.progress_at
    counts: dict[str, dict[str, int]] = {}
    waiting: dict[str, tuple[float, bool]] = {}
    wake_at = rest_at
    for g in groups:
        before = dep.groups.get(g.name)
        if before is None or g.old:
            return None
        n_healthy = before["healthy"]
        for e in g.new:
            r = e.record
            health, _, at = judge(e.state, g.policy, g.has_check, r.created_at or dep.started_at, now)
            if health == HEALTHY:
                healthy.add(g.name, r.index, r.id)
                progress_at = now
                n_healthy += 1
            elif health == UNHEALTHY:
                return None
            else:
                waiting[r.id] = (at, bool(r.node))
                if wake_at is None or at < wake_at:
                    wake_at = at
        counts[g.name] = {**before, "placed": before["placed"] + placed.get(g.name, 0), "healthy": n_healthy}
    new, wake_at = _conclude(dep, version, groups, counts, healthy, progress_at, [], True, wake_at,
                             dep.state, dep.description, dep.promoted, now)
    return Step(deployment=new if new != current else None, wake_at=wake_at,
                waiting=waiting if new.rolling else None)


def _conclude(dep: DeploymentRecord, version: int, groups: Sequence[GroupRollout], counts: dict[str, dict[str, int]],
              healthy: HealthySet, progress_at: float, problems: list[str], settled: bool, wake_at: float | None,
              state: str, description: str, promoted: bool, now: float) -> tuple[DeploymentRecord, float | None]:
    """The record a look leaves and when time alone moves it next: failed (a problem, or no
    progress within progress_deadline), done (`settled`: nothing left to replace, and every slot
    healthy), or rolling on."""
    deadline = max((g.policy.progress_deadline for g in groups), default=0.0)
    rolling = True
    failure = ""
    if problems:
        failure = problems[0]
    elif deadline and now - progress_at > deadline:
        failure = f"no instance turned healthy in {format_duration(deadline)} (progress_deadline)"
    if failure:
        rolling = False
        if dep.state == REVERTED:      # the way back failed too: it stays as far as it got
            state, description = FAILED, f"{dep.description}; the rollback failed: {failure}"
        else:
            state, description = FAILED, f"version {version} failed: {failure}"
    elif settled and all(counts[g.name]["healthy"] >= g.count for g in groups):
        rolling = False
        if dep.state == REVERTED:
            description = f"{dep.description}; rolled back"
        else:
            state, description = SUCCESSFUL, f"version {version} rolled out"
    new = evolve(dep, state=state, description=description, groups=counts, healthy=healthy.stored(),
                 progress_at=progress_at, rolling=rolling, target=dep.target or version, promoted=promoted)
    if not rolling:
        wake_at = None                 # ended: time moves nothing on
    elif deadline:
        # strictly after: the deadline fails a rollout once `now - progress_at > deadline`
        at = _just_after(progress_at + deadline)
        wake_at = at if wake_at is None else min(wake_at, at)
    return new, wake_at


def _just_after(t: float) -> float:
    return math.nextafter(t, math.inf)


def rollout_of(dep: DeploymentRecord | None, version: int) -> DeploymentRecord | None:
    """`dep` if it is the rollout of job version `version` (its own, or a revert's target)."""
    return dep if dep is not None and (dep.target or dep.version) == version else None


def _old_by_slot(g: GroupRollout) -> tuple[list[Entry], list[Entry], list[Entry]]:
    """The group's old instances: (those in a slot a new instance holds, beside a canary), and of
    the rest (those running, those not), each in slot order."""
    if not g.old:
        return [], [], []
    new_slots = {e.record.index for e in g.new}
    paired: list[Entry] = []
    serving: list[tuple[int, int, Entry]] = []
    idle: list[tuple[int, int, Entry]] = []
    for n, e in enumerate(g.old):
        index = e.record.index
        if index in new_slots:
            paired.append(e)
        else:
            rep = e.state
            # n: two copies of a slot stay in the order they came in (sorted() is stable)
            (serving if rep is not None and rep.state == RUNNING else idle).append((index, n, e))
    serving.sort()
    idle.sort()
    return paired, [e for _, _, e in serving], [e for _, _, e in idle]

