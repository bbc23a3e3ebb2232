"""agent/drivers/process.py: a process known across pid reuse; an end awaited within a bound."""
from __future__ import annotations

import asyncio
import os
import subprocess

from agent.drivers.process import ended_within, start_time


def test_start_time_tells_processes_apart():
    mine = start_time(os.getpid())
    assert mine == start_time(os.getpid()) and mine > 0
    child = subprocess.Popen(["sleep", "5"])
    try:
        assert start_time(child.pid) >= mine
    finally:
        child.kill()
        child.wait()


async def test_ended_within():
    exited = asyncio.get_running_loop().create_future()
    assert not await ended_within(exited, 0.01)
    assert not await ended_within(exited, -1)               # a negative grace: no wait at all
    assert not exited.cancelled()                           # the timeout left the end to come
    asyncio.get_running_loop().call_later(0.01, exited.set_result, "ended")
    assert await ended_within(exited, 5)
