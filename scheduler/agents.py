"""gRPC clients for the agents, one channel per agent address (under TLS per node and address),
reused across calls."""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc

from packyard import tls
from packyard.v1 import agent_pb2, agent_pb2_grpc, common_pb2

log = logging.getLogger(__name__)


class AgentClients:
    def __init__(self, timeout: float = 10.0, identity: tls.Identity | None = None):
        """identity: the scheduler's certificate, presented to agents for mutual TLS (None: plaintext)."""
        self.timeout = timeout
        self.identity = identity
        self._stubs: dict[tuple[str, str], agent_pb2_grpc.AgentStub] = {}
        self._channels: dict[tuple[str, str], grpc.aio.Channel] = {}

    def stub(self, node: str, address: str) -> agent_pb2_grpc.AgentStub:
        """Under TLS the agent at ADDRESS must prove it is NODE's (its certificate names the node):
        a host registering another's name with its own address gets no call through, so each
        node has its channel. In plaintext the node is not part of the channel: nodes that share
        an address (a simulated fleet's 5,000) share one. A channel costs ~11 kB of gRPC's own
        memory, outside Python's heap: 5,000 of them 56 MiB (bench/agent_channels.py)."""
        key = (node if self.identity is not None else "", address)
        stub = self._stubs.get(key)
        if stub is None:
            channel = tls.dial(address, self.identity, "agent", aio=True, node=node)
            self._channels[key] = channel
            stub = self._stubs[key] = agent_pb2_grpc.AgentStub(channel)
        return stub

    async def start(self, node: str, address: str, specs: list[agent_pb2.InstanceSpec],
                    epoch: int = 0) -> agent_pb2.StartResponse:
        return await self.stub(node, address).Start(
            agent_pb2.StartRequest(node=node, instances=specs, node_epoch=epoch), timeout=self.timeout)

    async def stop(self, node: str, address: str, ids: list[str], grace: float) -> None:
        await self.stub(node, address).Stop(
            agent_pb2.AgentStopRequest(node=node, ids=ids, grace_seconds=grace), timeout=self.timeout)

    async def inventory(self, node: str, address: str) -> agent_pb2.InventoryResponse:
        return await self.stub(node, address).Inventory(agent_pb2.InventoryRequest(node=node), timeout=self.timeout)

    async def logs(self, node: str, address: str, req: common_pb2.LogsRequest) -> AsyncIterator[common_pb2.LogChunk]:
        call = self.stub(node, address).Logs(req, timeout=None if req.follow else self.timeout)
        async for chunk in call:
            yield chunk

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        self._stubs.clear()
