"""The host's bridge (agent/network.py) as the drivers use it: set up on the first start that needs
it, once (concurrent first starts wait for that one setup), and torn down when nothing is on it.
An instance on it is known by its key, `<node>/<instance id>`: its address, veth or tap follow it."""
from __future__ import annotations

import asyncio

from agent.drivers.base import DriverError
from agent.network import HostNetwork, NetworkError


def instance_key(node: str, instance_id: str) -> str:
    return f"{node}/{instance_id}"


class Bridge:
    def __init__(self, network: HostNetwork):
        self.network = network
        self._lock = asyncio.Lock()
        self._up = False

    async def ready(self) -> HostNetwork:
        async with self._lock:
            if not self._up:
                try:
                    await asyncio.to_thread(self.network.setup)
                except NetworkError as e:
                    raise DriverError(f"network: {e}") from e
                self._up = True
        return self.network

    async def teardown(self) -> None:
        await asyncio.to_thread(self.network.teardown)
        self._up = False
