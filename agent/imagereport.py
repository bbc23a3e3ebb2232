"""The registry images this host holds, published with its node record (issue 16: placement's image
locality prefers hosts that already hold a job's image). The image store says when what it holds
changed (a pull, a collection); the latest word wins, one put at a time, so an older list never
lands after a newer one; while etcd is away the put is tried again."""
from __future__ import annotations

import asyncio
import logging

from agent.registration import Registration

log = logging.getLogger(__name__)
RETRY = 2.0


class ImageReport:
    def __init__(self, registration: Registration):
        self.registration = registration
        self._latest: list[dict] | None = None
        self._due = asyncio.Event()

    def changed(self, images: list[dict]) -> None:
        """The image store's on_change (on the event loop)."""
        self._latest = images
        self._due.set()

    async def run(self) -> None:
        while True:
            await self._due.wait()
            self._due.clear()
            images = self._latest
            try:
                await self.registration.update(images=images)
            except Exception as e:      # etcd away: the same list again, unless a newer one came
                log.warning("publishing this node's images failed (%s); retrying", e)
                await asyncio.sleep(RETRY)
                self._due.set()
