"""The workload mix and how a Plan learns it from the asks it sees."""
from __future__ import annotations

import numpy as np
import pytest

from packyard.records import ResourceAmounts
from scheduler.placement import EngineConfig, Host, HostTable, Plan, place
from scheduler.placement import plan as plan_module
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


def test_a_gpu_brings_its_hosts_cpu_and_memory_until_the_mix_has_gpu_work():
    """Plan.per_gpu: the GPU hosts' median cpu and memory per device, weighted by their GPUs; the
    learned mix measures stranding with it until GPU work of its own tells."""
    t = table(host("g2", cpu=96000, mem_gib=384, gpu=8000), host("g2b", cpu=96000, mem_gib=384, gpu=8000),
              host("t4", cpu=104000, mem_gib=512, gpu=2000), host("cpu", cpu=32000, mem_gib=128))
    plan = Plan(t, EngineConfig())
    assert plan.per_gpu == (12000, 48 * GIB)
    place(t, [ask(1, 4000)], plan=plan)
    assert plan.mix.gpu.tolist() == [0] and (plan.mix.cpu_per_gpu, plan.mix.memory_per_gpu) == plan.per_gpu
    place(t, [ask(1, 20000, gpu=1000)], plan=plan)
    assert plan.mix.cpu_per_gpu == 20000   # its own GPU work's, from now on
    assert Plan(table(host("cpu", cpu=32000)), EngineConfig()).per_gpu is None


@pytest.mark.parametrize("seed", range(6))
def test_work_seen_before_any_gpu_work_leaves_gpu_hosts_the_cpu_their_gpus_need(seed, monkeypatch):
    """Generated streams as the trace's variant lists order them: all the work without GPUs first
    (more than the CPU-only hosts hold), then 1-GPU work asking the GPU hosts' own cpu per GPU.
    Packed by size alone, the first fills the GPU hosts' cpu and the GPU work finds GPUs without
    it (checked below without the prior, so the case can fail)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 9))
    hosts = ([Host(f"g-{i}", ResourceAmounts(96000, 384 * GIB, 0, 8000), attributes={"driver.container": "ok"})
              for i in range(n)]
             + [Host(f"c-{i}", ResourceAmounts(64000, 256 * GIB, 0, 0), attributes={"driver.container": "ok"})
                for i in range(n)])
    t = HostTable.from_hosts(hosts)
    cpu_only = [ask(1, int(rng.choice([4000, 8000, 16000])), 8 * 1024, group=f"c{i}") for i in range(6 * n)]
    gpu = [ask(1, 12000, 32 * 1024, gpu=1000, group=f"g{i}") for i in range(8 * n - int(rng.integers(0, 3)))]
    result = place(t, cpu_only + gpu)
    assert sum(not r.hosts for r in result[len(cpu_only):]) == 0
    monkeypatch.setattr(plan_module, "hosts_per_gpu", lambda *_: None)
    assert sum(not r.hosts for r in place(t, cpu_only + gpu)[len(cpu_only):]) > 0
