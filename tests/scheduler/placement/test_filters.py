"""Each filter on its own: which hosts it passes, and the reason it gives for the others."""
from __future__ import annotations

import numpy as np
import pytest

from scheduler.placement import EngineConfig, Plan, filters
from scheduler.placement.table import CPU, DISK, MEMORY, amounts
from tests.scheduler.placement.builders import con, host, res, table

ZONED = table(
    host("a1", labels={"zone": "a", "disk": "ssd"}, kernel="6.1"),
    host("b1", labels={"zone": "b"}, kernel="5.10"),
    host("c1", labels={"zone": "c", "disk": "hdd"}),
    host("nolabel"),
)


def passed(mask: np.ndarray, t=ZONED) -> list[str]:
    return [name for name, ok in zip(t.names, mask, strict=True) if ok]


@pytest.mark.parametrize("constraint, hosts, reason", [
    (con("label.zone", "=", "a"), ["a1"], "constraint label.zone = a"),
    (con("label.zone", "=", "z"), [], "constraint label.zone = z"),
    (con("label.zone", "!=", "a"), ["b1", "c1", "nolabel"], "constraint label.zone != a"),
    (con("label.zone", "in", ["a", "c", "zz"]), ["a1", "c1"], "constraint label.zone in (a, c, zz)"),
    (con("label.zone", "not_in", ["a", "c"]), ["b1", "nolabel"], "constraint label.zone not_in (a, c)"),
    (con("label.disk", "exists"), ["a1", "c1"], "constraint label.disk exists"),
    (con("label.gpu", "exists"), [], "constraint label.gpu exists"),
    (con("label.gpu", "!=", "x"), ["a1", "b1", "c1", "nolabel"], "constraint label.gpu != x"),
    (con("node.name", "=", "b1"), ["b1"], "constraint node.name = b1"),
    (con("node.name", "not_in", ["b1", "c1"]), ["a1", "nolabel"], "constraint node.name not_in (b1, c1)"),
    (con("kernel", "=", "6.1"), ["a1"], "constraint kernel = 6.1"),
    (con("kernel", "exists"), ["a1", "b1"], "constraint kernel exists"),
    (con("driver.vm", "=", "ok"), ["a1", "b1", "c1", "nolabel"], "constraint driver.vm = ok"),
    (con("zone", "=", "a"), [], "constraint zone = a"),   # an attribute, not a label
], ids=lambda v: v if isinstance(v, str) else None)
def test_constraint(constraint, hosts, reason):
    mask, why = filters.constraint(ZONED, constraint)
    assert passed(mask) == hosts
    assert why == reason


@pytest.mark.parametrize("ready, passes", [
    ([True, True], ["x", "y"]),
    ([True, False], ["x"]),
    ([False, False], []),
], ids=["all ready", "one down", "none ready"])
def test_node_ready(ready, passes):
    t = table(host("x", ready=ready[0]), host("y", ready=ready[1]))
    mask, why = filters.node_ready(t)
    assert passed(mask, t) == passes
    assert why == "node not ready"


@pytest.mark.parametrize("kind, passes", [
    ("container", ["both", "containers"]),
    ("vm", ["both"]),
    ("wasm", []),
], ids=["container", "vm needs driver.vm == ok", "unknown kind"])
def test_driver_available(kind, passes):
    t = table(host("both"), host("containers", driver_vm="unavailable: no /dev/kvm"),
              host("nodrivers", drivers=""))
    mask, why = filters.driver_available(t, kind)
    assert passed(mask, t) == passes
    # the agents' reasons, so a pending VM says why no host runs VMs
    assert why == f"driver {kind} unavailable" + (" (no /dev/kvm)" if kind == "vm" else "")


def test_eligible_hosts_pass_every_static_filter_room_aside():
    t = table(host("ok", labels={"zone": "a"}), host("full", 100, used=res(cpu=100), labels={"zone": "a"}),
              host("novm", drivers="container", labels={"zone": "a"}), host("down", ready=False, labels={"zone": "a"}),
              host("elsewhere", labels={"zone": "b"}))
    zone_a = [con("label.zone", "=", "a")]
    assert filters.eligible(t, "container", zone_a) == ["ok", "full", "novm"]
    assert filters.eligible(t, "vm", zone_a) == ["ok", "full"]
    assert filters.eligible(t, "vm", []) == ["ok", "full", "elsewhere"]


@pytest.mark.parametrize("resource, need, passes, reason", [
    (CPU, res(cpu=1000), ["empty", "half"], "not enough cpu"),
    (CPU, res(cpu=2000), ["empty", "half"], "not enough cpu"),   # exactly what is left fits
    (CPU, res(cpu=2001), ["empty"], "not enough cpu"),
    (MEMORY, res(mem_gib=8), ["empty", "half"], "not enough memory"),
    (MEMORY, res(mem_gib=9), ["empty"], "not enough memory"),
    (DISK, res(disk_gib=50), ["empty", "half"], "not enough disk"),
    (DISK, res(disk_gib=51), ["empty"], "not enough disk"),
], ids=["cpu fits", "cpu exact", "cpu short", "mem exact", "mem short", "disk exact", "disk short"])
def test_fits(resource, need, passes, reason):
    t = table(host("empty", 4000, 16, 100), host("half", 4000, 16, 100, used=res(2000, 8, 50)),
              host("full", 4000, 16, 100, used=res(4000, 16, 100)))
    view = Plan(t).view(amounts(need))
    mask, why = filters.fits(view, resource)
    assert passed(mask, t) == passes
    assert why == reason


def test_fits_after_overcommit_and_reserve():
    t = table(host("h", 4000, 16))
    config = EngineConfig(overcommit={"cpu_milli": 2.0}, host_reserve=res(cpu=500, mem_gib=1))
    view = Plan(t, config).view(amounts(res(cpu=7500, mem_gib=15)))
    assert filters.fits(view, CPU)[0].tolist() == [True]       # 4000 x 2 - 500
    assert filters.fits(view, MEMORY)[0].tolist() == [True]    # 16 - 1
    view = Plan(t, config).view(amounts(res(cpu=7501, mem_gib=15.5)))
    assert filters.fits(view, CPU)[0].tolist() == [False]
    assert filters.fits(view, MEMORY)[0].tolist() == [False]


def gpu_table():
    return table(
        host("none"),
        host("two-free", gpu=2000),
        host("two-half-used", gpu=2000, used=res(gpu=1500)),   # devices: 0 full, 1 half
        host("four-one-free", gpu=4000, used=res(gpu=3000)),
        host("partial", gpu=1500),                             # devices of 1000 and 500
    )


@pytest.mark.parametrize("gpu, passes", [
    (300, ["two-free", "two-half-used", "four-one-free", "partial"]),
    (500, ["two-free", "two-half-used", "four-one-free", "partial"]),
    (600, ["two-free", "four-one-free", "partial"]),
    (1000, ["two-free", "four-one-free", "partial"]),
    (2000, ["two-free"]),
    (3000, []),
], ids=["share 0.3", "share 0.5", "share 0.6 needs a device with 0.6 left", "one whole",
        "two whole", "three whole"])
def test_gpu_fits(gpu, passes):
    t = gpu_table()
    mask, why = filters.gpu_fits(Plan(t).view(amounts(res(gpu=gpu))))
    assert passed(mask, t) == passes
    assert why == "not enough gpu"


def test_distinct_hosts():
    mask, why = filters.distinct_hosts(4, np.array([1, 3]))
    assert mask.tolist() == [True, False, True, False]
    assert why.startswith("distinct hosts")
