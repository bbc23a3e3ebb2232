"""Whether a driver can run anything here, as its fingerprint says it: `driver.<name>` is "ok" or
"unavailable: <why>". A missing dependency is a node attribute the scheduler filters on, never an
exception that would stop the agent."""
from __future__ import annotations

import os
from collections.abc import Awaitable, Callable


def missing_root() -> str:
    return "" if os.geteuid() == 0 else "the agent must run as root"


async def fingerprint(name: str, check: Callable[[dict[str, str]], Awaitable[str]]) -> dict[str, str]:
    """The driver's attributes: `check(attrs)` adds what it learns and returns what is missing
    ("" if nothing); whatever it raises is what is missing."""
    attrs = {f"driver.{name}": "ok"}
    try:
        problem = await check(attrs)
    except Exception as e:
        problem = str(e) or type(e).__name__
    if problem:
        attrs[f"driver.{name}"] = f"unavailable: {problem}"
    return attrs
