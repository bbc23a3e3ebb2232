"""The scheduler's gRPC API (packyard.v1.Scheduler), used by ctl: protobuf in and out, nothing
more. Reads come from the controller's etcd-fed cache; writes are the controller's (`submit`,
`stop_job`), in etcd before the call returns.
"""
from __future__ import annotations

import asyncio
import logging
import platform
from collections.abc import Iterable

import grpc

from packyard import keys, records
from packyard.about import packyard_version
from packyard.records import COMPLETE, MAX_EVENTS, TERMINAL, JobRecord, ResourceAmounts
from packyard.spec import SpecError, load_json
from packyard.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc
from scheduler import changes
from scheduler.caps import OverCap
from scheduler.controller import Conflict, Controller, NotFound, Refused
from scheduler.convert import to_resources
from scheduler.state import Entry

log = logging.getLogger(__name__)
# seconds a watch waits after a change before reading the cache: a burst (a job's 100 instances
# starting) is one message, not a hundred
WATCH_COALESCE = 0.1
# An agent's answers that mean the agent could not be reached: relayed as ABORTED, since ctl takes
# UNAVAILABLE and DEADLINE_EXCEEDED from the scheduler to mean the scheduler itself is unreachable.
TRANSPORT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


class SchedulerService(scheduler_pb2_grpc.SchedulerServicer):
    def __init__(self, controller: Controller, allow_privileged: bool = False):
        self.c = controller
        self.allow_privileged = allow_privileged     # --allow-privileged: see _check_host_access

    async def _check_host_access(self, spec, context) -> None:
        """Privileged containers and the host's network only when the operator allowed them (the
        agents check again)."""
        asked = [] if self.allow_privileged else spec.host_access()
        if asked:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "\n".join(
                f"{field}: not allowed (the scheduler was not started with --allow-privileged)"
                for field in asked))

    async def _spec(self, request, context):
        """The request's job spec, valid and allowed here, or the call ends INVALID_ARGUMENT."""
        try:
            spec = load_json(request.spec_json)
        except SpecError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "\n".join(e.errors))
        await self._check_host_access(spec, context)
        return spec

    async def Submit(self, request, context):
        spec = await self._spec(request, context)
        done = await _answer(context, self.c.submit(spec))
        return _submitted(spec.name, done)

    async def Plan(self, request, context):
        spec = await self._spec(request, context)
        planned = await self.c.plan(spec)
        out = scheduler_pb2.PlanResponse(name=spec.name, changed=planned.changed, version=planned.version,
                                         changes=planned.changes, replaces=planned.replaces)
        for p in planned.instances:
            out.instances.append(scheduler_pb2.PlannedInstance(
                id=p.record.id, group=p.record.group, action=p.action, node=p.node, reason=p.reason,
                reserved=to_resources(ResourceAmounts.of(p.record.reserved))))
        return out

    async def History(self, request, context):
        kept = await _answer(context, self.c.history(request.name))
        return scheduler_pb2.HistoryResponse(name=request.name, versions=[scheduler_pb2.JobVersion(
            version=v.record.version, submitted_at=v.record.submitted_at, stable=v.record.stable,
            note=v.record.note, changes=v.changes, current=v.current, failed=v.record.failed,
            same_as=v.same_as) for v in kept])

    async def Rollback(self, request, context):
        if request.version < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"version: {request.version} is not a version")
        spec, version = await _answer(context, self.c.rollback_target(request.name, request.version))
        # an older version asking for host access is admitted as its Submit would be now: a
        # scheduler restarted without --allow-privileged does not run it again
        await self._check_host_access(spec, context)
        done = await _answer(context, self.c.rollback(spec, version))
        return _submitted(request.name, done)

    async def Promote(self, request, context):
        return deployment_view(await _answer(context, self.c.promote(request.name)))

    async def Stop(self, request, context):
        done = await _answer(context, self.c.stop_job(request.name, request.purge))
        return scheduler_pb2.StopResponse(name=request.name, stopping=done.stopping, purge=done.purge)

    async def Version(self, request, context):
        return scheduler_pb2.VersionResponse(version=packyard_version(), python=platform.python_version(),
                                             leader=self.c.leading)

    async def Status(self, request, context):
        out = self.status_view(request.name)
        if out is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"job '{request.name}' not found")
        return out

    async def WatchStatus(self, request, context):
        if request.name not in self.c.state.jobs:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"job '{request.name}' not found")
        async for view in self._watch(request.name, lambda: self.status_view(request.name)):
            yield view

    async def WatchList(self, request, context):
        async for view in self._watch(changes.JOBS, self.list_view):
            yield view

    async def WatchNodes(self, request, context):
        async for view in self._watch(changes.NODES, self.nodes_view):
            yield view

    async def _watch(self, topic: str, view):
        """VIEW() now, then again after each change of TOPIC when it differs from what was sent;
        ends when VIEW() is None (the job is gone) or the client goes away (the task is cancelled)."""
        sub = self.c.changes.subscribe(topic)     # before the first view: no change falls between
        try:
            last = None          # not b"": an empty view (no jobs yet) serialises to b"" and is sent too
            while True:
                current = view()
                if current is None:
                    return
                data = current.SerializeToString(deterministic=True)
                if data != last:
                    last = data
                    yield current
                await sub.changed()
                await asyncio.sleep(WATCH_COALESCE)
        finally:
            sub.close()

    def status_view(self, name: str) -> scheduler_pb2.JobStatus | None:
        job = self.c.state.jobs.get(name)
        if job is None:
            return None
        spec = self.c.specs.of(job)
        out = scheduler_pb2.JobStatus(name=job.name, priority=spec.priority, state=self.job_state(job),
                                      version=job.version, submitted_at=job.submitted_at,
                                      spec_json=job.spec_json)
        for e in self.c.state.job_entries(job.name):
            out.instances.append(self.instance_view(e))
        d = self.c.state.deployments.get(job.name)
        if d is not None:
            out.deployment.CopyFrom(deployment_view(d))
        return out

    def instance_view(self, e: Entry) -> scheduler_pb2.Instance:
        r, rep = e.record, e.state
        inst = scheduler_pb2.Instance(
            id=r.id, group=r.group, node=r.node, state=self.c.state.state_of(e), kind=r.kind, version=r.version,
            reserved=to_resources(ResourceAmounts.of(r.reserved)), desired=r.desired,
            reason=(rep.reason if rep and rep.reason else r.reason))
        if rep is not None:
            inst.address = rep.address
            inst.updated_at = rep.updated_at
            if rep.exit_code is not None:
                inst.exit_code, inst.has_exit_code = rep.exit_code, True
            inst.restarts = rep.restarts
            inst.image_digest = rep.image_digest
        # the scheduler's events (rescheduled from ...) and the agent's (restarts), oldest first
        events = [*r.events, *(rep.events if rep is not None else [])]
        events = sorted((ev for ev in events if isinstance(ev, dict)), key=lambda ev: ev.get("at", 0.0))
        inst.events.extend(scheduler_pb2.InstanceEvent(at=ev.get("at", 0.0), message=str(ev.get("message", "")))
                           for ev in events[-MAX_EVENTS:])
        # the agent's word while it runs; an instance not running has no health to speak of
        running = rep is not None and rep.state == "running" and inst.state == "running"
        inst.health = rep.health if running and rep.health else "unknown"
        return inst

    def job_state(self, job: JobRecord) -> str:
        if job.desired == "stop" or self.c.specs.of(job).type != "batch":
            return job_state(job, "", ())
        state_of = self.c.state.state_of
        return job_state(job, "batch", (state_of(e) for e in self.c.state.job_entries(job.name)
                                        if e.record.desired == "run"))

    async def List(self, request, context):
        return self.list_view()

    def list_view(self) -> scheduler_pb2.ListResponse:
        out = scheduler_pb2.ListResponse()
        for name in sorted(self.c.state.jobs):
            job = self.c.state.jobs[name]
            summary = scheduler_pb2.JobSummary(name=name, state=self.job_state(job),
                                               priority=self.c.specs.of(job).priority,
                                               version=job.version, submitted_at=job.submitted_at)
            summary.instances_by_state.update(self.c.state.counts(name))
            out.jobs.append(summary)
        return out

    async def Nodes(self, request, context):
        return self.nodes_view()

    def nodes_view(self) -> scheduler_pb2.NodesResponse:
        state = self.c.state
        alloc = state.allocated()
        count = state.placed_per_node()
        out = scheduler_pb2.NodesResponse()
        for status, group in (("ready", state.nodes), ("down", state.down)):
            for name, n in group.items():
                node = scheduler_pb2.Node(
                    name=name, state=status, address=n.address,
                    capacity=to_resources(ResourceAmounts.of(n.capacity)),
                    allocated=to_resources(alloc.get(name, ResourceAmounts())),
                    usage=_usage(state.usage.get(name)) if status == "ready" else to_resources(ResourceAmounts()),
                    instances=count.get(name, 0))
                node.labels.update(n.labels)
                node.attributes.update(n.attributes)
                node.images.extend(_node_image(i) for i in n.images if isinstance(i, dict))
                out.nodes.append(node)
        out.nodes.sort(key=lambda n: n.name)
        return out

    async def Logs(self, request: common_pb2.LogsRequest, context):
        job = keys.instance_job(request.instance_id)
        entry = self.c.state.instances.get(request.instance_id)
        if entry is None or job not in self.c.state.jobs:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"instance '{request.instance_id}' not found")
        # Neither answer below may be UNAVAILABLE: ctl would try the next replica (which knows the
        # same) and then say it cannot reach the scheduler, which did answer.
        if not entry.record.node:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"instance '{request.instance_id}' is {self.c.state.state_of(entry)} on no "
                                "node yet, so it has no logs")
        node = self.c.state.nodes.get(entry.record.node)
        if node is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"instance '{request.instance_id}' is on {entry.record.node}, which is not ready")
        try:
            async for chunk in self.c.agents.logs(node.name, node.address, request):
                yield chunk
        except grpc.aio.AioRpcError as e:
            code = grpc.StatusCode.ABORTED if e.code() in TRANSPORT else e.code()
            await context.abort(code, f"agent {node.name}: {e.details()}")


    async def Profiles(self, request, context):
        out = scheduler_pb2.ProfilesResponse()
        for kind, p in sorted(self.c.learner.profiles().items()):
            info = scheduler_pb2.ProfileInfo(
                kind=kind, fixed_memory_bytes=p.fixed_memory, per_vcpu_memory_bytes=p.per_vcpu_memory,
                memory_fraction=p.memory_fraction, fixed_cpu_milli=p.fixed_cpu_milli)
            for c in p.learned:
                info.learned.append(scheduler_pb2.LearnedClass(
                    size_class_bytes=c.size_class, samples=c.samples, p50_bytes=c.p50,
                    p95_bytes=c.p95, overhead_bytes=c.overhead_memory))
            out.profiles.append(info)
        return out


def _usage(u: records.UsageRecord | None) -> common_pb2.Resources:
    if u is None:
        return common_pb2.Resources()
    return common_pb2.Resources(cpu_milli=int(u.host.get("cpu_milli", 0)),
                                memory_bytes=int(u.host.get("memory_bytes", 0)))


def _node_image(image: dict) -> scheduler_pb2.NodeImage:
    """An image from an agent's node record (read, not trusted: odd fields become empty)."""
    refs, size = image.get("references"), image.get("bytes")
    return scheduler_pb2.NodeImage(
        digest=str(image.get("digest", "")),
        references=[str(r) for r in refs] if isinstance(refs, list) else [],
        bytes=size if isinstance(size, int) and 0 <= size < 1 << 63 else 0)


def job_state(job: JobRecord, job_type: str, live: Iterable[str]) -> str:
    """What `ctl status` and `ctl list` say of a job: stopped, or running; a batch job whose
    instances meant to run (`live`: their states) have all ended is complete when each did (issue
    13: "the job is complete when every instance is"), failed when one did not (one the
    reconciler reschedules is, once it has looked, no longer meant to run: its replacement is)."""
    if job.desired == "stop":
        return "stopped"
    if job_type == "batch":
        states = set(live)
        if states and states <= TERMINAL:
            return "complete" if states == {COMPLETE} else "failed"
    return "running"


# the controller's refusals, as gRPC status codes (ctl maps those to its exit codes)
ERRORS = {NotFound: grpc.StatusCode.NOT_FOUND, Refused: grpc.StatusCode.FAILED_PRECONDITION,
          Conflict: grpc.StatusCode.ABORTED, OverCap: grpc.StatusCode.INVALID_ARGUMENT}


async def _answer(context, work):
    """Await the controller's answer; a refusal aborts the call with its code and message."""
    try:
        return await work
    except tuple(ERRORS) as e:
        await context.abort(ERRORS[type(e)], str(e))


def _submitted(name: str, done) -> scheduler_pb2.SubmitResponse:
    return scheduler_pb2.SubmitResponse(name=name, version=done.version, changed=done.changed,
                                        instance_ids=done.instance_ids)


def deployment_view(d) -> scheduler_pb2.Deployment:
    return scheduler_pb2.Deployment(
        version=d.version, state=d.state, description=d.description, started_at=d.started_at,
        target=d.target or d.version, reverted_to=d.reverted_to,
        groups={name: scheduler_pb2.DeploymentGroup(**counts) for name, counts in d.groups.items()})
