"""The cpu-only shapes' weights of the fragmentation measure (scarcity.py), against a count host by
host, on generated clusters; and the measure with them (fragmentation.from_parts)."""
from __future__ import annotations

import numpy as np
import pytest

from packyard.records import ResourceAmounts
from scheduler.placement import EngineConfig, Host, HostTable, Plan, fragmentation, place, scarcity
from scheduler.placement.mix import WorkloadMix
from scheduler.placement.table import CPU, MEMORY
from tests.scheduler.placement.builders import GIB, ask, con, host


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


def random_case(seed: int) -> tuple[np.ndarray, np.ndarray, WorkloadMix]:
    """A cluster of 1-39 hosts (their free amounts and free GPU milli) and a mix."""
    rng = np.random.default_rng(seed)
    free, gpu_left = random_cluster(rng, int(rng.integers(1, 40)))
    return free, gpu_left, random_mix(rng)


@pytest.mark.parametrize("seed", range(20))
def test_a_cpu_only_shape_weighs_the_share_of_its_room_on_hosts_without_free_gpus(seed):
    free, gpu_left, mix = random_case(seed)
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


def keep_off_by_hand(free: np.ndarray, gpu_left: np.ndarray, mix: WorkloadMix) -> float:
    """scarcity.keep_off as its docstring says, shape by shape and host by host."""
    shapes = range(len(mix.weight))
    without_gpu = [k for k in shapes if mix.gpu[k] == 0]
    gpu_per_instance = sum(mix.weight[k] * mix.gpu[k] for k in shapes)
    if not without_gpu or gpu_per_instance <= 0 or mix.device_milli != 1000:
        return 0.0
    instances = sum(max(int(g), 0) for g in gpu_left) / gpu_per_instance
    short, spare = 0.0, 1.0
    for column, asks in ((CPU, mix.cpu), (MEMORY, mix.memory)):
        beside_gpus = sum(max(int(f), 0) for f, g in zip(free[:, column], gpu_left, strict=True) if g > 0)
        elsewhere = sum(max(int(f), 0) for f, g in zip(free[:, column], gpu_left, strict=True) if g <= 0)
        without = sum(mix.weight[k] * asks[k] for k in without_gpu) * instances
        both = sum(mix.weight[k] * asks[k] for k in shapes) * instances
        if without > 0:
            short = max(short, (both - beside_gpus) / without)
            spare = min(spare, 1 - without / max(elsewhere, 1))
    return float(np.floor(min(max(short, 0.0), 1.0) * max(spare, 0.0) * scarcity.STEPS) / scarcity.STEPS)


@pytest.mark.parametrize("seed", range(30))
def test_work_without_gpus_is_kept_off_as_far_as_gpu_hosts_are_short_and_room_is_spare_elsewhere(seed):
    free, gpu_left, mix = random_case(seed)
    got = scarcity.keep_off(free, gpu_left, mix)
    assert 0.0 <= got <= 1.0
    assert got == pytest.approx(keep_off_by_hand(free, gpu_left, mix), abs=1e-12)
    # more room on the hosts with no free GPU, or less beside the free GPUs, never weakens it
    more = free.copy()
    more[gpu_left <= 0, :MEMORY + 1] = np.maximum(more[gpu_left <= 0, :MEMORY + 1], 0) * 2
    less = free.copy()
    less[gpu_left > 0, :MEMORY + 1] //= 2
    assert scarcity.keep_off(more, gpu_left, mix) >= got
    assert scarcity.keep_off(less, gpu_left, mix) >= got


def test_keep_off_at_the_extremes():
    mix = WorkloadMix([(2000, 8 * GIB, 0, 2.0), (4000, 16 * GIB, 1000, 1.0)])
    gpu_hosts = np.array([[8000, 32 * GIB, 0, 0]] * 4, dtype=np.int64)    # cpu for 2 of their 4 GPUs
    plain = np.array([[64000, 256 * GIB, 0, 0]] * 4, dtype=np.int64)
    free, gpu_left = np.concatenate((gpu_hosts, plain)), np.array([4000] * 4 + [0] * 4)
    # 16 free GPUs bring 48 instances: 64 cores of GPU work and 64 of the rest, where the GPU hosts
    # have 32: none of the rest fits beside the GPU work; the CPU-only hosts hold it 4 times over
    # (3/4 of their room spare), and the same for memory
    assert scarcity.keep_off(free, gpu_left, mix) == 0.75
    half = free.copy()
    half[:4, :MEMORY + 1] *= 3                   # 96 cores: half of the rest beside the GPU work
    assert scarcity.keep_off(half, gpu_left, mix) == 0.5 * 0.75
    assert scarcity.keep_off(free[:4], gpu_left[:4], mix) == 0.0          # no CPU-only host
    assert scarcity.keep_off(free, np.zeros(8), mix) == 0.0                # no free GPU: nothing to come
    roomy = free.copy()
    roomy[:4, :MEMORY + 1] *= 10                                            # GPU hosts hold both
    assert scarcity.keep_off(roomy, gpu_left, mix) == 0.0
    tight = free.copy()
    tight[4:, :MEMORY + 1] //= 8                                            # it does not fit elsewhere
    assert scarcity.keep_off(tight, gpu_left, mix) == 0.0
    assert scarcity.keep_off(free, gpu_left, WorkloadMix([(4000, 16 * GIB, 1000, 1.0)])) == 0.0
    assert scarcity.keep_off(free, gpu_left, WorkloadMix([(2000, 8 * GIB, 0, 1.0)])) == 0.0
    pooled = WorkloadMix([(2000, 8 * GIB, 0, 2.0), (4000, 16 * GIB, 1000, 1.0)], device_milli=10**9)
    assert scarcity.keep_off(free, gpu_left, pooled) == 0.0               # not counted there


@pytest.mark.parametrize("seed", range(10))
def test_kept_off_work_strands_its_share_of_a_hosts_free_gpus(seed):
    """With keep_off k, an instance without GPUs raises a host's fragmentation "after" by k x the
    host's free GPU milli x the larger share of its free cpu or memory it takes; GPU instances and
    hosts without free GPUs are not touched, and k = 0 is the measure as it was, to the bit."""
    rng = np.random.default_rng(seed)
    hosts = [Host(f"h{i}", ResourceAmounts(int(rng.integers(1, 9)) * 8000, int(rng.integers(1, 9)) * 32 * GIB, 0,
                                           int(rng.choice([0, 4000, 8000]))),
                  attributes={"driver.container": "ok"}) for i in range(20)]
    table = HostTable.from_hosts(hosts)
    mix = random_mix(rng)
    k = float(rng.random())
    plain, kept = Plan(table, EngineConfig(workload_mix=mix)), Plan(table, EngineConfig(workload_mix=mix))
    for plan, strength in ((plain, 0.0), (kept, k)):
        plan.overlay.use_mix(plan.mix.with_misfit(plain.mix.misfit, strength))
        plan.fused = None   # numpy (test_kernel.py checks the kernel against it)
    for _ in range(12):
        need = np.array([int(rng.integers(0, 9000)), int(rng.integers(0, 40)) * GIB, 0,
                         int(rng.choice([0, 0, 500, 1000]))], dtype=np.int64)
        a, b = plain.view(need), kept.view(need)
        fa, fb = fragmentation.gradients(a), fragmentation.gradients(b)
        if fa is None:
            assert fb is None
            continue
        free = plain.free
        for h in range(len(table)):
            if need[3] > 0 or plain.overlay.gpu_left[h] <= 0:
                assert fb[h, 0] == fa[h, 0]
                continue
            taken = max(need[CPU] / max(free[h, CPU], 1), need[MEMORY] / max(free[h, MEMORY], 1))
            extra = k * plain.overlay.gpu_left[h] * min(taken, 1.0)
            assert fb[h, 0] == pytest.approx(fa[h, 0] - extra / (2 * plain.overlay.gpu_scale), abs=1e-12)
        assert (fb[:, 1] == fa[:, 1]).all()
        fits = [h for h in range(len(table)) if (free[h, :2] >= need[:2]).all() and plain.overlay.gpu_left[h] >= need[3]]
        if fits and need[3] in (0, 1000):
            h = int(rng.choice(fits))
            plain.reserve(h, need)
            kept.reserve(h, need)


def test_the_plan_keeps_work_without_gpus_on_cpu_only_hosts_only_where_gpu_hosts_are_short(monkeypatch):
    """GPU hosts with cpu for little more than their GPUs' work beside plenty of CPU-only hosts: the
    plan keeps work without GPUs off them (less of its cpu beside free GPUs than with keep_off
    forced to 0, never more), and places as much GPU work; GPU hosts with cpu to spare: it never
    acts, the same decisions."""
    beside = {"kept": 0, "not": 0}
    real = scarcity.keep_off
    for seed in range(6):
        beside_free_gpus(np.random.default_rng(seed), monkeypatch, real, beside)
    assert beside.get("acted", 0) >= 3 and beside["kept"] < beside["not"]


def beside_free_gpus(rng: np.random.Generator, monkeypatch, real, beside: dict[str, int]) -> None:
    gpu_hosts = int(rng.integers(4, 9))
    def cluster(gpu_cpu: int) -> HostTable:
        return HostTable.from_hosts([host(f"g{i}", gpu_cpu, 4 * gpu_cpu // 1000, gpu=8000)
                                     for i in range(gpu_hosts)] +
                                    [host(f"c{i}", 64000, 256) for i in range(2 * gpu_hosts)])
    asks = [ask(1, int(rng.choice([500, 1000, 2000])), int(rng.choice([1024, 2048, 4096])), group=f"c{i}")
            if rng.random() < 0.5 else ask(1, 4000, 16384, gpu=int(rng.choice([500, 1000, 2000])), group=f"g{i}")
            for i in range(20 * gpu_hosts)]
    runs, strongest = {}, {}
    tight = int(rng.integers(24, 31)) * 1000   # about the GPU work's cpu for 8 GPUs (27 cores)
    for gpu_cpu in (tight, 256000):
        def recorded(*a, gpu_cpu=gpu_cpu):
            out = real(*a)
            strongest[gpu_cpu] = max(strongest.get(gpu_cpu, 0.0), out)
            return out
        for name, rule in (("kept", recorded), ("not", lambda *a: 0.0)):
            monkeypatch.setattr(scarcity, "keep_off", rule)
            runs[gpu_cpu, name] = place(cluster(gpu_cpu), asks, EngineConfig())
    def on_gpu_hosts(results):   # cpu of the work without GPUs placed beside free GPUs, as it came
        gpu_left = {f"g{i}": 8000 for i in range(gpu_hosts)}
        cpu = 0
        for r in results:
            for h in r.hosts:
                if r.ask.request.gpu_milli:
                    gpu_left[h] -= r.ask.request.gpu_milli
                elif gpu_left.get(h, 0) > 0:
                    cpu += r.ask.request.cpu_milli
        return cpu
    def gpu_placed(results):
        return sum(len(r.hosts) for r in results if r.ask.request.gpu_milli)
    for gpu_cpu in (tight, 256000):   # where it never acts, the same decisions
        if strongest[gpu_cpu] == 0:
            assert [r.hosts for r in runs[gpu_cpu, "kept"]] == [r.hosts for r in runs[gpu_cpu, "not"]]
    assert strongest[256000] == 0
    if strongest[tight] == 0:
        return
    beside["acted"] = beside.get("acted", 0) + 1
    for name in ("kept", "not"):
        beside[name] += on_gpu_hosts(runs[tight, name])
    assert on_gpu_hosts(runs[tight, "kept"]) <= on_gpu_hosts(runs[tight, "not"])
    assert gpu_placed(runs[tight, "kept"]) >= gpu_placed(runs[tight, "not"])


T4 = (("gpu.model", "=", "T4"),)
G2 = (("gpu.model", "=", "G2"),)


def test_gpus_are_reserved_for_the_work_restricted_to_them_in_the_measure_of_its_pressure():
    """scarcity.reserved: a set's share of the GPU work over its share of the free GPUs, summed
    over the sets a host is in, at most 1, in steps of 1/STEPS; None without constrained work."""
    gpu_left = np.array([2000, 2000, 8000, 8000, 0])
    hosts_of = {T4: np.array([True, True, False, False, False]), G2: np.array([False, False, True, True, False])}
    plain = WorkloadMix([(1000, GIB, 1000, 1.0)])
    hosts_of = hosts_of.__getitem__
    assert scarcity.reserved(gpu_left, plain, hosts_of) is None
    # a tenth of the GPU work needs T4 (a fifth of the free GPUs): half of theirs; G2's share of
    # the work is 0.05 for 0.8 of the GPUs
    mix = WorkloadMix([(1000, GIB, 1000, 1.0)], where=[{None: 0.85, T4: 0.1, G2: 0.05}])
    got = scarcity.reserved(gpu_left, mix, hosts_of)
    assert got.tolist() == [0.5, 0.5, np.floor(0.0625 * 32) / 32, np.floor(0.0625 * 32) / 32, 0.0]
    # more work restricted to T4 than T4 has: all of it, no more
    mix = WorkloadMix([(1000, GIB, 1000, 1.0)], where=[{None: 0.5, T4: 0.5}])
    assert scarcity.reserved(gpu_left, mix, hosts_of).tolist()[:2] == [1.0, 1.0]
    # as the T4s fill, what is left of them is needed the more
    less = scarcity.reserved(np.array([1000, 0, 8000, 8000, 0]), WorkloadMix(
        [(1000, GIB, 1000, 1.0)], where=[{None: 0.9, T4: 0.1}]), hosts_of)
    assert less[0] == 1.0 and less[2] == 0.0
    # a set with no free GPU left reserves nothing; shapes without GPUs ask none
    cpu_only = WorkloadMix([(1000, GIB, 0, 1.0), (1000, GIB, 1000, 1.0)], where=[{T4: 1.0}, {None: 1.0}])
    assert scarcity.reserved(gpu_left, cpu_only, hosts_of).tolist() == [0.0] * 5


def model_stream(seed: int) -> tuple[HostTable, list]:
    """A generated cluster: many hosts of model G2, a few of T4 (more cpu per GPU, which the
    stranding term prefers for cpu-heavy GPU work); a stream of 1-GPU asks of any model, as many
    restricted to T4 as T4 has GPUs, in random order, with room for all and some GPUs to spare."""
    rng = np.random.default_rng(seed)
    n_t4 = int(rng.integers(4, 10))
    hosts = ([Host(f"t4-{i}", ResourceAmounts(104000, 512 * GIB, 0, 2000),
                   attributes={"driver.container": "ok", "gpu.model": "T4"}) for i in range(n_t4)]
             + [Host(f"g2-{i}", ResourceAmounts(96000, 384 * GIB, 0, 8000),
                     attributes={"driver.container": "ok", "gpu.model": "G2"}) for i in range(3 * n_t4)])
    t = HostTable.from_hosts(hosts)
    t4 = [con("gpu.model", "=", "T4")]
    restricted = 2 * n_t4   # T4's GPUs, exactly
    free = 8 * 3 * n_t4 - int(rng.integers(n_t4, 4 * n_t4))   # the rest, less some room
    kinds = np.array([True] * restricted + [False] * free)
    rng.shuffle(kinds)
    asks = [ask(1, int(rng.choice([4000, 8000, 12000])), 32 * 1024, gpu=1000, group=f"a{i}",
                constraints=t4 if k else None) for i, k in enumerate(kinds)]
    return t, asks


@pytest.mark.parametrize("seed", range(6))
def test_work_of_any_model_leaves_the_few_hosts_of_a_model_to_the_work_that_needs_it(seed, monkeypatch):
    """Without the reserve the asks of any model take T4's GPUs and T4 asks that come later find
    none (checked below, so the case can fail)."""
    t, asks = model_stream(seed)
    result = place(t, asks)
    assert all(r.hosts for r in result), sum(not r.hosts for r in result)
    # the same stream without the reserve: the T4 asks are the ones left out
    monkeypatch.setattr(scarcity, "reserved", lambda *_: None)
    left = [a for a, r in zip(asks, place(t, asks), strict=True) if not r.hosts]
    assert left and all(a.constraints for a in left)
