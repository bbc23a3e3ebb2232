"""Eviction for disk (issue 15): the pure decision, and the usage loop acting on it through the
InstanceManager (a FakeDriver whose stats say how much disk each instance uses)."""
from __future__ import annotations

import asyncio
import dataclasses

import pytest

from agent.drivers.base import Stats
from agent.drivers.fake import FakeDriver
from agent.eviction import over_disk
from agent.usage import UsageCollector
from packyard.policies import RestartPolicy
from tests.agent.test_manager import spec, state_is, world  # noqa: F401  (a fixture)
from tests.conftest import eventually

MI = 1 << 20


@pytest.mark.parametrize("limit,used,evicted", [
    (0, 10**12, False),          # no resources.disk: unlimited
    (8 * MI, None, False),       # not measured (a VM)
    (8 * MI, 8 * MI, False),     # at the limit is within it
    (8 * MI, 8 * MI + 1, True),
    (100 * MI, 120 * MI, True),
])
def test_over_disk_decides(limit, used, evicted):
    assert bool(over_disk(limit, used)) == evicted


def test_the_reason_is_one_line_and_says_both_amounts():
    assert over_disk(100 * MI, 120 * MI) == \
        "evicted: writable layer and logs use 120Mi, over its resources.disk of 100Mi"


class DiskDriver(FakeDriver):
    """FakeDriver whose instances use `disk[id]` bytes (unset: not measured)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.disk: dict[str, int] = {}

    async def stats(self, handle):
        return Stats(disk_bytes=self.disk.get(handle.id))


def limited(instance_id: str, disk: int, **kw):
    return dataclasses.replace(spec(instance_id), disk_bytes=disk, **kw)


@pytest.fixture
def disky(world):  # noqa: F811
    etcd, _, store, _ = world
    driver = DiskDriver("container", "/nonexistent")
    driver.write_logs = False
    from agent.manager import InstanceManager
    from agent.reporter import Reporter
    m = InstanceManager("n1", "/nonexistent", {"container": driver}, Reporter(etcd, "n1"), store=store)
    yield etcd, driver, m
    for t in m.instances.values():
        if t.task:
            t.task.cancel()


async def test_over_its_disk_is_killed_and_fails_with_the_reason_the_others_run_on(disky):
    etcd, driver, m = disky
    await m.start([limited("big", 8 * MI), limited("small", 8 * MI), limited("free", 0)])
    for iid in ("big", "small", "free"):
        await state_is(etcd, iid, "running")
    driver.disk.update(big=20 * MI, small=1 * MI, free=10 * 1024 * MI)
    usage = UsageCollector(None, "n1", m)
    record = await usage.sample()
    assert record.instances["big"]["disk_bytes"] == 20 * MI
    assert record.instances["big"]["request_disk_bytes"] == 8 * MI
    failed = await state_is(etcd, "big", "failed")
    assert failed.reason == "evicted: writable layer and logs use 20Mi, over its resources.disk of 8Mi"
    assert etcd.state("small").state == "running" and etcd.state("free").state == "running"
    text = "\n".join(f"{s.name} {s.labels['packyard_instance']} {s.value}"
                     for f in usage.collect() for s in f.samples if s.name == "packyard_instance_disk_bytes")
    assert f"packyard_instance_disk_bytes small {MI}" in text


async def test_an_evicted_instance_goes_through_its_restart_policy(disky):
    etcd, driver, m = disky
    policy = RestartPolicy(attempts=1, interval=60, delay=0.05, mode="fail")
    await m.start([limited("big", 8 * MI, restart=policy)])
    await state_is(etcd, "big", "running")
    driver.disk["big"] = 9 * MI
    await UsageCollector(None, "n1", m).sample()
    # restarted once in place (the event says why), evicted again: then it fails for good
    restarted = await eventually(lambda: (s := etcd.state("big")).state == "running" and s.restarts == 1 and s,
                                 timeout=2, what="restarted once")
    assert "evicted: writable layer" in restarted.events[-1]["message"]
    await UsageCollector(None, "n1", m).sample()
    failed = await state_is(etcd, "big", "failed")
    assert failed.reason.startswith("evicted: writable layer and logs use 9Mi")


async def test_a_verdict_about_an_earlier_run_kills_nothing(disky):
    etcd, driver, m = disky
    await m.start([limited("a", 8 * MI)])
    await state_is(etcd, "a", "running")
    await m.evict("a", m.instances["a"].run + 1, "evicted: stale")
    await m.evict("nobody", 0, "evicted: unknown")
    await asyncio.sleep(0.05)
    assert etcd.state("a").state == "running"
