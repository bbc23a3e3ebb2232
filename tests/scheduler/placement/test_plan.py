"""The plan overlay: GPU device choice, the view of rows after placing, and per-host measures."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.placement import EngineConfig, Plan
from scheduler.placement.plan import pick_gpus
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
    assert pick_gpus(np.array(free), gpu) == devices


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
        devices = pick_gpus(expected, gpu)
        expected[list(devices)] -= min(gpu, 1000) if devices else 0
        assert after[i].tolist() == expected.tolist()


def test_measures_are_kept_until_the_host_changes():
    plan = Plan(table(host("a"), host("b"), host("c")), EngineConfig())
    index = plan.view(amounts(res(cpu=1))).index
    assert plan.stale("m", index).tolist() == [0, 1, 2]
    plan.remember("m", index, np.array([0, 1, 2]), np.array([[1.0], [2.0], [3.0]]))
    assert plan.stale("m", index) is None
    plan.reserve(1, amounts(res(cpu=1)))
    assert plan.stale("m", index).tolist() == [1]
    rows = np.array([2, 1])
    assert plan.stale("m", rows).tolist() == [1]
    assert plan.remember("m", rows, np.array([1]), np.array([[9.0]])).tolist() == [[3.0], [9.0]]
    assert plan.stale("m", index) is None
