"""Writing the scheduler's decisions to etcd: chunked, revision-checked transactions, fenced by
leadership, applied to the cache at once; and purging stopped jobs. Besides the watches, this is
the only writer of the cache (`ClusterState`): the next decision must see what this one wrote,
without waiting for the watch to bring it back.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Literal

from packyard import keys, records
from packyard.etcd import Etcd, Event
from packyard.records import InstanceRecord
from scheduler.state import ClusterState, Entry

log = logging.getLogger(__name__)
IN_FLIGHT = 4        # transactions of one commit sent together (see Committer.commit)

# What a fenced write compares: (the leader key, the revision we hold it at); None: no election
# (one replica, tests); NOT_LEADING: we lost it, write nothing.
NOT_LEADING: Literal["not leading"] = "not leading"
Guard = tuple[str, int] | None | Literal["not leading"]
Write = tuple[str, bytes, int]      # key, value, the mod revision it must still have (0: absent)


class Committer:
    def __init__(self, etcd: Etcd, state: ClusterState, fence: Callable[[], Guard] = lambda: None):
        self.etcd = etcd
        self.state = state
        self.fence = fence

    async def commit(self, recs: list[InstanceRecord], first: Write | Sequence[Write] | None = None,
                     fenced: bool = True, drop: Sequence[str] = ()) -> bool:
        """Revision-checked writes (a record changed by someone else since we read it is left
        alone: False, and the caller decides again), applied to the cache at once so the next
        decision sees them. `first` (key, value, expected revision; or several) goes into the
        first transaction: a job record that must not be written unless its instances are, and
        vice versa for the first chunk; `drop`, keys deleted in it. `fenced` writes (the leader's decisions) also require the
        leader key to be still ours; API writes (any replica may take a submission) are not."""
        guard = self.fence() if fenced else None
        if guard == NOT_LEADING:
            return False
        firsts = [first] if isinstance(first, tuple) else list(first or ())
        step = max(1, self.etcd.txn_ops - max(1, len(firsts) + len(drop)))
        chunks = [recs[i:i + step] for i in range(0, len(recs), step)]
        if firsts or drop:
            # the first transaction alone: if it fails, nothing else is written
            if not await self._chunk(chunks[0] if chunks else [], guard, firsts, drop):
                return False
            chunks = chunks[1:]
        # the rest a few transactions at a time: etcd commits concurrent proposals together
        # (a 100,000-instance submission took 4 s one transaction after another)
        ok_all = True
        for i in range(0, len(chunks), IN_FLIGHT):
            done = await asyncio.gather(*(self._chunk(c, guard) for c in chunks[i:i + IN_FLIGHT]))
            ok_all = ok_all and all(done)
        return ok_all

    async def _chunk(self, chunk: list[InstanceRecord], guard: tuple[str, int] | None,
                     firsts: Sequence[Write] = (), drop: Sequence[str] = ()) -> bool:
        writes = list(firsts)
        instances, state = self.state.instances, self.state
        for r in chunk:
            entry = instances.get(r.id)
            value = records.dumps(r)
            writes.append((keys.instance(r.job, r.id), value, entry.mod_revision if entry else 0))
            state.expect_own_write(r, value)
        try:
            revision = await self.etcd.put_if_unchanged(writes, deletes=drop, guard=guard)
        finally:
            for r in chunk:
                state.forget_own_write(r.id)
        if not revision:
            return False
        for key, value, _ in firsts:
            state.apply(Event("put", key, value, revision))
        for key in drop:
            state.apply(Event("delete", key, b"", revision))
        for r in chunk:            # the records we hold: no need to parse what we just wrote
            state.put_own_write(r, revision)
        return True

    def is_current(self, r: InstanceRecord) -> bool:
        """The commit of `r` went through (a refused transaction leaves the cache as it was)."""
        e = self.state.instances.get(r.id)
        return e is not None and e.record == r

    async def purge(self, name: str, entries: list[Entry]) -> bool:
        """Forget a stopped job: instance and state records first, the job record last, each
        transaction guarded by the job record's revision, so that a job submitted again
        meanwhile is left alone. False if it was."""
        guard = (keys.job(name), self.state.job_revision(name))
        doomed = []
        for e in entries:
            doomed.append(keys.instance(name, e.id))
            doomed += [keys.state(node, e.id) for node in self.state.reports_of(e.id)]
        if name in self.state.deployments:
            doomed.append(keys.deployment(name))
        doomed += [keys.version(name, n) for n in self.state.versions.get(name, {})]
        doomed.append(guard[0])
        step = self.etcd.txn_ops - 1
        for i in range(0, len(doomed), step):
            chunk = doomed[i:i + step]
            if not await self.etcd.put_if_unchanged([], deletes=chunk, guard=guard):
                return False
            for key in chunk:          # at once, not when the watch brings them: no second purge
                self.state.apply(Event("delete", key, b"", 0))
        log.info("job %s purged: %d instances forgotten", name, len(entries))
        return True
