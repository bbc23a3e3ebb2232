"""agent/drivers/availability.py: a fingerprint reports what is missing, it never raises."""
from __future__ import annotations

import pytest

from agent.drivers.availability import fingerprint


async def found(attrs):
    attrs["x.version"] = "2"
    return ""


async def missing(attrs):
    attrs["x.version"] = "2"
    return "runc not found (/usr/sbin/runc)"


async def broken(attrs):
    raise RuntimeError("libvirt: no answer")


async def silent(attrs):
    raise TimeoutError


@pytest.mark.parametrize("check,expected", [
    (found, {"driver.x": "ok", "x.version": "2"}),
    (missing, {"driver.x": "unavailable: runc not found (/usr/sbin/runc)", "x.version": "2"}),
    (broken, {"driver.x": "unavailable: libvirt: no answer"}),
    (silent, {"driver.x": "unavailable: TimeoutError"}),
], ids=["ok", "missing", "raises", "raises-without-message"])
async def test_fingerprint(check, expected):
    assert await fingerprint("x", check) == expected
