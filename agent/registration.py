"""The agent's node record in etcd, bound to a lease the agent keeps alive. If the agent dies the
lease expires and the record disappears: that is how the scheduler learns a node is down.

While etcd is away the lease is kept, not given up: a cluster that comes back restores its leases
(and restarts their TTLs), so the node record is still there. Only a lease etcd says has expired is
replaced, by a new one with the node record put under it again."""
from __future__ import annotations

import asyncio
import logging

from packyard import keys, records
from packyard.etcd import Etcd, Outage
from packyard.records import NodeRecord

log = logging.getLogger(__name__)


class Registration:
    def __init__(self, etcd: Etcd, record: NodeRecord, ttl: int = 10):
        self.etcd = etcd
        self.record = record
        self.ttl = ttl
        self.lease_id: int | None = None
        self._task: asyncio.Task | None = None
        self._outage = Outage(log, f"keeping node {record.name} registered")

    async def register(self) -> None:
        lease_id = await self.etcd.grant_lease(self.ttl)
        self.record.epoch = lease_id    # requests meant for an earlier registration are refused
        await self.etcd.put(keys.node(self.record.name), records.dumps(self.record), lease=lease_id)
        # only now: if the put failed, the old (expired) lease makes the next round register again
        self.lease_id = lease_id

    async def update_attributes(self, attributes: dict[str, str]) -> None:
        """Publish changed attributes (a driver that became healthy or not) under the current lease."""
        await self.update(attributes=attributes)

    async def update(self, **fields) -> None:
        """Publish changed fields of the node record (attributes, images) under the current lease.
        Not published (etcd away): the record keeps its old values, so the caller's next try
        still sees a change."""
        old = {name: getattr(self.record, name) for name in fields}
        for name, value in fields.items():
            setattr(self.record, name, value)
        if self.lease_id is not None:
            try:
                await self.etcd.put(keys.node(self.record.name), records.dumps(self.record), lease=self.lease_id)
            except BaseException:
                for name, value in old.items():
                    setattr(self.record, name, value)
                raise

    async def start(self) -> None:
        await self.register()
        self._task = asyncio.get_running_loop().create_task(self._keepalive())

    async def _keepalive(self) -> None:
        # refresh at a third of the TTL: two refreshes may fail before the node is declared down
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self.keep()
            except Exception as e:   # etcd away: keep the lease id, try again next round
                self._outage.failed(e)
            else:
                self._outage.ok()

    async def keep(self) -> None:
        if self.lease_id is None or await self.etcd.refresh_lease(self.lease_id) <= 0:
            log.warning("lease of node %s expired; registering again", self.record.name)
            await self.register()

    async def close(self, deregister: bool = False) -> None:
        """Stop keeping the lease alive. The lease is left to expire unless deregister is set, so
        an agent restarted within the TTL never looks down and its instances are not replaced."""
        if self._task:
            self._task.cancel()
        if deregister and self.lease_id is not None:
            await self.etcd.revoke_lease(self.lease_id)
