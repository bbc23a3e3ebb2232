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
KNOWN = (*AUTO, "fake")


def driver_names(text: str) -> list[str]:
    """`--drivers`: "auto" (every driver this agent has, each kept if its fingerprint passes) or a
    comma list."""
    names = [d.strip() for d in text.split(",") if d.strip()]
    if names == ["auto"]:
        return list(AUTO)
    # a typo is the operator's mistake, refused at start (a driver that fails to set up is another
    # matter: a node attribute, never a crash)
    unknown = [n for n in names if n not in KNOWN and not n.startswith("fake:")]
    if unknown or not names:
        raise ValueError(f"unknown driver {', '.join(map(repr, unknown)) or repr(text)}: give auto, or a "
                         "comma list of container, vm, fake (or fake:KIND)")
    return names


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
