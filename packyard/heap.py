"""Keeping Python's garbage collector off a big cache (the scheduler's, a simulated fleet's).

The cache holds several objects per instance (record, entry, index sets): about a million
objects at 100,000 instances, none of them in a reference cycle. CPython's collector still
scans all of them in every full collection, and starts one whenever the heap has grown by a
quarter: while a 100,000-instance job was placed it did so nine times, pausing the scheduler
for 0.1 to 0.7 s each (3.4 s in all; the probes of a small job next to it saw the pauses).

So, every second, what is alive is frozen (gc.freeze(): moved out of the collector's sight;
O(1)), and collections only look at what was made since. Frozen objects are still freed by
reference counting; only a cycle frozen while in use and dropped later would stay, so every
`full_every` seconds everything is unfrozen and collected once (one pause of that size, every
ten minutes, instead of nine in twenty seconds).
"""
from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class HeapKeeper:
    def __init__(self, freeze_every: float = 1.0, full_every: float = 600.0,
                 observe: Callable[[int, float], None] | None = None):
        self.observe = observe          # (generation, seconds) of every collection: a metric
        self.freeze_every = freeze_every
        self.full_every = full_every
        self._started = 0.0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        gc.callbacks.append(self._timed)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self, exiting: bool = False) -> None:
        """`exiting`: the process ends next, so what is alive stays frozen: the interpreter's last
        collection at exit would otherwise scan it all for nothing (1.1 s in the scheduler, 2.3 s
        in a simulated fleet at 100,000 instances, README's gc-cycles table)."""
        if self._task is not None:
            self._task.cancel()
        if self._timed in gc.callbacks:
            gc.callbacks.remove(self._timed)
        if exiting:
            gc.freeze()
        else:
            gc.unfreeze()

    async def _run(self) -> None:
        last_full = time.monotonic()
        while True:
            await asyncio.sleep(self.freeze_every)
            if time.monotonic() - last_full >= self.full_every:
                gc.unfreeze()
                gc.collect()
                last_full = time.monotonic()
            gc.freeze()

    def _timed(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        seconds = time.perf_counter() - self._started
        if self.observe is not None:
            self.observe(info["generation"], seconds)
        if seconds > 0.1:
            log.info("garbage collection (generation %d) took %.0f ms", info["generation"], seconds * 1000)
