"""Giving freed heap back to the kernel (issue 5: the agent's resident memory while idle).

glibc returns only the top of the heap to the kernel by itself; free chunks below a live one stay
resident. Start-up (imports, the VM driver's probe) and each round of work (starting instances, a
usage sample) leave such holes; `malloc_trim(0)` releases every whole free page in them. Measured
with bench/agent_overhead.py; it costs well under a millisecond on the agent's heap.
"""
from __future__ import annotations

import ctypes
import gc

try:
    _libc: ctypes.CDLL | None = ctypes.CDLL("libc.so.6")
    _libc.malloc_trim.argtypes = [ctypes.c_size_t]
except (OSError, AttributeError):    # not glibc: nothing to do
    _libc = None


def release_free_heap(collect: bool = False) -> None:
    """Return free heap pages to the kernel; with collect, first free unreachable cycles (once,
    after start-up: imports leave some)."""
    if collect:
        gc.collect()
    if _libc is not None:
        _libc.malloc_trim(0)
