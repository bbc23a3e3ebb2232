"""The cpu-only shapes' weights of the fragmentation measure (scarcity.py), against a count host by
host, on generated clusters; and the measure with them (fragmentation.from_parts)."""
from __future__ import annotations

import numpy as np
import pytest

from packyard.records import ResourceAmounts
from scheduler.placement import EngineConfig, Host, HostTable, Plan, fragmentation, place, scarcity
from scheduler.placement.mix import WorkloadMix
from scheduler.placement.table import CPU, MEMORY
from tests.scheduler.placement.builders import GIB, ask


def random_cluster(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    free = np.zeros((n, 4), dtype=np.int64)
    free[:, CPU] = rng.integers(-2000, 64000, size=n)            # some overfull
    free[:, MEMORY] = rng.integers(-GIB, 256 * GIB, size=n)
    gpu_left = rng.choice([0, 0, 500, 1000, 4000], size=n)
    return free, gpu_left


def random_mix(rng: np.random.Generator) -> WorkloadMix:
    return WorkloadMix([(int(rng.choice([0, 500, 4000, 32000])), int(rng.choice([0, 1, 16, 128])) * GIB,
                         int(rng.choice([0, 0, 500, 1000, 8000])), float(rng.random() + 0.1))
                        for _ in range(int(rng.integers(1, 12)))])


@pytest.mark.parametrize("seed", range(20))
def test_a_cpu_only_shape_weighs_the_share_of_its_room_on_hosts_without_free_gpus(seed):
    rng = np.random.default_rng(seed)
    free, gpu_left = random_cluster(rng, int(rng.integers(1, 40)))
    mix = random_mix(rng)
    weights = scarcity.misfit(free, gpu_left, mix)
    for k in range(len(mix.weight)):
        if mix.gpu[k] > 0:
            assert weights[k] == 1.0
            continue
        room = [min(max(c, 0) // mix.cpu[k] if mix.cpu[k] else 10**12,
                    max(m, 0) // mix.memory[k] if mix.memory[k] else 10**12)
                for c, m in zip(free[:, CPU].tolist(), free[:, MEMORY].tolist(), strict=True)]
        elsewhere = sum(r for r, g in zip(room, gpu_left.tolist(), strict=True) if g <= 0)
        share = elsewhere / sum(room) if sum(room) else 1.0
        assert weights[k] == np.floor(share * scarcity.STEPS) / scarcity.STEPS, (k, share)


def test_the_extremes():
    mix = WorkloadMix([(1000, GIB, 0, 1.0), (4000, 8 * GIB, 1000, 1.0)])
    free = np.array([[8000, 16 * GIB, 0, 0]] * 4, dtype=np.int64)
    assert scarcity.misfit(free, np.zeros(4), mix).tolist() == [1.0, 1.0]          # no free GPU anywhere
    assert scarcity.misfit(free, np.full(4, 1000), mix).tolist() == [0.0, 1.0]     # room only beside GPUs
    assert scarcity.misfit(free * 0, np.full(4, 1000), mix).tolist() == [1.0, 1.0]  # no room at all
    pooled = WorkloadMix([(1000, GIB, 0, 1.0), (4000, 8 * GIB, 1000, 1.0)], device_milli=10**9)
    assert scarcity.misfit(free, np.full(4, 1000), pooled).tolist() == [1.0, 1.0]   # not counted there


@pytest.mark.parametrize("seed", range(10))
def test_the_measure_counts_the_gpus_a_shape_misses_for_its_cpu_with_its_weight(seed):
    """fragmented = sum over shapes of weight x (free milli on devices too small for it if it fits;
    all free milli if its GPUs do not fit; those plus misfit x the rest if only cpu or memory do not)."""
    rng = np.random.default_rng(seed)
    mix = random_mix(rng)
    mix = mix.with_misfit(rng.random(len(mix.weight)))
    n = 30
    devices = rng.choice([0, 200, 500, 1000], size=(n, 4))
    free, _ = random_cluster(rng, n)
    got = fragmentation.measures(free[:, CPU], free[:, MEMORY], devices, mix)[:, fragmentation.FRAGMENTED]
    for h in range(n):
        total = int(devices[h].sum())
        expected = 0.0
        for k in range(len(mix.weight)):
            g = int(mix.gpu[k])
            gpu_fits = (devices[h].max() >= g) if g < 1000 else (int((devices[h] == 1000).sum()) * 1000 >= g)
            below = int(devices[h][devices[h] < min(g, 1000)].sum())
            cpu_fits = free[h, CPU] >= mix.cpu[k] and free[h, MEMORY] >= mix.memory[k]
            lost = below if gpu_fits and cpu_fits else (below + mix.misfit[k] * (total - below) if gpu_fits else total)
            expected += lost * mix.frag_weight[k]
        assert got[h] == pytest.approx(expected, rel=1e-12, abs=1e-9), h


def test_the_plan_weighs_cpu_only_work_by_where_its_room_is():
    """A learned mix gets the weights from the hosts as they stand: with most cpu on hosts without
    GPUs, close to FGD's 1; with most of it on GPU hosts, close to 0; and they follow the plan."""
    def cluster(gpu_hosts: int, plain: int) -> HostTable:
        return HostTable.from_hosts(
            [Host(f"g{i}", ResourceAmounts(64000, 256 * GIB, 0, 8000), attributes={"driver.container": "ok"})
             for i in range(gpu_hosts)] +
            [Host(f"c{i}", ResourceAmounts(64000, 256 * GIB, 0, 0), attributes={"driver.container": "ok"})
             for i in range(plain)])
    asks = [ask(1, 2000, 4096, group=f"c{i}") if i % 3 else ask(1, 8000, 16384, gpu=1000, group=f"g{i}")
            for i in range(60)]
    for gpu_hosts, plain, low, high in ((2, 30, 0.8, 1.0), (30, 2, 0.0, 0.2)):
        table = cluster(gpu_hosts, plain)
        plan = Plan(table, EngineConfig())
        place(table, asks, plan=plan)
        cpu_only = plan.mix.gpu == 0
        assert low <= plan.mix.misfit[cpu_only].min() and plan.mix.misfit[cpu_only].max() <= high
        assert (plan.mix.misfit[~cpu_only] == 1.0).all()
        # the plan's count of what is taken, kept by reserve(), is the hosts'
        assert plan.cpu_taken == plan.allocated[:, CPU].sum()
        assert plan.gpu_taken == plan.overlay.gpu_capacity.sum() - plan.gpu_free.sum()
