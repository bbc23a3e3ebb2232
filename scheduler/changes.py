"""The cache's changes as topics for the watch RPCs (`ctl status|nodes|list --watch`): each batch
of etcd events the controller applies is published as the set of topics it touched, and every
open watch whose topic is among them wakes up and sends its view again if it differs.

Topics: NODES (node records, usage, and anything that moves reservations: instances and their
reports), JOBS (the job list) and a job's own name. A watcher only learns *that* something changed;
it reads the cache itself, so a slow client never holds events and a burst costs one redraw.
"""
from __future__ import annotations

import asyncio
from collections.abc import Iterable

from packyard import keys

NODES = "@nodes"      # '@' is not a job-name character: no job can be called like a topic
JOBS = "@jobs"
EVERYTHING = "*"


def topics_of(event_keys: Iterable[str | bytes]) -> set[str]:
    """What the keys of one batch of etcd events touched."""
    out: set[str] = set()
    for raw in event_keys:
        key = raw.decode() if isinstance(raw, bytes) else raw
        if key.startswith((keys.NODES, keys.USAGE)):
            out.add(NODES)
        elif key.startswith(keys.STATE):
            out |= {NODES, JOBS, keys.instance_job(keys.last(key))}
        elif key.startswith(keys.INSTANCES):
            out |= {NODES, JOBS, key[len(keys.INSTANCES):].split("/", 1)[0]}
        elif key.startswith((keys.JOBS, keys.DEPLOYMENTS)):
            out |= {JOBS, keys.last(key)}
        elif key.startswith(keys.VERSIONS):
            out.add(key[len(keys.VERSIONS):].split("/", 1)[0])
    return out


class Subscription:
    def __init__(self, feed: ChangeFeed, topic: str):
        self._feed, self.topic = feed, topic
        self._changed = asyncio.Event()

    def notify(self) -> None:
        self._changed.set()

    async def changed(self) -> None:
        """Return once something of this topic changed since the last return."""
        await self._changed.wait()
        self._changed.clear()

    def close(self) -> None:
        self._feed._subscribers.discard(self)


class ChangeFeed:
    def __init__(self) -> None:
        self._subscribers: set[Subscription] = set()

    def subscribe(self, topic: str) -> Subscription:
        sub = Subscription(self, topic)
        self._subscribers.add(sub)
        return sub

    def publish(self, topics: set[str]) -> None:
        if not topics:
            return
        for sub in list(self._subscribers):
            if EVERYTHING in topics or sub.topic in topics:
                sub.notify()

    def __len__(self) -> int:
        return len(self._subscribers)
