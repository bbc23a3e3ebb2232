"""Writes the agent's view of its instances to etcd, under its own node's keys only."""
from __future__ import annotations

import time

from packyard import keys, records
from packyard.etcd import Etcd
from packyard.records import StateRecord


class Reporter:
    def __init__(self, etcd: Etcd, node: str):
        self.etcd = etcd
        self.node = node

    async def report(self, *states: StateRecord) -> None:
        now = time.time()
        items = []
        for s in states:
            s.updated_at = s.updated_at or now
            items.append((keys.state(self.node, s.id), records.dumps(s)))
        await self.etcd.put_many(items)

    async def reported(self) -> dict[str, StateRecord]:
        _, kvs = await self.etcd.get_prefix(keys.state_prefix(self.node))
        return {keys.last(kv.key): records.loads(StateRecord, kv.value) for kv in kvs}
