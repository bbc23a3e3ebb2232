"""Hosts kept whole for the whole-host shapes seen (wholehost.py): the shapes, the Poisson tail,
the plan's count of hosts with room for each against a recount, and the weights in the mix;
generated clusters and streams."""
from __future__ import annotations

import math

import numpy as np
import pytest

from packyard.records import ResourceAmounts
from scheduler.placement import EngineConfig, Host, HostTable, Plan, kernel, place, wholehost
from scheduler.placement.mix import WorkloadMix
from scheduler.placement.table import CPU, MEMORY
from tests.scheduler.placement.builders import GIB, ask


@pytest.mark.parametrize("seed", range(10))
def test_at_least_is_the_poisson_tail(seed):
    rng = np.random.default_rng(seed)
    for _ in range(40):
        mean = float(rng.choice([0.3, 1.0, 2.0, 7.5, 40.0, 300.0]))
        n = int(rng.integers(0, int(3 * mean) + 5))
        # P(N >= n) = 1 - sum_{k<n} e^-mean mean^k / k!, summed directly for small means
        if mean < 50:
            exact = 1.0 - sum(math.exp(-mean) * mean ** k / math.factorial(k) for k in range(n))
            assert wholehost.at_least(n, mean) == pytest.approx(max(exact, 0.0), abs=1e-9)
        assert 0.0 <= wholehost.at_least(n, mean) <= 1.0
        assert wholehost.at_least(n, mean) >= wholehost.at_least(n + 1, mean)   # fewer hosts, likelier
    assert wholehost.at_least(0, 3.0) == 1.0 and wholehost.at_least(5, 0.0) == 0.0


def test_keep_is_the_tail_in_steps_and_none_without_room():
    assert wholehost.keep(1.0, 0) == 0.0
    assert wholehost.keep(1.0, 1) == math.floor(wholehost.at_least(1, 1.0) * wholehost.STEPS) / wholehost.STEPS
    assert wholehost.keep(1.0, 31) == 0.0   # one seen, 31 hosts left: nothing to keep yet
    assert wholehost.keep(100.0, 3) == 1.0


def random_hosts(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    capacity = np.zeros((n, 4), dtype=np.int64)
    capacity[:, CPU] = rng.choice([16000, 32000, 96000, 128000], size=n)
    capacity[:, MEMORY] = rng.choice([64, 384, 768], size=n) * GIB
    gpus = rng.choice([0, 2, 4, 8], size=n)
    devices = np.where(np.arange(8)[None, :] < gpus[:, None], 1000, 0)
    return capacity, devices


@pytest.mark.parametrize("seed", range(10))
def test_a_whole_host_shape_fits_some_host_and_no_host_twice(seed):
    rng = np.random.default_rng(seed)
    capacity, devices = random_hosts(rng, 20)
    for _ in range(30):
        shape = (int(rng.choice([4000, 32000, 64000, 120000])), int(rng.choice([8, 128, 320, 700])) * GIB,
                 int(rng.choice([0, 500, 1000, 4000, 8000])))
        cpu, memory, gpu = shape
        once = twice = False
        for h in range(len(capacity)):
            whole_free = int((devices[h] == 1000).sum())
            slots = (int((devices[h] // gpu).sum()) if gpu < 1000 else whole_free // (gpu // 1000)) if gpu else 0
            for k, seen in ((1, "once"), (2, "twice")):
                if capacity[h, CPU] >= k * cpu and capacity[h, MEMORY] >= k * memory and slots >= k:
                    once, twice = (True, twice) if seen == "once" else (once, True)
        assert wholehost.whole(shape, capacity, devices, 1000) == (gpu > 0 and once and not twice), shape


def cluster(rng: np.random.Generator, n: int) -> HostTable:
    hosts = []
    for i in range(n):
        kind = int(rng.integers(0, 4))
        cpu, mem, gpu = [(128000, 768, 8000), (96000, 384, 8000), (32000, 128, 2000), (64000, 256, 0)][kind]
        hosts.append(Host(f"h{i}", ResourceAmounts(cpu, mem * GIB, 0, gpu), attributes={"driver.container": "ok"}))
    return HostTable.from_hosts(hosts)


def stream(rng: np.random.Generator, n: int, big: float):
    asks = []
    for i in range(n):
        r = rng.random()
        if r < big:   # 8-GPU pods, one of 120 cores (fits only the 128-core hosts)
            cpu, mem, gpu = (120000, 600, 8000) if rng.random() < 0.5 else (64000, 256, 8000)
        elif r < 0.6:
            cpu, mem, gpu = int(rng.integers(2000, 16000)), int(rng.integers(4, 64)), int(rng.choice([500, 1000]))
        else:
            cpu, mem, gpu = int(rng.integers(500, 8000)), int(rng.integers(1, 32)), 0
        asks.append(ask(1, cpu, mem * 1024, gpu=gpu, group=f"g{i}"))
    return asks


@pytest.mark.parametrize("seed", range(6))
def test_the_plan_counts_the_hosts_left_for_each_whole_host_shape(seed):
    """The plan's count, kept as it reserves, is a recount of the hosts as they stand, and the mix
    in use weighs each such shape with wholehost.keep of it while the GPUs asked fit those free."""
    rng = np.random.default_rng(seed)
    table = cluster(rng, 40)
    plan = Plan(table, EngineConfig())
    for i, a in enumerate(stream(rng, 300, 0.05)):
        free, gpu_free, taken = plan.free.copy(), plan.gpu_free.copy(), plan.gpu_taken
        place(table, [a], plan=plan)
        for shape, (room, hosts) in plan.kept.items():
            again = wholehost.fits(shape, plan.free[:, CPU], plan.free[:, MEMORY], plan.gpu_free, 1000)
            assert room.tolist() == again.tolist() and hosts == int(again.sum()), (i, shape)
        assert plan.gpu_asked == sum(s[2] * c for s, c in plan.learner.counts.items())
        # the weights were measured as the ask came, before its reservation
        mix = plan.mix
        fits_ahead = plan.gpu_asked <= plan.gpu_total - taken
        for shape in plan.kept:
            hosts = int(wholehost.fits(shape, free[:, CPU], free[:, MEMORY], gpu_free, 1000).sum())
            expected = wholehost.keep(plan.learner.counts[shape], hosts) if fits_ahead else 0.0
            where = [k for k, c in enumerate(mix.classes) if tuple(c[:3]) == shape]
            if expected > 0:
                assert mix.keep[where[0]] == expected and mix.frag_weight[where[0]] >= expected, (i, shape)
            else:
                assert not where or mix.keep[where[0]] == 0.0
    assert plan.kept   # the stream had whole-host shapes


@pytest.mark.skipif(not kernel.COMPILED, reason="numba is not installed")
@pytest.mark.parametrize("seed", range(4))
def test_the_same_decisions_compiled_and_numpy_with_kept_hosts(seed):
    rng = np.random.default_rng(seed)
    table = cluster(rng, 40)
    asks = stream(rng, 200, 0.1)
    fused, reference = Plan(table, EngineConfig()), Plan(table, EngineConfig())
    reference.fused = None
    used = False
    for a in asks:   # one at a time, to see the weights in use on the way
        x, y = place(table, [a], plan=fused)[0], place(table, [a], plan=reference)[0]
        assert (x.hosts, x.gpus) == (y.hosts, y.gpus)
        assert np.array_equal(fused.mix.frag_weight, reference.mix.frag_weight)
        used |= any(fused.keep)
    assert used


def test_with_kept_adds_the_shapes_outside_the_mix_at_no_arrival_weight():
    mix = WorkloadMix([(1000, GIB, 0, 3.0), (8000, 32 * GIB, 1000, 1.0)])
    kept = mix.with_kept([(120000, 600 * GIB, 8000), (8000, 32 * GIB, 1000)], np.array([0.5, 0.25]), np.ones(2))
    assert len(kept.weight) == 3 and kept.weight[2] == 0.0
    assert kept.weight[:2].tolist() == mix.weight.tolist()   # the arrival weights as they were
    assert kept.frag_weight.tolist() == [mix.weight[0], max(mix.weight[1], 0.25), 0.5]
    assert (kept.mean_cpu, kept.cpu_per_gpu) == (mix.mean_cpu, mix.cpu_per_gpu)
    assert kept.with_misfit(np.ones(3)).keep.tolist() == kept.keep.tolist()
