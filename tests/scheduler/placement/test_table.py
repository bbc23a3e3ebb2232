"""The host table: arrays built from hosts, label codes, GPU devices, immutability."""
from __future__ import annotations

import numpy as np
import pytest

from packyard.records import ResourceAmounts
from scheduler.placement import Host, HostTable
from scheduler.placement.table import MISSING
from tests.scheduler.placement.builders import host, res, table


def test_arrays_follow_host_order():
    t = table(host("x", 1000, 2, 3, used=res(500, 1)), host("y", 2000, ready=False))
    assert t.names == ("x", "y")
    assert t.capacity.dtype == np.int64 and t.capacity.shape == (2, 4)
    assert t.capacity[0].tolist() == [1000, 2 << 30, 3 << 30, 0]
    assert t.allocated[0].tolist() == [500, 1 << 30, 0, 0]
    assert t.ready.tolist() == [True, False]
    assert t.index("y") == 1


def test_arrays_are_read_only():
    t = table(host("x"))
    for a in (t.capacity, t.allocated, t.ready, t.gpu_free, t.column("label.zone").codes):
        with pytest.raises(ValueError):
            a[0] = 1


def test_columns_code_labels_attributes_and_names():
    t = table(host("x", labels={"zone": "a"}, kernel="6.1"), host("y", labels={"zone": "b"}))
    zone = t.column("label.zone")
    assert zone.codes.tolist() == [zone.code("a"), zone.code("b")]
    assert t.column("kernel").codes.tolist() == [0, MISSING]
    assert t.column("node.name").codes.tolist() == [0, 1]
    assert t.column("label.nothing").codes.tolist() == [MISSING, MISSING]
    assert zone.code("c") not in zone.codes.tolist() + [MISSING]


@pytest.mark.parametrize("capacity, used, given, free", [
    (0, 0, None, [0, 0, 0]),
    (2000, 0, None, [1000, 1000, 0]),
    (3000, 1500, None, [0, 500, 1000]),
    (2500, 0, None, [1000, 1000, 500]),
    (3000, 900, (0, 400, 500), [1000, 600, 500]),
], ids=["no gpu", "two free", "aggregate laid on in order", "half a device", "per-device split"])
def test_gpu_devices(capacity, used, given, free):
    wide = Host("wide", ResourceAmounts(gpu_milli=3000))
    h = Host("h", ResourceAmounts(gpu_milli=capacity), ResourceAmounts(gpu_milli=used),
             gpu_allocated=given)
    t = HostTable.from_hosts([wide, h])
    assert t.gpu_free[1].tolist() == free


@pytest.mark.parametrize("hosts, message", [
    ([host("x"), host("x")], "unique"),
    ([Host("x", res(gpu=2000), res(gpu=500), gpu_allocated=(100, 100))], "add up"),
    ([Host("x", res(gpu=1000), res(gpu=500), gpu_allocated=(250, 250))], "the host has 1"),
    ([Host("x", res(gpu=2000), res(gpu=1500), gpu_allocated=(1500, 0))], "does not fit devices"),
], ids=["duplicate names", "per-device split disagrees", "more devices than the host has",
        "more than a device holds"])
def test_invalid_hosts(hosts, message):
    with pytest.raises(ValueError, match=message):
        HostTable.from_hosts(hosts)


def test_with_allocation_keeps_the_hosts():
    t = table(host("x"))
    other = t.with_allocation(t.allocated + 1, t.gpu_free)
    assert other.allocated.tolist() == [[1, 1, 1, 1]] and t.allocated.tolist() == [[0, 0, 0, 0]]
    assert other.columns is t.columns
    with pytest.raises(ValueError, match="shape"):
        t.with_allocation(np.zeros((2, 4), dtype=np.int64), t.gpu_free)
