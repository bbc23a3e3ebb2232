"""Writes the agent's view of its instances to etcd, under its own node's keys only.

No state may be lost while etcd is away: a report that cannot be written stays queued (the latest
state per instance, so a later report replaces an earlier one and they never land out of order) and
a background task writes the queue once etcd answers again. Outside an outage `report` returns
once its states are in etcd: the scheduler takes `starting` as the agent's confirmation.
"""
from __future__ import annotations

import asyncio
import logging
import time

from packyard import keys, records
from packyard.etcd import Etcd, EtcdError, Outage
from packyard.records import StateRecord

log = logging.getLogger(__name__)


class Reporter:
    def __init__(self, etcd: Etcd, node: str, retry_every: float = 1.0):
        self.etcd = etcd
        self.node = node
        self.retry_every = retry_every
        self.queued: dict[str, StateRecord] = {}     # written to etcd not yet
        self._lock = asyncio.Lock()                  # one writer: queued states land in order
        self._retry: asyncio.Task | None = None
        self._outage = Outage(log, f"reporting the states of node {node}")

    async def report(self, *states: StateRecord) -> None:
        now = time.time()
        for s in states:
            s.updated_at = s.updated_at or now
            self.queued[s.id] = s
        if self._retry is not None:   # etcd is away: the retry task writes them
            return
        try:
            await self.flush()
        except EtcdError as e:
            self._outage.failed(e)
            if self._retry is None:   # a concurrent report may have started it meanwhile
                self._retry = asyncio.get_running_loop().create_task(self._retry_until_written())

    async def flush(self) -> None:
        """Write everything queued; states queued meanwhile are written by the same call."""
        async with self._lock:
            while self.queued:
                batch = dict(self.queued)
                await self.etcd.put_many([(keys.state(self.node, i), records.dumps(s)) for i, s in batch.items()])
                for i, s in batch.items():
                    if self.queued.get(i) is s:
                        del self.queued[i]

    async def _retry_until_written(self) -> None:
        try:
            while True:
                await asyncio.sleep(self.retry_every)
                try:
                    await self.flush()
                except EtcdError as e:
                    self._outage.failed(e)
                    continue
                self._outage.ok()
                return
        finally:
            self._retry = None

    async def reported(self) -> dict[str, StateRecord]:
        """What etcd holds for this node, with what is still queued on top."""
        _, kvs = await self.etcd.get_prefix(keys.state_prefix(self.node))
        out = {keys.last(kv.key): records.loads(StateRecord, kv.value) for kv in kvs}
        return out | self.queued

    async def close(self, wait: float = 2.0) -> None:
        """Give queued states a last chance; a restarted agent reports what changed meanwhile."""
        if self._retry is None:
            return
        try:
            await asyncio.wait_for(self.flush(), wait)
        except (EtcdError, TimeoutError):
            log.warning("%d instance states of node %s not written: etcd unavailable",
                        len(self.queued), self.node)
        self._retry.cancel()
