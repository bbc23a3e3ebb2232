"""A fake of `scheduler.agents.AgentClients`: records every call, answers as told. For unit
tests of dispatch without gRPC or agents."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from packyard.v1 import agent_pb2


@dataclass
class FakeAgentClients:
    down: set[str] = field(default_factory=set)                  # nodes whose calls fail
    refuse: set[str] = field(default_factory=set)                # instance ids refused at Start
    running: dict[str, list[str]] = field(default_factory=dict)  # node -> what Inventory lists
    starts: list[tuple[str, list[agent_pb2.InstanceSpec], int]] = field(default_factory=list)
    stops: list[tuple[str, list[str]]] = field(default_factory=list)

    def _reach(self, node: str) -> None:
        if node in self.down:
            raise ConnectionError(f"{node} unreachable")

    async def start(self, node: str, address: str, specs: list[agent_pb2.InstanceSpec],
                    epoch: int = 0) -> agent_pb2.StartResponse:
        self._reach(node)
        self.starts.append((node, list(specs), epoch))
        return agent_pb2.StartResponse(results=[
            agent_pb2.StartResult(id=s.id, accepted=s.id not in self.refuse,
                                  error="refused" if s.id in self.refuse else "") for s in specs])

    async def stop(self, node: str, address: str, ids: list[str], grace: float) -> None:
        self._reach(node)
        self.stops.append((node, list(ids)))

    async def inventory(self, node: str, address: str) -> agent_pb2.InventoryResponse:
        self._reach(node)
        return agent_pb2.InventoryResponse(node=node, instances=[
            agent_pb2.InventoryEntry(id=i, state="running") for i in self.running.get(node, [])])

    async def settle(self) -> None:
        """Let the dispatcher's background calls run."""
        for _ in range(5):
            await asyncio.sleep(0)
