"""Leader election through etcd, so several scheduler replicas can run and exactly one places.

The leader is the replica whose identity sits in `/packyard/leader`, written under a lease of its
own that it keeps alive. The key is created only if absent (a transaction on create_revision = 0),
so two replicas can't both win. If the leader dies its lease expires, etcd deletes the key, and the
next replica to try creates it: takeover costs the lease TTL plus one poll.

A leader that can't renew its lease steps down *before* the lease can have expired (it counts the
TTL from the last renewal it sent, which is no later than when etcd renewed it), so two replicas
never both believe they lead. The key's revision is also a fencing token: the controller's commits
carry a comparison on it (see Controller.commit), so a leader that stalled past its lease can't
write placements even before it notices.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from packyard import keys
from packyard.etcd import Etcd

log = logging.getLogger(__name__)


class Leadership:
    def __init__(self, etcd: Etcd, identity: str, ttl: int = 3,
                 on_change: Callable[[bool], None] | None = None, poll: float = 0.25):
        self.etcd = etcd
        self.identity = identity
        self.ttl = ttl
        self.poll = poll
        self.on_change = on_change or (lambda leading: None)
        self.leading = False
        self.revision = 0            # mod_revision of our leader key while we lead (fencing token)
        self.lease_id: int | None = None
        self.leader: str = ""        # the current leader's identity, as last seen
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def resign(self) -> None:
        """Hand over at once (on a clean shutdown): revoking the lease deletes the key."""
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        self._set(False)
        if self.lease_id is not None:
            try:
                await self.etcd.revoke_lease(self.lease_id)
            except Exception as e:
                log.warning("revoking the leader lease failed (it expires in %d s): %s", self.ttl, e)
            self.lease_id = None

    def _set(self, leading: bool, revision: int = 0) -> None:
        self.revision = revision
        if leading != self.leading:
            self.leading = leading
            if leading:
                self.leader = self.identity
            log.info("%s %s leadership", self.identity, "took" if leading else "lost")
            self.on_change(leading)

    async def _run(self) -> None:
        while True:
            try:
                if await self._campaign():
                    await self._hold()
                else:
                    await asyncio.sleep(self.poll)
            except asyncio.CancelledError:
                raise
            except Exception as e:   # etcd unreachable: not leading, try again
                log.warning("leader election: %s", e)
                self._set(False)
                await asyncio.sleep(self.poll)

    async def _campaign(self) -> bool:
        current = await self.etcd.get(keys.LEADER)
        if current is not None:
            self.leader = current.decode()
            return False
        if self.lease_id is None:
            self.lease_id = await self.etcd.grant_lease(self.ttl)
        sent = time.monotonic()
        revision = await self.etcd.create_if_absent(keys.LEADER, self.identity.encode(), self.lease_id)
        if not revision:
            return False
        self._last_renewal = sent
        self._set(True, revision)
        return True

    async def _hold(self) -> None:
        """Renew the lease every third of its TTL; step down when renewals stop succeeding for
        longer than is safe, or when the key is no longer ours."""
        margin = min(1.0, self.ttl / 3)
        while True:
            await asyncio.sleep(self.ttl / 3)
            sent = time.monotonic()
            try:
                remaining = await asyncio.wait_for(self.etcd.refresh_lease(self.lease_id), self.ttl / 3)
                owner = await asyncio.wait_for(self.etcd.get(keys.LEADER), self.ttl / 3)
            except Exception as e:   # a timeout or etcd unreachable
                if time.monotonic() - self._last_renewal > self.ttl - margin:
                    log.warning("leader lease not renewed for %.1f s (%s): stepping down",
                                time.monotonic() - self._last_renewal, e)
                    self._set(False)
                    self.lease_id = None
                    return
                continue
            if remaining <= 0 or owner is None or owner.decode() != self.identity:
                self._set(False)
                self.lease_id = None
                return
            self._last_renewal = sent
