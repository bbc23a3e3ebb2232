"""Drivers found by fingerprint, and found again: every `interval` the agent re-runs each driver's
check, so a libvirtd started (or stopped) after the agent changes the node's `driver.<kind>` in etcd
and with it where the scheduler places VMs. A driver whose check fails stays loaded: its next check
may pass (the vm driver reconnects to libvirt and probes a guest then)."""
from __future__ import annotations

import asyncio
import logging

from agent.drivers.base import Driver
from agent.registration import Registration

log = logging.getLogger(__name__)

AUTO = ("container", "vm")
KNOWN = (*AUTO, "fake", "fake:container", "fake:vm")    # fake: instant instances, for tests


def driver_names(text: str) -> list[str]:
    """`--drivers`: "auto" (every driver this agent has, each kept if its fingerprint passes) or a
    comma list; ValueError naming what is wrong (a typo would leave a node running nothing)."""
    names = [d.strip() for d in text.split(",") if d.strip()]
    if names == ["auto"]:
        return list(AUTO)
    if not names:
        raise ValueError(f"no driver given (auto, or a comma list of {', '.join(KNOWN)})")
    for name in names:
        if name not in KNOWN:
            what = "auto stands alone" if name == "auto" else f"unknown driver '{name[:40]}'"
            raise ValueError(f"{what} (auto, or a comma list of {', '.join(KNOWN)})")
    return list(dict.fromkeys(names))


async def fingerprints(drivers: dict[str, Driver]) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for driver in drivers.values():
        attrs.update(await driver.fingerprint())
    return attrs


async def recheck(drivers: dict[str, Driver], registration: Registration, interval: float) -> None:
    """Publish the drivers' attributes whenever a re-check changes them."""
    while True:
        await asyncio.sleep(interval)
        try:
            fresh = await fingerprints(drivers)
            current = registration.record.attributes
            if any(current.get(k) != v for k, v in fresh.items()):
                for k, v in fresh.items():
                    if k.startswith("driver.") and current.get(k) != v:
                        log.info("%s: %s", k, v)
                await registration.update_attributes({**current, **fresh})
        except Exception as e:   # etcd away: the next round publishes it
            log.warning("re-checking drivers: %s", e)
