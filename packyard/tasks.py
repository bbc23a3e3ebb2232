"""Ending an asyncio task for sure.

On Python 3.11 `asyncio.wait_for` loses a cancellation that arrives as the call it waits on
completes: it returns the call's result, and the task carries on as if never cancelled (CPython
gh-86296, fixed in 3.12). A loop that ends only by cancellation then never ends, and whoever
awaits it waits forever: a scheduler's leader election did so on resign once in CI (2026-12-07,
test_leader's 300 s timeout).
"""
from __future__ import annotations

import asyncio


async def cancel_and_wait(task: asyncio.Task, poll: float = 0.5) -> None:
    """Cancel `task` until it has ended (again every `poll` seconds, should a cancellation be
    lost), then return; its result or exception is retrieved and dropped."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=poll)
    if not task.cancelled():
        task.exception()
