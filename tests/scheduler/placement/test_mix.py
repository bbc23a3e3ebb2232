"""The workload mix and how a Plan learns it from the asks it sees."""
from __future__ import annotations

import numpy as np
import pytest

from scheduler.placement import EngineConfig, HostTable, Plan, place
from scheduler.placement.mix import MixLearner, WorkloadMix
from tests.scheduler.placement.builders import ask, host, table

GIB = 1 << 30


def test_weights_thresholds_and_per_gpu_medians():
    mix = WorkloadMix([(1000, GIB, 0, 2), (4000, 8 * GIB, 500, 1), (16000, 64 * GIB, 2000, 1)])
    assert mix.weight.tolist() == pytest.approx([0.5, 0.25, 0.25])
    assert mix.thresholds.tolist() == [0, 500, 1000]
    assert mix.share.tolist() == [True, True, False]
    # per GPU: 8 cores with the share, 8 cores with the 2-GPU shape -> median 8 cores, 32 GiB
    assert mix.cpu_per_gpu == pytest.approx(8000)
    assert mix.memory_per_gpu == pytest.approx(32 * GIB)


def test_a_mix_without_gpu_work_has_no_per_gpu_needs():
    mix = WorkloadMix([(1000, GIB, 0, 1)])
    assert (mix.cpu_per_gpu, mix.memory_per_gpu) == (0.0, 0.0)


@pytest.mark.parametrize("classes", [[], [(1, 1, 0, 0)], [(-1, 1, 0, 1)]],
                         ids=["empty", "zero weight", "negative amount"])
def test_invalid_mix(classes):
    with pytest.raises(ValueError):
        WorkloadMix(classes)


def test_learner_offers_a_mix_at_once_then_only_when_it_moved():
    learner = MixLearner(growth=2, tolerance=0.05)
    first = learner.observe((1000, GIB, 0), 1)
    assert first is not None and first.weight.tolist() == [1.0]
    assert learner.observe((1000, GIB, 0), 1) is None          # grew x2, distribution unchanged
    assert learner.observe((1000, GIB, 0), 2) is None
    moved = learner.observe((2000, GIB, 1000), 4)               # now half of what was seen
    assert moved is not None and sorted(moved.weight.tolist()) == pytest.approx([0.5, 0.5])


def test_plan_learns_only_for_mix_scorers():
    t = table(host("g", gpu=2000))
    binpack = Plan(t, EngineConfig(scorers=(("binpack", 1.0),)))
    place(t, [ask(2, gpu=500)], plan=binpack)
    assert binpack.mix is None
    learning = Plan(t, EngineConfig())
    place(t, [ask(2, gpu=500)], plan=learning)
    assert learning.mix is not None and learning.mix.gpu.tolist() == [500]


def test_a_given_mix_is_kept():
    mix = WorkloadMix([(1000, GIB, 1000, 1)])
    plan = Plan(table(host("g", gpu=2000)), EngineConfig(workload_mix=mix))
    place(plan.table, [ask(1, gpu=500)], plan=plan)
    assert plan.mix is mix and np.array_equal(plan.mix.gpu, [1000])


def test_mix_of_reserved_amounts():
    from packyard.records import ResourceAmounts
    mix = WorkloadMix.of_reserved([ResourceAmounts(1000, GIB), ResourceAmounts(1000, GIB),
                                   ResourceAmounts(2000, GIB, gpu_milli=500)])
    assert mix is not None and mix.weight.tolist() == pytest.approx([2 / 3, 1 / 3])
    assert WorkloadMix.of_reserved([]) is None


def test_a_given_mix_is_counted_in_the_plans_gpu_model():
    """Pooled, every GPU shape is a share of the one device: the Plan re-counts a mix made for
    devices (as the controller's WorkloadMix.of makes it) in its config's model."""
    mix = WorkloadMix([(1000, GIB, 500, 1), (8000, 8 * GIB, 2000, 1)])
    assert mix.share.tolist() == [True, False] and mix.for_devices(1000) is mix
    hosts = [host("g", gpu=2000)]
    plan = Plan(HostTable.from_hosts(hosts, gpu_model="pooled"),
                EngineConfig(workload_mix=mix, gpu_model="pooled"))
    assert plan.mix.share.tolist() == [True, True] and plan.mix.device_milli == 10**9
    assert plan.mix.cpu_per_gpu == pytest.approx(mix.cpu_per_gpu / 1000 * 10**9)
    assert mix.share.tolist() == [True, False]          # the given mix is left as it was
    learned = Plan(HostTable.from_hosts(hosts, gpu_model="pooled"), EngineConfig(gpu_model="pooled"))
    place(learned.table, [ask(1, gpu=2000)], plan=learned)
    assert learned.mix.device_milli == 10**9 and learned.mix.share.tolist() == [True]


def test_the_learner_keeps_each_shapes_asks_by_the_hosts_they_may_use():
    """Constrained asks are counted into their shape (which shapes the mix keeps does not change
    with constraints) and the mix says, per shape, the share of its asks restricted to each set."""
    learner = MixLearner(growth=1.0, tolerance=0.0)
    t4 = (("gpu.model", "in", ("T4",)),)
    assert learner.observe((1000, GIB, 1000), 3).constrained is False
    mix = learner.observe((1000, GIB, 1000), 1, t4)
    assert mix is not None and mix.weight.tolist() == [1.0] and mix.constrained
    assert mix.where == [{None: 0.75, t4: 0.25}]
    # a share of constrained asks that moved offers a new mix though the shapes did not
    learner = MixLearner(growth=1.25, tolerance=0.05)
    learner.observe((1000, GIB, 1000), 100)
    assert learner.observe((1000, GIB, 1000), 30, t4).where == [{None: 100 / 130, t4: 30 / 130}]
    # counted again in another device size, or with other weights, it keeps them
    assert mix.for_devices(10**9).where == mix.with_misfit(mix.misfit).where == mix.where
