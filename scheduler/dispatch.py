"""Telling agents what etcd already says: Start and Stop calls (batched per node, with backoff for
a node that does not answer), re-sent until the agent's report shows it heard; and the checks
that nothing runs where it should not (strays reported by a node an instance is not placed on,
and each node's Inventory compared with the placements).

Nothing here decides or writes etcd: every call follows a committed change, so a lost call is
only ever late, never wrong, and saying it again is safe (agents take repeats).
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import grpc

from packyard import lifecycle
from packyard.policies import CheckPolicy, RestartPolicy
from packyard.records import TERMINAL, InstanceRecord, ResourceAmounts
from packyard.tasks import cancel_and_wait
from packyard.v1 import agent_pb2
from scheduler.accepted import Accepted
from scheduler.agents import AgentClients
from scheduler.convert import to_resources
from scheduler.specs import SpecCache
from scheduler.state import ClusterState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DispatchConfig:
    resend_after: float = 2.0            # re-send Start/Stop not yet acknowledged by a report
    resend_after_accepted: float = 8.0   # ... or, for a Start the agent accepted, this much later
    audit_every: float = 30.0            # each node's inventory is compared with etcd this often
    stop_grace: float = 10.0             # SIGTERM → SIGKILL for `ctl stop`
    tick: float = 1.0                    # how often `audit` is called (sets each call's share)
    settle: float = 5.0                  # no audit this soon after gaining leadership


@dataclass(frozen=True)
class Unsettled:
    """One look at the instances an agent has yet to act on (`Dispatcher.scan`)."""
    overdue_jobs: frozenset[str]              # with an instance not confirmed in time
    starts: tuple[InstanceRecord, ...]        # to tell again
    stops: tuple[InstanceRecord, ...]


class Dispatcher:
    def __init__(self, agents: AgentClients, state: ClusterState, specs: SpecCache,
                 config: DispatchConfig = DispatchConfig(), clock: Callable[[], float] = lambda: 0.0):
        self.agents = agents
        self.state = state
        self.specs = specs
        self.config = config
        self.clock = clock
        # (instance, node): the node took its Start. Read by the reconciler: an accepted instance
        # is in its node's hands, and a slow report does not move it elsewhere.
        self.accepted = Accepted()
        self._told: dict[str, float] = {}          # instance id -> when an agent was last told
        self._told_kept = 0                        # ... how many were left the last time it was pruned
        self._failures: dict[str, int] = {}        # node -> Start calls failed in a row
        self._told_stray: dict[tuple[str, str], float] = {}
        self._audit_next = 0                       # round-robin position over the nodes
        self._leading_since = 0.0
        self._group_specs: dict[tuple[str, int, str], tuple[dict, agent_pb2.InstanceSpec, object]] = {}
        self._background: set[asyncio.Task] = set()

    def leading_from(self, now: float) -> None:
        """We lead from `now`: what another leader told agents and we did not is missing from
        `_told`, so the next scan says it again at once (agents take repeats)."""
        self._leading_since = now

    async def close(self) -> None:
        # (a cancellation lost to Python 3.11's wait_for race would otherwise hang close)
        await asyncio.gather(*(cancel_and_wait(t) for t in list(self._background)))

    # --- what agents are sent ---------------------------------------------------------------
    def instance_spec(self, r: InstanceRecord) -> agent_pb2.InstanceSpec:
        job = self.state.jobs[r.job]
        key = (job.name, job.version, r.group)
        made = self._group_specs.get(key)
        spec = self.specs.of(job)
        if made is None or made[0] != r.reserved or made[2] is not spec:
            # the same for every instance of the group (its reserved amounts too, unless the
            # overhead profile changed between placements): made once
            group = spec.group(r.group)
            res = group.resources
            made = self._group_specs[key] = (r.reserved, agent_pb2.InstanceSpec(
                job=r.job, group=r.group, kind=r.kind,
                request=to_resources(ResourceAmounts(res.cpu, res.memory, res.disk, res.gpu)),
                limit=to_resources(ResourceAmounts.of(r.reserved)),
                driver_json=json.dumps(group.driver_config()), job_type=spec.type,
                restart=restart_message(lifecycle.restart_policy(spec.type, group.restart)),
                check=check_message(lifecycle.check_policy(group.check))), spec)
        out = agent_pb2.InstanceSpec()
        out.CopyFrom(made[1])
        out.id = r.id
        out.gpus.extend(r.gpus)
        return out

    # --- Start and Stop -----------------------------------------------------------------------
    def start(self, recs: Iterable[InstanceRecord]) -> None:
        """Tell each record's node to start it (in the background: a reply can take seconds)."""
        by_node: dict[str, list[InstanceRecord]] = defaultdict(list)
        for r in recs:
            by_node[r.node].append(r)
        # assume the agent takes them (re-sending meanwhile only adds work); _start_on brings
        # the re-send forward if it does not
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
            ids = {r.id: r.id for r in recs}    # kept as the records' strings, not the reply's copies
            for res in reply.results:
                if res.accepted:
                    self.accepted.add(ids.get(res.id, res.id), node)
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
                        node, len(recs), fails, wait, why(e))
            told = self.clock() + wait - self.config.resend_after
            for r in recs:
                self._told[r.id] = told

    def stop(self, recs: Iterable[InstanceRecord]) -> None:
        """Tell each record's node to stop it (in the background)."""
        by_node: dict[str, list[str]] = defaultdict(list)
        now = self.clock()
        for r in recs:
            e = self.state.instances.get(r.id)
            if e is not None and e.state is not None and e.state.state in TERMINAL:
                # it ended already: nothing to stop. Told anyway, the agent (which runs nothing
                # by that id) reported it stopped, and when the job was purged meanwhile that
                # report put back a state key nobody would ever delete (and its logs stayed)
                continue
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
            log.warning("telling %s to stop %d instances failed: %s", node, len(ids), why(e))

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- saying it again ------------------------------------------------------------------------
    def scan(self, now: float, confirm_timeout: float) -> Unsettled:
        """One pass over the instances an agent has yet to act on: the jobs with one whose node
        did not confirm within `confirm_timeout` (the reconciler puts it back to pending: the
        only reconcile decision a clock makes), and the Starts and Stops to say again."""
        due: set[str] = set()
        starts, stops = [], []
        for e in self.state.unsettled_entries():
            r = e.record
            if r.desired == "run" and not r.lost and now - r.placed_at > confirm_timeout:
                due.add(r.job)
            if r.node not in self.state.nodes or now - self._told.get(r.id, 0.0) < self.config.resend_after:
                continue
            if r.lost:
                # fencing: its node was declared down and came back still running it, while a
                # replacement runs elsewhere; one of the two must go, and it is this one
                stops.append(r)
            elif r.desired == "run":
                starts.append(r)              # told, never heard of since (unsettled: no report)
            else:
                stops.append(r)               # told to stop, not ended yet
        return Unsettled(frozenset(due), tuple(starts), tuple(stops))

    def resend(self, now: float, scanned: Unsettled) -> None:
        """Start/Stop messages can be lost (agent restarting, network cut): say them again until
        the agent's report shows it heard. Only what is still as scanned: the evaluation between
        the scan and now may have moved some."""
        def current(r: InstanceRecord) -> bool:
            e = self.state.instances.get(r.id)
            return e is not None and e.record is r and self.state.is_unsettled(r.id)
        starts = [r for r in scanned.starts if current(r)]
        stops = [r for r in scanned.stops if current(r)]
        if starts:
            self.start(starts)
        if stops:
            self.stop(stops)
        self.stop_strays(now)
        self.audit(now)

    # --- what runs where it should not ----------------------------------------------------------
    def audit(self, now: float) -> None:
        """Ask agents what they really run, and stop what is not placed on them: a copy whose
        reports never reached etcd (cut off at the wrong moment) is seen nowhere else. Nodes back
        from the dead at once, the others in turn (every node once per audit_every). Not in the
        first seconds of a leadership: a cache still catching up would see strays that aren't."""
        if now - self._leading_since < self.config.settle:
            return
        nodes = sorted(self.state.nodes)
        due = self.state.take_returned() & set(nodes)
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
            log.debug("inventory of %s failed: %s", node, why(e))
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
        strays = self.state.stray_copies()
        by_node: dict[str, list[str]] = defaultdict(list)
        for iid, nodes in list(strays.items()):
            for node in nodes:
                if node in self.state.nodes and \
                        now - self._told_stray.get((iid, node), 0.0) >= self.config.resend_after:
                    self._told_stray[(iid, node)] = now
                    by_node[node].append(iid)
        for node, ids in by_node.items():
            log.info("stopping %d stray instances on %s", len(ids), node)
            self._spawn(self._stop_on(node, ids))
        unsettled = self.state.unsettled_count()
        if len(self.accepted) > 2 * unsettled + 1000:   # prune now and then, not per tick
            self.accepted.keep(self.state.is_unsettled)
        self._told_stray = {k: t for k, t in self._told_stray.items() if k[0] in strays}
        # a time resend_after old or more is said again as one never told is (0.0): it can go
        # (it stayed for every instance ever told, ~6 MiB after 100,000: README, issue 12)
        if len(self._told) > 2 * self._told_kept + 1000 and now >= self.config.resend_after:
            self._told = {i: t for i, t in self._told.items() if now - t < self.config.resend_after}
            self._told_kept = len(self._told)


def why(e: Exception) -> str:
    """One line for a log: a gRPC error's code and details, else the exception."""
    if isinstance(e, grpc.aio.AioRpcError):
        return f"{e.code().name}: {e.details()}"
    return str(e) or type(e).__name__


def restart_message(p: RestartPolicy) -> agent_pb2.RestartPolicy:
    return agent_pb2.RestartPolicy(attempts=p.attempts, interval_seconds=p.interval,
                                   delay_seconds=p.delay, mode=p.mode)


def check_message(p: CheckPolicy | None) -> agent_pb2.HealthCheck | None:
    if p is None:
        return None
    return agent_pb2.HealthCheck(type=p.type, command=list(p.command), port=p.port, path=p.path,
                                 interval_seconds=p.interval, timeout_seconds=p.timeout,
                                 failures=p.failures, grace_seconds=p.grace)
