"""The reconciler: a pure function from (desired job, actual instances, live nodes, now) to a
frozen list of changes. No I/O, no clock reads, no randomness, so that it can be property-tested
and any decision replayed. The controller applies its result to etcd.
"""
from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Container, Iterable, Mapping, Set
from dataclasses import dataclass, field

from packyard import lifecycle
from packyard.durations import format_duration
from packyard.records import FAILED, TERMINAL, DeploymentRecord, InstanceRecord, JobRecord, evolve
from packyard.spec import LIFECYCLE_BLOCKS, Group, JobSpec
from packyard.update import update_policy
from scheduler import deployments
from scheduler.slots import Slots
from scheduler.state import Entry, effective_state


@dataclass(frozen=True)
class Config:
    # An instance told to a node that has not confirmed (no report at all) within this many
    # seconds goes back to pending and is placed again, perhaps elsewhere.
    confirm_timeout: float = 15.0


@dataclass(frozen=True)
class Result:
    create: tuple[InstanceRecord, ...] = ()          # new pending instances
    stop: tuple[InstanceRecord, ...] = ()            # desired -> stop (updated records)
    lost: tuple[InstanceRecord, ...] = ()            # node gone: marked lost (updated records)
    unassign: tuple[InstanceRecord, ...] = ()        # never confirmed: back to pending
    notes: tuple[str, ...] = field(default=())
    deployment: DeploymentRecord | None = None       # the job's rollout, to write (changed)
    wake_at: float | None = None                     # the rollout's next moment time alone moves it
    # a rollout that replaces nothing: its instances found waiting, for `look_again` (deployments.Step.waiting)
    waiting: Mapping[str, tuple[float, bool]] | None = None

    @property
    def empty(self) -> bool:
        return not (self.create or self.stop or self.lost or self.unassign or self.deployment)


def group_hash(group: Group) -> str:
    """Identity of what an instance runs; `count` is left out so scaling keeps instances, and
    `update` (how a change is rolled out) so that changing only it replaces nothing."""
    data = group.model_dump(mode="json")
    data.pop("count", None)
    data.pop("update", None)
    for key in LIFECYCLE_BLOCKS:       # added later: a group without them hashes as it always did
        if data.get(key) is None:
            data.pop(key, None)
    return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def instance_id(job: str, group: str, index: int, generation: int) -> str:
    # job and group are DNS labels (no dots), so the id parses back: job = id.split(".")[0]
    return f"{job}.{group}.{index}-{generation}"


def generation_of(iid: str) -> int:
    """The generation an instance id ends with (`instance_id`)."""
    return int(iid[iid.rindex("-") + 1:])


class Generations:
    """The highest generation of each slot (group, index) among a job's instances, which keeps
    new ids unique across replacements. Read from the ids only when a new id is first needed:
    most looks at a big rolling job make none, and parsing 20,000 ids was a tenth of such a look.
    Private to one reconcile (it counts up as that reconcile hands out ids)."""

    def __init__(self, entries: Iterable[Entry]):
        self._entries: Iterable[Entry] | None = entries
        self._latest: dict[tuple[str, int], int] = {}

    def _table(self) -> dict[tuple[str, int], int]:
        if self._entries is not None:
            latest = self._latest
            for e in self._entries:
                r = e.record
                key = (r.group, r.index)
                gen = generation_of(r.id)
                if gen > latest.get(key, 0):
                    latest[key] = gen
            self._entries = None
        return self._latest

    def following(self, group: str, index: int) -> int:
        """The generation after the slot's highest (1 for a slot never used), not taken."""
        return self._table().get((group, index), 0) + 1

    def take(self, group: str, index: int) -> int:
        """The generation after the slot's highest, taken: the next call gives the one after it."""
        gen = self._table()[(group, index)] = self.following(group, index)
        return gen


def reconcile(job: JobRecord, spec: JobSpec, entries: list[Entry], ready_nodes: set[str],
              now: float, config: Config = Config(),
              acknowledged: Container[tuple[str, str]] = frozenset(),
              eligible: Mapping[str, Set[str]] | None = None,
              deployment: DeploymentRecord | None = None) -> Result:
    """`acknowledged`: (instance, node) pairs whose node accepted the Start (scheduler/accepted.py): the instance is
    in the node's hands (its report may be slow on a busy cluster), so the confirm timeout does
    not move it elsewhere; if the node dies, it is lost and replaced like the rest.

    A system job (`type: system`) has one instance of each group on every node in `eligible[group]`
    (the ready nodes passing placement's static filters for the group — its kind's driver, its
    constraints — worked out by the caller; without it, every ready node), `count` aside (0: none).
    Each is pinned to its node: a node that leaves loses its instance, replaced nowhere else; one
    that joins gets one, in the lowest free slot; a failure stands; a changed group is replaced
    on the same node, in the same slot, rolled out as a service's is.

    A service's (or system job's) changed group is rolled out (scheduler/deployments.py, `deployment`: the job's
    rollout as etcd holds it): its old instances keep their slots until the rollout replaces them,
    a few at a time, each by a new instance that is placed once the old one has ended."""
    # Whatever was placed on a node that is gone is lost, whether it was meant to run or to stop:
    # nobody is left to report on it. The rest meant to run is active. (One pass: at 20,000
    # instances, each pass reading the records is a few ms.)
    lost: list[InstanceRecord] = []
    active: list[Entry] = []
    for e in entries:
        r = e.record
        if r.lost:
            continue
        if r.node and r.node not in ready_nodes and effective_state(r, e.state) not in TERMINAL:
            lost.append(evolve(r, lost=True, desired="stop", reason=f"node {r.node} is down"))
        elif r.desired == "run":
            active.append(e)
    if job.desired == "stop":
        return Result(stop=tuple(evolve(e.record, desired="stop") for e in active),
                      lost=tuple(lost))

    groups = {g.name: g for g in spec.groups}
    hashes = {name: group_hash(g) for name, g in groups.items()}
    stop: list[InstanceRecord] = []
    unassign: list[InstanceRecord] = []
    system = spec.type == "system"
    # the slots a live instance holds (a system group's follow its nodes, not its count)
    occupied = Slots(max([len(entries), len(ready_nodes) if system else 0, *(g.count for g in spec.groups)]))
    wanted = {g.name: _nodes_of(g, eligible, ready_nodes) for g in spec.groups} if system else {}
    pins: dict[str, dict[str, int]] = {}      # system: group -> node -> the slot it holds
    pinned_slots: set[tuple[str, int]] = set()   # ... and those slots
    rolling = spec.type in ("service", "system")
    old_of: dict[str, list[Entry]] = {g.name: [] for g in spec.groups}   # rolling: earlier specs' instances
    new_of: dict[str, list[Entry]] = {g.name: [] for g in spec.groups}   # ... and the current spec's
    current = deployments.rollout_of(deployment, job.version)
    judged_by_rollout = rolling and current is not None and current.rolling

    generations = Generations(entries)
    replacements: list[InstanceRecord] = []
    for e in active:
        r = e.record
        group, index = r.group, r.index
        g = groups.get(group)
        if system:
            node, held = r.pinned or r.node, pins.setdefault(group, {})
            if (g is None or node not in wanted[group] or node in held
                    or (group, index) in pinned_slots):
                stop.append(evolve(r, desired="stop"))    # no longer eligible (or a duplicate)
                continue
            held[node] = index                             # a changed group: replaced right there
            pinned_slots.add((group, index))
        if g is None:
            stop.append(evolve(r, desired="stop"))
            continue
        current_spec = r.ghash == hashes[group]
        in_range = system or index < g.count
        if rolling and in_range and not current_spec:
            old_of[group].append(e)                        # serves on until the rollout replaces it
            occupied.add(group, index)
            continue
        if not (in_range and current_spec):
            stop.append(evolve(r, desired="stop"))
            continue
        # (from here on, not lost and desired to run: its state is its report's, or with none,
        # starting once it has a node)
        rep = e.state
        if rep is None:
            if r.node and now - r.placed_at > config.confirm_timeout and (r.id, r.node) not in acknowledged:
                # placed again elsewhere when there is elsewhere: a node that never answered is the
                # likeliest not to answer the next time either (placing drops it if it is the only one)
                unassign.append(evolve(r, node="", reserved={}, placed_at=0.0, avoid=sorted({*r.avoid, r.node}),
                                       reason=f"node {r.node} did not confirm within "
                                              f"{config.confirm_timeout:g}s; placing again"))
        # a failure during its version's rollout is the rollout's to judge (it fails it); once it
        # has, the instance is rescheduled as any other. System: the failure stands, on its node.
        elif rep.state == FAILED and r.node and not system and not judged_by_rollout:
            new = reschedule(job, spec, g, e, now, hashes[group], generations.following(group, index),
                             ready_nodes)
            if new is not None:
                stop.append(evolve(r, desired="stop"))
                replacements.append(new)
                occupied.add(group, index)
                if rolling:
                    new_of[group].append(e)                # a rollout sees the failure all the same
                continue
        occupied.add(group, index)
        if rolling:
            new_of[group].append(e)

    rollout = deployments.Step()
    if rolling:
        rollout = deployments.step(job.name, job.version, job.deploy, [
            deployments.GroupRollout(g.name, len(wanted[g.name]) if system else g.count,
                                     update_policy(g.update), g.check is not None,
                                     old_of[g.name], new_of[g.name]) for g in spec.groups], deployment, now)
        for e in rollout.retire:
            stop.append(evolve(e.record, desired="stop", reason=f"replaced by a canary of version {job.version}"))
        def successor(r: InstanceRecord, replaces: str) -> InstanceRecord:
            gen = generations.take(r.group, r.index)
            return InstanceRecord(
                id=instance_id(job.name, r.group, r.index, gen), job=job.name, group=r.group,
                index=r.index, kind=groups[r.group].kind, version=job.version, ghash=hashes[r.group],
                replaces=replaces, created_at=now, pinned=(r.pinned or r.node) if system else "")
        # a canary runs beside the old instance of its slot (placed at once); a replacement
        # follows its old instance (placed once that one has ended)
        replacements += [successor(e.record, "") for e in rollout.canaries]
        for e in rollout.replace:
            stop.append(evolve(e.record, desired="stop", reason=f"replaced by version {job.version}"))
            replacements.append(successor(e.record, e.record.id))

    # a new instance for every empty slot below
    create = list(replacements)
    for g in spec.groups:
        if system:
            create += _system_creates(job, g, hashes[g.name], wanted[g.name], pins.get(g.name, {}),
                                      occupied, generations)
            continue
        for index in occupied.free(g.name, g.count):
            gen = generations.following(g.name, index)
            create.append(InstanceRecord(
                id=instance_id(job.name, g.name, index, gen), job=job.name, group=g.name,
                index=index, kind=g.kind, version=job.version, ghash=hashes[g.name]))
    return Result(create=tuple(create), stop=tuple(stop), lost=tuple(lost),
                  unassign=tuple(unassign), deployment=rollout.deployment, wake_at=rollout.wake_at,
                  waiting=None if system else rollout.waiting)


def look_again(job: JobRecord, spec: JobSpec, due: Iterable[tuple[Entry, bool]], ready_nodes: Set[str],
               now: float, deployment: DeploymentRecord | None, rest_at: float | None,
               config: Config = Config()) -> Result | None:
    """A look at a service's rollout on time alone that sees only the instances it must
    (scheduler/rollout_timer.py): the same Result as `reconcile` of the whole job when, since the
    last look (whose `Result.waiting` named them, each with whether it was placed then), nothing
    about the job changed but time and the records and reports of `due` (each with whether it was
    placed at its last look), and no other of its waiting instances' time came before `rest_at`.
    Such a look decides nothing but the deployment record: its `create`, `stop`... are empty.
    None where that does not hold or is not this look's to tell (one of `due` is no longer a live
    instance of this version on a ready node, or placed, unconfirmed and overdue, or unhealthy):
    `reconcile` the whole job."""
    if spec.type != "service" or job.desired != "run":
        return None
    groups = {g.name: g for g in spec.groups}
    hashes = {name: group_hash(g) for name, g in groups.items()}
    new_of: dict[str, list[Entry]] = {name: [] for name in groups}
    placed = dict.fromkeys(groups, 0)
    for e, was_placed in due:
        r = e.record
        g = groups.get(r.group)
        if (g is None or r.lost or r.desired != "run" or r.ghash != hashes[r.group] or r.index >= g.count
                or (r.node and r.node not in ready_nodes)
                or (e.state is None and r.node and now - r.placed_at > config.confirm_timeout)):
            return None
        new_of[r.group].append(e)
        placed[r.group] += bool(r.node) - was_placed
    step = deployments.rejudge(job.version, [
        deployments.GroupRollout(g.name, g.count, update_policy(g.update), g.check is not None, (), new_of[g.name])
        for g in spec.groups], placed, deployment, rest_at, now)
    if step is None:
        return None
    return Result(deployment=step.deployment, wake_at=step.wake_at, waiting=step.waiting)


def _nodes_of(group: Group, eligible: Mapping[str, Set[str]] | None, ready_nodes: Set[str]) -> Set[str]:
    """The nodes a system group runs one instance on."""
    if not group.count:
        return frozenset()
    return ready_nodes if eligible is None else set(eligible.get(group.name, ())) & ready_nodes


def _system_creates(job: JobRecord, g: Group, ghash: str, nodes: Set[str], held: Mapping[str, int],
                    occupied: Slots, generations: Generations) -> list[InstanceRecord]:
    """New instances of a system group, pinned: one for each node in `nodes` without a live one
    (in the slot its replaced instance held, or the lowest free one)."""
    taken = set(held.values())
    free = (i for i in itertools.count() if i not in taken)
    out = []
    for node in sorted(nodes):
        index = held[node] if node in held else next(free)
        if (g.name, index) in occupied:
            continue
        gen = generations.following(g.name, index)
        out.append(InstanceRecord(
            id=instance_id(job.name, g.name, index, gen), job=job.name, group=g.name, index=index,
            kind=g.kind, version=job.version, ghash=ghash, pinned=node))
    return out


def reschedule(job: JobRecord, spec: JobSpec, group: Group, e: Entry, now: float, ghash: str,
               generation: int, ready_nodes: set[str]) -> InstanceRecord | None:
    """A new instance (next generation) for the slot of `e`, which failed for good on its node
    (restarts in place exhausted, or its start refused there), if the group's reschedule policy
    allows one more and a ready node exists where the slot has not failed: placed there, not
    before the delay (growing up to max_delay). Where there is none, the failure stands."""
    policy = lifecycle.reschedule_policy(spec.type, group.reschedule)
    r = e.record
    recent = [t for t in r.rescheduled_at if now - t < policy.interval]
    if not policy.unlimited and len(recent) >= policy.attempts:
        return None
    if not ready_nodes - {*r.avoid, r.node}:
        return None
    delay = policy.delay_before(len(r.rescheduled_at) + 1)
    restarts = e.state.restarts if e.state is not None else 0
    message = f"rescheduled from {r.node} after {restarts} failed restarts"
    return InstanceRecord(
        id=instance_id(job.name, r.group, r.index, generation), job=job.name, group=r.group,
        index=r.index, kind=group.kind, version=job.version, ghash=ghash,
        avoid=sorted({*r.avoid, r.node}), not_before=round(now + delay, 3),
        rescheduled_at=[*recent, now][-64:], reason=f"{message}; placing in {format_duration(delay)}",
        events=[{"at": round(now, 3), "message": message}])
