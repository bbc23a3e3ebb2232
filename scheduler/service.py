"""The scheduler's gRPC API (packyard.v1.Scheduler), used by ctl. Reads come from the controller's
etcd-fed cache; writes go to etcd (revision-checked) before the call returns.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging

import grpc

from packyard import keys, records
from packyard.records import JobRecord, ResourceAmounts
from packyard.spec import SpecError, load_json
from packyard.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc
from scheduler.controller import Controller, to_resources
from scheduler.reconciler import reconcile
from scheduler.state import Entry

log = logging.getLogger(__name__)
RETRIES_ON_CONFLICT = 6     # waits 0.05 .. 1.6 s in all: longer than a watch takes to catch up


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
        # A conflict means our cache was behind etcd (another replica wrote this job, or the one
        # before us died mid-submission and ctl failed over to us): wait for the watch to catch
        # up and decide again. Submitting the same spec again is a no-op, so a retried
        # submission is never placed twice.
        delay = 0.05
        for _ in range(RETRIES_ON_CONFLICT):
            reply = await self._submit(spec)
            if reply is not None:
                return reply
            await asyncio.sleep(delay)
            delay *= 2
        await context.abort(grpc.StatusCode.ABORTED, f"job '{spec.name}' kept changing while submitting; "
                                                     "submit again")

    async def _submit(self, spec) -> scheduler_pb2.SubmitResponse | None:
        state = self.c.state
        async with self.c.lock:
            old = state.jobs.get(spec.name)
            spec_json = spec.to_json()
            if old is not None and old.spec_json == spec_json and old.desired == "run":
                ids = [e.id for e in state.job_entries(spec.name) if e.record.desired == "run"]
                return scheduler_pb2.SubmitResponse(name=spec.name, version=old.version,
                                                    changed=False, instance_ids=ids)
            now = self.c.clock()
            job = JobRecord(name=spec.name, spec_json=spec_json,
                            version=old.version + 1 if old else 1, desired="run",
                            submitted_at=now, updated_at=now)
            result = reconcile(job, spec, state.job_entries(spec.name), self.c.ready_nodes(), now,
                               self.c.config.reconcile)
            job_write = (keys.job(job.name), records.dumps(job), state.job_revisions.get(job.name, 0))
            if not await self.c.commit([*result.create, *result.stop, *result.lost], first=job_write,
                                       fenced=False):
                return None
            await self.c.tell_stop([r for r in result.stop if r.node])
        self.c.kick(spec.name)
        ids = [e.id for e in state.job_entries(spec.name) if e.record.desired == "run"]
        return scheduler_pb2.SubmitResponse(name=spec.name, version=job.version, changed=True,
                                            instance_ids=ids)

    async def Plan(self, request, context):
        spec = await self._spec(request, context)
        async with self.c.lock:
            old = self.c.state.jobs.get(spec.name)
            unchanged = old is not None and old.spec_json == spec.to_json() and old.desired == "run"
            version = old.version if unchanged else (old.version + 1 if old else 1)
            planned = self.c.plan(spec, version)
        out = scheduler_pb2.PlanResponse(name=spec.name, changed=not unchanged, version=version)
        for action, rec, node, reason in planned:
            out.instances.append(scheduler_pb2.PlannedInstance(
                id=rec.id, group=rec.group, action=action, node=node, reason=reason,
                reserved=to_resources(ResourceAmounts.of(rec.reserved))))
        return out

    async def Stop(self, request, context):
        async with self.c.lock:
            job = self.c.state.jobs.get(request.name)
            if job is None:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"job '{request.name}' not found")
            purge = job.purge or request.purge
            if job.desired != "stop" or job.purge != purge:
                job = dataclasses.replace(job, desired="stop", purge=purge, updated_at=self.c.clock())
                write = (keys.job(job.name), records.dumps(job), self.c.state.job_revisions[job.name])
                if not await self.c.commit([], first=write, fenced=False):
                    await context.abort(grpc.StatusCode.ABORTED, "job changed meanwhile; try again")
        self.c.kick(request.name)
        stopping = sum(1 for e in self.c.state.job_entries(request.name)
                       if e.record.desired == "run" and not e.record.lost)
        return scheduler_pb2.StopResponse(name=request.name, stopping=stopping, purge=job.purge)

    async def Status(self, request, context):
        job = self.c.state.jobs.get(request.name)
        if job is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"job '{request.name}' not found")
        spec = self.c.spec_of(job)
        out = scheduler_pb2.JobStatus(name=job.name, priority=spec.priority, state=_job_state(job),
                                      version=job.version, submitted_at=job.submitted_at,
                                      spec_json=job.spec_json)
        for e in self.c.state.job_entries(job.name):
            out.instances.append(self.instance_view(e))
        return out

    def instance_view(self, e: Entry) -> scheduler_pb2.Instance:
        r, rep = e.record, e.state
        inst = scheduler_pb2.Instance(
            id=r.id, group=r.group, node=r.node, state=self.c.state.state_of(e), kind=r.kind,
            reserved=to_resources(ResourceAmounts.of(r.reserved)), desired=r.desired,
            reason=(rep.reason if rep and rep.reason else r.reason))
        if rep is not None:
            inst.address = rep.address
            inst.updated_at = rep.updated_at
            if rep.exit_code is not None:
                inst.exit_code, inst.has_exit_code = rep.exit_code, True
        return inst

    async def List(self, request, context):
        out = scheduler_pb2.ListResponse()
        for name in sorted(self.c.state.jobs):
            job = self.c.state.jobs[name]
            summary = scheduler_pb2.JobSummary(name=name, state=_job_state(job),
                                               priority=self.c.spec_of(job).priority,
                                               version=job.version, submitted_at=job.submitted_at)
            summary.instances_by_state.update(self.c.state.counts(name))
            out.jobs.append(summary)
        return out

    async def Nodes(self, request, context):
        state = self.c.state
        alloc = state.allocated()
        count: dict[str, int] = {}
        for e in state.instances.values():
            if e.record.node and not e.record.lost:
                count[e.record.node] = count.get(e.record.node, 0) + 1
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
                out.nodes.append(node)
        out.nodes.sort(key=lambda n: n.name)
        return out

    async def Logs(self, request: common_pb2.LogsRequest, context):
        job = keys.instance_job(request.instance_id)
        entry = self.c.state.instances.get(request.instance_id)
        if entry is None or job not in self.c.state.jobs:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"instance '{request.instance_id}' not found")
        node = self.c.state.nodes.get(entry.record.node)
        if node is None:
            where = entry.record.node or "no node yet"
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                f"instance '{request.instance_id}' is on {where}, which is not ready")
        try:
            async for chunk in self.c.agents.logs(node.address, request):
                yield chunk
        except grpc.aio.AioRpcError as e:
            await context.abort(e.code(), f"agent {node.name}: {e.details()}")


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


def _job_state(job: JobRecord) -> str:
    return "stopped" if job.desired == "stop" else "running"
