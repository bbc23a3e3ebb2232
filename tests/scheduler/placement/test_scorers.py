"""Each scorer on its own: known values from the published formulas, range [0, 1], and the order
it puts hosts in."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.placement import EngineConfig, HostTable, Plan, scorers
from scheduler.placement.fragmentation import _below, gradients, measures
from scheduler.placement.mix import WorkloadMix
from scheduler.placement.table import amounts
from tests.scheduler.placement.builders import host, res, table

# cpu 4 cores, 16 GiB; used fractions before placing: empty, a quarter, three quarters
HOSTS = table(host("empty", 4000, 16), host("quarter", 4000, 16, used=res(1000, 4)),
              host("most", 4000, 16, used=res(3000, 12)))
NEED = res(1000, 4)   # a quarter of a host: afterwards 0.25, 0.5, 1.0 used


def score(name: str, need=NEED, t=HOSTS) -> np.ndarray:
    return scorers.REGISTRY[name](Plan(t).view(amounts(need)))


@pytest.mark.parametrize("name, expected", [
    ("binpack", [0.25, 0.5, 1.0]),
    ("most_allocated", [0.25, 0.5, 1.0]),
    ("least_allocated", [0.75, 0.5, 0.0]),
    ("balanced_allocation", [1.0, 1.0, 1.0]),
    # (20 - 2 x 10^free) / 18
    ("nomad_binpack", [(20 - 2 * 10 ** 0.75) / 18, (20 - 2 * 10 ** 0.5) / 18, 1.0]),
], ids=lambda v: v if isinstance(v, str) else None)
def test_known_values(name, expected):
    assert score(name) == pytest.approx(expected)


@pytest.mark.parametrize("name, best", [
    ("binpack", "most"), ("most_allocated", "most"), ("nomad_binpack", "most"),
    ("least_allocated", "empty"),
], ids=lambda v: v)
def test_preferred_host(name, best):
    assert HOSTS.names[int(np.argmax(score(name)))] == best


@pytest.mark.parametrize("cpu_used, mem_used, expected", [
    (1000, 4, 1.0), (4000, 0, 0.5), (2000, 4, 0.875),
], ids=["even", "cpu full memory empty", "quarter apart"])
def test_balanced_allocation_penalises_skew(cpu_used, mem_used, expected):
    t = table(host("h", 4000, 16, used=res(cpu_used, mem_used)))
    assert score("balanced_allocation", res(), t) == pytest.approx([expected])


@pytest.mark.parametrize("name", sorted(scorers.REGISTRY))
def test_range_even_when_overfull_or_without_capacity(name):
    t = table(host("over", 1000, 1, used=res(3000, 3)), host("zero", 0, 0), host("fine"))
    s = score(name, res(500, 1), t)
    assert np.all((s >= 0) & (s <= 1)), s


# --- GPU-aware scorers (fragmentation.py) -------------------------------------------------------

MIX = WorkloadMix([(4000, 16 << 30, 500, 1.0), (8000, 32 << 30, 1000, 1.0)])


def gpu_plan(*hosts, mix=MIX) -> Plan:
    return Plan(table(*hosts), EngineConfig(workload_mix=mix))


def gpu_score(name: str, plan: Plan, need) -> np.ndarray:
    return scorers.REGISTRY[name](plan.view(amounts(need)))


def test_fragmentation_puts_a_share_on_a_partly_used_gpu():
    plan = gpu_plan(host("fresh", 64000, 256, gpu=2000),
                    host("half", 64000, 256, gpu=2000, used=res(gpu=500)))
    s = gpu_score("fragmentation", plan, res(1000, 1, gpu=500))
    assert s[1] > 0.5 > s[0]        # filling the half-used GPU removes a fragment; splitting a whole one makes one


def test_pooled_fragmentation_counts_whole_gpu_shapes_only():
    """Pooled GPUs (one amount per host): a mix of shares leaves nothing to fragment (0.5 on every
    host, where the same hosts counted in devices score apart); a whole-GPU shape still does."""
    hosts = [host("fresh", 64000, 256, gpu=2000), host("nearly", 64000, 256, gpu=2000, used=res(gpu=1300))]
    shares = WorkloadMix([(4000, 16 << 30, 600, 1.0), (4000, 16 << 30, 300, 1.0)])

    def pooled(mix):
        return Plan(HostTable.from_hosts(hosts, gpu_model="pooled"), EngineConfig(workload_mix=mix, gpu_model="pooled"))

    assert gpu_score("fragmentation", pooled(shares), res(1000, 1, gpu=500)).tolist() == [0.5, 0.5]
    assert len(set(gpu_score("fragmentation", gpu_plan(*hosts, mix=shares), res(1000, 1, gpu=500)).tolist())) == 2
    # 2 GPUs fit the fresh host's pool only: taking from it fragments, from the other uses a fragment
    s = gpu_score("fragmentation", pooled(WorkloadMix([(4000, 16 << 30, 2000, 1.0)])), res(1000, 1, gpu=500))
    assert s[0] < 0.5 < s[1]


def test_stranding_keeps_cpu_for_free_gpus():
    # a cpu-only instance that would leave the GPU host too little cpu for its GPUs
    plan = gpu_plan(host("cpu-only", 16000, 64), host("gpu", 16000, 64, gpu=2000))
    s = gpu_score("stranding", plan, res(12000, 8))
    assert s[0] == pytest.approx(0.5) and s[1] < 0.5


@pytest.mark.parametrize("mix, hosts", [
    (None, [host("g", gpu=1000)]),
    (MIX, [host("no-gpu")]),
], ids=["no mix yet", "no host has a GPU"])
@pytest.mark.parametrize("name", ["fragmentation", "stranding"])
def test_gpu_scorers_are_neutral_without_a_mix_or_gpus(name, mix, hosts):
    plan = Plan(table(*hosts), EngineConfig(workload_mix=mix, scorers=((name, 1.0),)))
    assert plan.mix is mix
    assert gpu_score(name, plan, res(100, 1)) == 0.5   # one number for every host


def test_occupied():
    """In use: 1; empty: half its size as a share of the largest host (mean of cpu and memory)."""
    t = table(host("empty"), host("used", used=res(cpu=1)), host("half", cpu=2000, mem_gib=8))
    assert score("occupied", res(), t).tolist() == [0.5, 1.0, 0.25]


def test_occupied_opens_the_host_with_most_gpus_for_gpu_work():
    """An instance asking for GPUs counts the host's GPUs as a third share of its size: it opens the
    8-GPU host before the larger 2-GPU one; an instance without GPUs opens the larger."""
    t = table(host("big2", 8000, 64, gpu=2000), host("mid8", 7000, 48, gpu=8000))
    cpu_only, gpu_work = score("occupied", res(100, 1), t), score("occupied", res(100, 1, gpu=500), t)
    assert cpu_only[0] > cpu_only[1]
    assert gpu_work[1] > gpu_work[0]
    assert gpu_work.tolist() == pytest.approx([0.5 * (2 * 1.0 + 0.25) / 3, 0.5 * (2 * (0.875 + 0.75) / 2 + 1.0) / 3])


@pytest.mark.parametrize("name", sorted(scorers.REGISTRY))
def test_range_with_gpus_and_a_mix(name):
    plan = gpu_plan(host("over", 1000, 1, gpu=1000, used=res(3000, 3, gpu=1000)), host("zero", 0, 0),
                    host("g", gpu=8000, used=res(gpu=2300)), host("fine"))
    for need in (res(500, 1), res(500, 1, gpu=300), res(500, 1, gpu=2000)):
        s = gpu_score(name, plan, need)
        assert np.all((s >= 0) & (s <= 1)), (need, s)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 4000), st.lists(st.integers(0, 1000), min_size=1, max_size=30, unique=True),
       st.integers(0, 2**31))
def test_fragment_sums_agree_for_few_and_many_hosts(n, thresholds, seed):
    """_below switches to a sort-and-search method for many hosts: both give the same sums."""
    gpu = np.random.default_rng(seed).choice([0, 100, 250, 500, 810, 1000], size=(n, 8))
    th = np.array(sorted(thresholds))
    direct = (gpu[:, None, :] * (gpu[:, None, :] < th[None, :, None])).sum(axis=2)
    assert np.array_equal(_below(gpu, th, 1000), direct)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 300), st.integers(0, 2**31))
def test_gpu_measures_of_a_host_do_not_depend_on_the_batch(n, seed):
    """A host must score the same, to the last bit, whether a refresh looks at it alone or with
    others (cached and full pipelines then break exact ties alike): no matrix products."""
    rng = np.random.default_rng(seed)
    shapes = [(int(rng.integers(100, 16000)), int(rng.integers(1, 64)) << 30,
               int(rng.choice([0, 250, 500, 1000, 2000])), float(rng.random() + 0.01)) for _ in range(37)]
    mix = WorkloadMix(shapes)
    gpu = rng.choice([0, 100, 250, 500, 810, 1000], size=(n, 8))
    cpu, mem = rng.integers(-1000, 64000, n), rng.integers(-(1 << 30), 256 << 30, n)
    batch = measures(cpu, mem, gpu, mix)
    for i in rng.choice(n, size=min(n, 5), replace=False):
        alone = measures(cpu[i:i + 1], mem[i:i + 1], gpu[i:i + 1], mix)
        assert alone.tobytes() == batch[i:i + 1].tobytes()


def test_a_host_without_free_gpus_scores_exactly_neutral():
    # its GPUs all taken: nothing to fragment or strand, before or after a cpu-only instance
    # (a refresh of a few rows computes them with the rest: the result must be 0.5 to the bit)
    plan = gpu_plan(host("full", 64000, 256, gpu=2000, used=res(1000, 1, gpu=2000)), host("free", gpu=1000),
                    host("none", 64000, 256))
    g = gradients(plan.view(amounts(res(2000, 4))))
    assert g[0].tolist() == [0.5, 0.5] and g[2].tolist() == [0.5, 0.5]
    assert measures(np.array([63000]), np.array([255 << 30]), np.zeros((1, 2), dtype=np.int64),
                    MIX).tolist() == [[0.0, 0.0]]


@pytest.mark.parametrize("small", [(32000, 64), (16000, 48), (64000, 128)])
def test_balance_weighs_leftovers_alike_on_hosts_of_any_size(small):
    """What an instance leaves stranded is measured in the largest host's cpu and memory: on a
    small host and a large one where it strands as much cpu, balance scores them the same (as a
    share of each host, the small host's proportions moved the most, and balance opened small
    hosts where a large one held the work)."""
    cpu, mem_gib = small
    mix = WorkloadMix([(1000, 4 << 30, 0, 1.0)])
    t = table(host("small", cpu=cpu, mem_gib=mem_gib), host("large", cpu=128000, mem_gib=256))
    plan = Plan(t, EngineConfig(workload_mix=mix))
    # 1 core and 8 GiB: memory runs out first on both, so a core more is left over on each
    score = scorers.balance(plan.view(amounts(res(1000, 8))))
    assert score[0] == score[1] and score[0] < 0.5
