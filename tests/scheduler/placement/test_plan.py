"""The plan overlay: GPU device choice, the view of rows after placing, and per-host measures."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.placement import EngineConfig, HostTable, Plan, Running
from scheduler.placement.measures import Measures
from scheduler.placement.overlay import pick_gpus
from scheduler.placement.table import amounts
from tests.scheduler.placement.builders import host, res, table


@pytest.mark.parametrize("free, gpu, devices", [
    ([1000, 1000], 0, ()),
    ([1000, 300, 600], 250, (1,)),       # the fullest device that holds it
    ([1000, 300, 600], 500, (2,)),
    ([1000, 300, 600], 700, (0,)),
    ([300, 600], 700, ()),
    ([1000, 500, 1000, 1000], 2000, (0, 2)),
    ([1000, 500, 1000], 3000, ()),
], ids=["no gpu", "share best fit", "share best fit 2", "share needs a whole one",
        "share fits nowhere", "whole gpus lowest first", "not enough whole"])
def test_pick_gpus(free, gpu, devices):
    assert pick_gpus(np.array(free), gpu, 1000) == devices


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.sampled_from([0, 200, 500, 700, 1000]), min_size=4, max_size=4),
                min_size=1, max_size=6),
       st.sampled_from([100, 250, 500, 800, 1000, 2000, 3000]))
def test_gpu_free_after_follows_pick_gpus(rows, gpu):
    """The scorers' vectorised "after" must be what reserve() will do, row by row."""
    plan = Plan(table(*(host(f"h{i}", gpu=4000) for i in range(len(rows)))))
    plan.gpu_free[:] = np.array(rows)
    after = plan.view(amounts(res(gpu=gpu))).gpu_free_after
    for i, row in enumerate(rows):
        expected = np.array(row)
        devices = pick_gpus(expected, gpu, 1000)
        expected[list(devices)] -= min(gpu, 1000) if devices else 0
        assert after[i].tolist() == expected.tolist()


def test_measures_are_kept_until_the_host_changes():
    kept = Measures(3)
    index = np.arange(3)
    assert kept.stale("m", index).tolist() == [0, 1, 2]
    kept.remember("m", index, np.array([0, 1, 2]), np.array([[1.0], [2.0], [3.0]]))
    assert kept.stale("m", index) is None
    kept.changed(1)
    assert kept.stale("m", index).tolist() == [1]
    rows = np.array([2, 1])
    assert kept.stale("m", rows).tolist() == [1]
    assert kept.remember("m", rows, np.array([1]), np.array([[9.0]])).tolist() == [[3.0], [9.0]]
    assert kept.stale("m", index) is None
    assert kept.known("m", rows).tolist() == [[3.0], [9.0]]
    kept.clear()
    assert kept.stale("m", index).tolist() == [0, 1, 2]
    assert Measures(3, keep=False).stale("m", index).tolist() == [0, 1, 2]


def test_a_devices_only_measure_outlives_a_change_that_keeps_the_devices():
    kept = Measures(2)
    index = np.arange(2)
    kept.remember("m", index, index, np.array([1.0, 2.0]))
    kept.remember("d", index, index, np.array([3, 4]), devices_only=True)
    kept.changed(0, devices=False)
    assert kept.stale("m", index).tolist() == [0]
    assert kept.stale("d", index) is None
    kept.changed(1)
    assert kept.stale("m", index).tolist() == [0, 1]
    assert kept.stale("d", index).tolist() == [1]
    kept.clear()
    kept.remember("d", index, index, np.array([3, 4]))   # after clear(), a plain measure
    kept.changed(0, devices=False)
    assert kept.stale("d", index).tolist() == [0]


def test_a_reservation_or_a_release_makes_the_hosts_measures_stale():
    victim = Running("v", "b", 10, res(cpu=1))
    plan = Plan(table(host("a"), host("b", used=res(cpu=1)), host("c")), EngineConfig(), [victim])
    kept, index = plan.overlay.measures, np.arange(3)
    kept.remember("m", index, index, np.array([1.0, 2.0, 3.0]))
    plan.reserve(0, amounts(res(cpu=1)))
    assert kept.stale("m", index).tolist() == [0]
    kept.remember("m", index, np.array([0]), np.array([5.0]))
    plan.release(1, [victim])
    assert kept.stale("m", index).tolist() == [1] and plan.released_at == len(plan.log) == 2


def test_the_table_and_the_config_count_gpus_alike():
    hosts = [host("g", gpu=2000)]
    assert table(*hosts).device_milli == 1000
    pooled = HostTable.from_hosts(hosts, gpu_model="pooled")
    assert pooled.gpu_capacity.tolist() == [[2000]]
    assert pooled.with_allocation(pooled.allocated, pooled.gpu_free).device_milli == pooled.device_milli
    with pytest.raises(ValueError, match="gpu_model=config.gpu_model"):
        Plan(pooled, EngineConfig())
    with pytest.raises(ValueError, match="gpu_model=config.gpu_model"):
        Plan(table(*hosts), EngineConfig(gpu_model="pooled"))
    with pytest.raises(ValueError, match="unknown GPU model"):
        EngineConfig(gpu_model="mig")
    with pytest.raises(ValueError, match="unknown GPU model"):
        HostTable.from_hosts(hosts, gpu_model="mig")
