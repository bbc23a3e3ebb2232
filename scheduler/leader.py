"""Leader election through etcd, so several scheduler replicas can run and exactly one places.

The leader is the replica whose identity sits in `/packyard/leader`, written under a lease of its
own that it keeps alive. The key is created only if absent (a transaction on create_revision = 0),
so two replicas can't both win. If the leader dies its lease expires, etcd deletes the key, and the
next replica to try creates it: takeover costs the lease TTL plus one poll.

The election runs in a thread of its own, with its own event loop and etcd connection: placing a
100,000-instance job keeps the scheduler's loop busy for seconds, and a leader must not lose its
lease for being busy. What it decides reaches the scheduler's loop through call_soon_threadsafe.

A leader that can't renew its lease steps down a little before the TTL has passed since the last
renewal it sent (no later than when etcd renewed it), so it stops believing it leads before
another replica can take over. The key's revision is also a fencing token: the controller's
commits carry a comparison on it (Controller.commit), so a leader that stalled past its lease
can't write placements even before it notices.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

from packyard import keys
from packyard.etcd import Etcd
from packyard.tasks import cancel_and_wait

log = logging.getLogger(__name__)


class Leadership:
    def __init__(self, etcd: Etcd, identity: str, ttl: int = 3,
                 on_change: Callable[[bool], None] | None = None, poll: float = 0.25,
                 margin: float | None = None):
        self.endpoints = etcd.endpoints
        self.tls = etcd.identity        # its own client dials etcd as the scheduler's does
        self.identity = identity
        self.ttl = ttl
        self.poll = poll
        # step down this long before the lease could expire without renewals
        self.margin = min(0.5, ttl / 6) if margin is None else margin
        self.on_change = on_change or (lambda leading: None)
        self.leading = False
        self.revision = 0            # mod_revision of our leader key while we lead (fencing token)
        self.lease_id: int | None = None
        self.leader: str = ""        # the current leader's identity, as last seen
        self._stale_lease: int | None = None     # the lease we held when we last stepped down
        self._caller: asyncio.AbstractEventLoop | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task | None = None
        self.etcd: Etcd | None = None

    # --- the caller's side (the scheduler's event loop) ---------------------------------------
    def start(self) -> None:
        self._caller = asyncio.get_running_loop()
        started = threading.Event()
        self._thread = threading.Thread(target=self._thread_main, args=(started,),
                                        name="leader-election", daemon=True)
        self._thread.start()
        started.wait()

    async def resign(self) -> None:
        """Hand over at once (on a clean shutdown): revoking the lease deletes the key."""
        await self._stop(revoke=True)

    async def abandon(self) -> None:
        """Stop campaigning and renewing without revoking, as a crash would (for tests)."""
        await self._stop(revoke=False)

    async def _stop(self, revoke: bool) -> None:
        if self._loop is None:
            return
        done = asyncio.run_coroutine_threadsafe(self._shutdown(revoke), self._loop)
        await asyncio.wrap_future(done)
        self._loop.call_soon_threadsafe(self._loop.stop)
        await asyncio.to_thread(self._thread.join)
        self._loop = None
        self._set(False)

    def _set(self, leading: bool, revision: int = 0) -> None:
        self.revision = revision
        if leading != self.leading:
            self.leading = leading
            if leading:
                self.leader = self.identity
            log.info("%s %s leadership", self.identity, "took" if leading else "lost")
            if self._caller is not None and not self._caller.is_closed():
                self._caller.call_soon_threadsafe(self.on_change, leading)

    # --- the election thread --------------------------------------------------------------------
    def _thread_main(self, started: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self.etcd = Etcd(self.endpoints, identity=self.tls)
        self._task = self._loop.create_task(self._run())
        started.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self.etcd.close())
            self._loop.close()

    async def _shutdown(self, revoke: bool) -> None:
        await cancel_and_wait(self._task)   # (a lost cancellation would keep the election going)
        self._set(False)
        if revoke and self.lease_id is not None:
            try:
                await self.etcd.revoke_lease(self.lease_id)
            except Exception as e:
                log.warning("revoking the leader lease failed (it expires in %d s): %s", self.ttl, e)
        self.lease_id = None

    async def _run(self) -> None:
        await self.etcd.connect()
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
        if current is not None and current.decode() == self.identity and self._stale_lease is not None:
            # our own key from before we stepped down (etcd was slow, not gone): revoke its lease
            # to campaign now instead of waiting out the TTL
            await self.etcd.revoke_lease(self._stale_lease)
            self._stale_lease = None
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
        """Renew the lease every third of its TTL (quickly again after a failure); step down
        when the lease is about to expire without a renewal, or when the key is no longer ours.
        (Not sooner: a busy process renews late, and stepping down costs a re-election.)"""
        margin = self.margin
        ok = True
        while True:
            await asyncio.sleep(self.ttl / 3 if ok else min(self.poll, self.ttl / 6))
            sent = time.monotonic()
            left = self._last_renewal + self.ttl - margin - sent
            try:
                remaining = await asyncio.wait_for(self.etcd.refresh_lease(self.lease_id), max(left, 0.01))
                owner = await asyncio.wait_for(self.etcd.get(keys.LEADER), max(left, 0.01))
            except Exception as e:   # a timeout or etcd unreachable
                ok = False
                if time.monotonic() - self._last_renewal >= self.ttl - margin:
                    log.warning("leader lease not renewed for %.1f s (%s): stepping down",
                                time.monotonic() - self._last_renewal, e)
                    self._set(False)
                    self._stale_lease, self.lease_id = self.lease_id, None
                    return
                continue
            if remaining <= 0 or owner is None or owner.decode() != self.identity:
                self._set(False)
                self.lease_id = None
                return
            ok = True
            self._last_renewal = sent
