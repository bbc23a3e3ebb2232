"""The agent's gRPC API (packyard.v1.Agent), used by the scheduler. Every request is checked at
this boundary (agent/boundary.py): malformed ones are answered INVALID_ARGUMENT naming the field."""
from __future__ import annotations

import logging
from collections.abc import Callable

import grpc

from agent import boundary, logfiles
from agent.manager import InstanceManager
from packyard.quantity import shown
from packyard.v1 import agent_pb2, agent_pb2_grpc, common_pb2

log = logging.getLogger(__name__)


class AgentService(agent_pb2_grpc.AgentServicer):
    def __init__(self, node: str, manager: InstanceManager, epoch: Callable[[], int | None] | None = None):
        self.node = node
        self.manager = manager
        self.epoch = epoch          # the current registration's lease id (see StartRequest.node_epoch)

    async def _check_epoch(self, request, context) -> None:
        current = self.epoch() if self.epoch is not None else None
        if request.node_epoch and current and request.node_epoch != current:
            log.info("refusing a start meant for an earlier registration of %s", self.node)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"node '{self.node}' registered again since this was sent; "
                                "it was declared down meanwhile")

    async def _check_node(self, node: str, context) -> None:
        if node and node != self.node:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"this agent is node '{self.node}', not '{shown(node)}'")

    async def _check_ids(self, ids: list[str], field: str, context) -> None:
        try:
            for i, iid in enumerate(ids):
                boundary.instance_id(iid, f"{field}[{i}]" if field == "ids" else field)
        except ValueError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))

    async def Start(self, request, context):
        await self._check_node(request.node, context)
        await self._check_epoch(request, context)
        try:
            specs = [boundary.to_spec(p, f"instances[{i}]") for i, p in enumerate(request.instances)]
        except ValueError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad instance spec: {e}")
        log.info("start %d: %s", len(specs), " ".join(s.id for s in specs[:8]) + (" ..." if len(specs) > 8 else ""))
        results = await self.manager.start(specs)
        return agent_pb2.StartResponse(results=[
            agent_pb2.StartResult(id=i, accepted=ok, error=err) for i, ok, err in results])

    async def Stop(self, request, context):
        await self._check_node(request.node, context)
        await self._check_ids(list(request.ids), "ids", context)
        log.info("stop %d: %s", len(request.ids), " ".join(list(request.ids)[:8]) + (" ..." if len(request.ids) > 8 else ""))
        stopping = await self.manager.stop(list(request.ids), boundary.grace_seconds(request.grace_seconds))
        return agent_pb2.AgentStopResponse(stopping=stopping)

    async def Inventory(self, request, context):
        await self._check_node(request.node, context)
        return agent_pb2.InventoryResponse(node=self.node, instances=[
            agent_pb2.InventoryEntry(id=i, state="stopping" if t.stopping else "running" if t.handle else "starting",
                                     gpus=t.spec.gpus)
            for i, t in self.manager.instances.items()])

    async def Logs(self, request: common_pb2.LogsRequest, context):
        await self._check_ids([request.instance_id], "instance_id", context)
        path = self.manager.log_file(request.instance_id)
        if not logfiles.exists(path):
            if self.manager.is_active(request.instance_id):
                return  # started, nothing written yet
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"no logs for instance '{request.instance_id}' on {self.node}")
        # across the log's rotation, oldest file first (agent/logfiles.py)
        async for data in logfiles.stream(path, request.tail_bytes, request.follow,
                                          lambda: self.manager.is_active(request.instance_id)):
            yield common_pb2.LogChunk(data=data)
