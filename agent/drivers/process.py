"""An instance's main process (a container's init, a VM's QEMU) as the drivers follow it: who it is
across pid reuse, and whether its end comes in time."""
from __future__ import annotations

import asyncio


def start_time(pid: int) -> int:
    """Process start time in clock ticks since boot (field 22 of /proc/<pid>/stat): with the pid,
    it identifies a process across pid reuse."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return int(stat[stat.rindex(")") + 2:].split()[19])


async def ended_within(exited: asyncio.Future, seconds: float) -> bool:
    """Whether `exited` (the instance's end; never cancelled here) is done within `seconds`."""
    try:
        await asyncio.wait_for(asyncio.shield(exited), max(seconds, 0))
    except TimeoutError:
        return False
    return True
