"""The agent's gRPC API (packyard.v1.Agent), used by the scheduler."""
from __future__ import annotations

import asyncio
import json

import grpc

from agent.drivers.base import InstanceSpec
from agent.manager import InstanceManager
from packyard.v1 import agent_pb2, agent_pb2_grpc, common_pb2

CHUNK = 64 * 1024


def to_spec(p: agent_pb2.InstanceSpec) -> InstanceSpec:
    return InstanceSpec(id=p.id, job=p.job, group=p.group, kind=p.kind,
                        cpu_milli=p.limit.cpu_milli, memory_bytes=p.limit.memory_bytes,
                        request_cpu_milli=p.request.cpu_milli,
                        request_memory_bytes=p.request.memory_bytes,
                        config=json.loads(p.driver_json or "{}"))


class AgentService(agent_pb2_grpc.AgentServicer):
    def __init__(self, node: str, manager: InstanceManager):
        self.node = node
        self.manager = manager

    async def _check_node(self, node: str, context) -> None:
        if node and node != self.node:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"this agent is node '{self.node}', not '{node}'")

    async def Start(self, request, context):
        await self._check_node(request.node, context)
        try:
            specs = [to_spec(p) for p in request.instances]
        except ValueError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad instance spec: {e}")
        results = await self.manager.start(specs)
        return agent_pb2.StartResponse(results=[
            agent_pb2.StartResult(id=i, accepted=ok, error=err) for i, ok, err in results])

    async def Stop(self, request, context):
        await self._check_node(request.node, context)
        grace = request.grace_seconds if request.grace_seconds > 0 else 10.0
        stopping = await self.manager.stop(list(request.ids), grace)
        return agent_pb2.AgentStopResponse(stopping=stopping)

    async def Inventory(self, request, context):
        return agent_pb2.InventoryResponse(node=self.node, instances=[
            agent_pb2.InventoryEntry(id=i, state="running" if t.handle else "starting")
            for i, t in self.manager.instances.items()])

    async def Logs(self, request: common_pb2.LogsRequest, context):
        path = self.manager.log_file(request.instance_id)
        if not path.exists():
            if self.manager.is_active(request.instance_id):
                return  # started, nothing written yet
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"no logs for instance '{request.instance_id}' on {self.node}")
        with open(path, "rb") as f:
            if request.tail_bytes > 0:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - request.tail_bytes))
            while True:
                data = f.read(CHUNK)
                if data:
                    yield common_pb2.LogChunk(data=data)
                    continue
                if not request.follow or not self.manager.is_active(request.instance_id):
                    return
                await asyncio.sleep(0.2)
