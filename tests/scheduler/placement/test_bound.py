"""The LP lower bound on hosts (bound.py, `lower_bound_lp` of `packyard-bench pack`): checked
against the exact optimum, found by exhaustive search on small generated instances, and against
the capacity bound it must never fall below."""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Callable
from functools import cache

import numpy as np
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from packyard.records import ResourceAmounts
from scheduler.placement import filters
from scheduler.placement.benchcli import gpu_spec, lower_bound, lp_bound
from scheduler.placement.bound import lp_lower_bound
from scheduler.placement.config import EngineConfig
from scheduler.placement.engine import place
from scheduler.placement.patterns import pattern_bound
from scheduler.placement.plan import Plan
from scheduler.placement.table import CPU, DISK, GPU, MEMORY, HostTable, amounts
from tests.scheduler.placement.builders import ask, host, table

DEVICE = 1000


def reserved_of(asks) -> np.ndarray:
    profiles = EngineConfig().profiles
    return np.array([amounts(profiles[a.kind].reserve(a.request)) for a in asks], dtype=np.int64).reshape(-1, 4)


def summary(hosts: HostTable, asks) -> dict:
    """What `packyard-bench pack` prints of the bounds, and the hosts the engine used."""
    plan = Plan(hosts, EngineConfig())
    results = place(hosts, asks, plan=plan)
    reserved = np.array([amounts(r.reserved) for r in results], dtype=np.int64).reshape(-1, 4)
    used = np.any(plan.allocated != hosts.allocated, axis=1)
    return {"lower_bound": lower_bound(hosts, reserved), **lp_bound(hosts, plan, asks, results, reserved),
            "placed": sum(len(r.hosts) for r in results), "hosts_used": int(used.sum())}


def allowed(hosts: HostTable, asks) -> np.ndarray:
    """(A, N) the hosts each ask passes the static filters on."""
    return np.array([np.logical_and.reduce([m for m, _ in filters.static(hosts, a.kind, a.constraints)])
                     for a in asks]).reshape(len(asks), len(hosts))


def fits(state, need) -> list:
    """The states a host can be in after taking `need` (none: it does not fit); a share tries
    every device that holds it, whole GPUs take whole devices (which ones does not matter)."""
    room, devices = state
    if any(room[r] < need[r] for r in (CPU, MEMORY, DISK)):
        return []
    left = tuple(room[r] - need[r] if r != GPU else 0 for r in range(4))
    g = need[GPU]
    if g == 0:
        return [(left, devices)]
    if g < DEVICE:
        return [(left, tuple(sorted(devices[:i] + (f - g,) + devices[i + 1:])))
                for i, f in enumerate(devices) if f >= g and f not in devices[:i]]
    k = g // DEVICE
    if devices.count(DEVICE) < k:
        return []
    rest = list(devices)
    for _ in range(k):
        rest.remove(DEVICE)
    return [(left, tuple(sorted([*rest, *([0] * k)])))]


class TooLong(Exception):
    """An exhaustive search past SEARCH_BUDGET steps: that example is rejected, not run for
    minutes (a few of Hypothesis' random examples took 35 s of an otherwise 3 s test)."""


SEARCH_BUDGET = int(os.environ.get("PLACEMENT_SEARCH_BUDGET", "60000"))


def budget() -> Callable[[], None]:
    """A step counter raising TooLong past SEARCH_BUDGET."""
    steps = itertools.count()

    def step() -> None:
        if next(steps) > SEARCH_BUDGET:
            raise TooLong
    return step


def optimum(hosts: HostTable, reserved: np.ndarray, ok: np.ndarray) -> int | None:
    """The fewest hosts onto which every workload can be placed (None: no placement places all),
    by trying every set of hosts, smallest first, with a depth-first search over the workloads
    (largest first) that tries one host of each distinct state."""
    order = sorted(range(len(reserved)), key=lambda i: tuple(-reserved[i, [GPU, CPU, MEMORY, DISK]]))
    needs = [tuple(int(v) for v in reserved[i]) for i in order]
    oks = [ok[i] for i in order]
    start = [(tuple(int(v) for v in hosts.capacity[h]), tuple(sorted(int(d) for d in hosts.gpu_capacity[h])))
             for h in range(len(hosts))]

    step = budget()

    def place_all(chosen: tuple[int, ...]) -> bool:
        @cache
        def search(i: int, states: tuple) -> bool:
            step()
            if i == len(needs):
                return True
            tried = set()
            for slot, h in enumerate(chosen):
                if not oks[i][h] or (h_key := (start[h], tuple(oks[j][h] for j in range(i, len(needs))),
                                               states[slot])) in tried:
                    continue
                tried.add(h_key)
                for after in fits(states[slot], needs[i]):
                    if search(i + 1, states[:slot] + (after,) + states[slot + 1:]):
                        return True
            return False
        return search(0, tuple(start[h] for h in chosen))

    for k in range(len(hosts) + 1):
        seen = set()
        for chosen in itertools.combinations(range(len(hosts)), k):
            key = tuple(sorted((start[h], tuple(o[h] for o in oks)) for h in chosen))
            if key in seen:
                continue
            seen.add(key)
            if place_all(chosen):
                return k
    return None


def most_placed(hosts: HostTable, reserved: np.ndarray, ok: np.ndarray, weight: np.ndarray) -> int:
    """The most weight (workloads, or GPUs) any placement places: each workload placed on a host
    of any distinct state, or left out. Hosts alike (capacity, devices, which workloads they
    allow) are interchangeable, so a state is the sorted states of each kind of host."""
    needs = [tuple(int(v) for v in row) for row in reserved]
    start = [(tuple(int(v) for v in hosts.capacity[h]), tuple(sorted(int(d) for d in hosts.gpu_capacity[h])))
             for h in range(len(hosts))]
    kind = [(start[h], tuple(ok[:, h])) for h in range(len(hosts))]
    step = budget()

    @cache
    def search(i: int, states: tuple) -> int:
        step()
        if i == len(needs):
            return 0
        best = search(i + 1, states)
        tried = set()
        for h, state in enumerate(states):
            if ok[i, h] and (kind[h], state) not in tried:
                tried.add((kind[h], state))
                for after in fits(state, needs[i]):
                    moved = states[:h] + (after,) + states[h + 1:]
                    best = max(best, int(weight[i]) + search(i + 1, canonical(moved)))
        return best

    order = sorted(range(len(hosts)), key=lambda h: kind[h])

    def canonical(states: tuple) -> tuple:
        """Hosts of one kind in order of their states (the hosts were sorted by kind once)."""
        out = list(states)
        for _, group in itertools.groupby(range(len(order)), key=lambda k: kind[k]):
            idx = list(group)
            for k, st_ in zip(idx, sorted(states[k] for k in idx), strict=True):
                out[k] = st_
        return tuple(out)

    ok = ok[:, order]
    kind = [kind[h] for h in order]
    return search(0, tuple(start[h] for h in order))


MODELS = ["A", "B"]
host_type = st.tuples(st.sampled_from([2000, 4000, 8000]), st.sampled_from([4, 8, 16]),
                      st.sampled_from([0, 0, 1, 2, 4]), st.sampled_from(MODELS), st.integers(1, 3))
workload = st.tuples(st.sampled_from([250, 500, 1000, 1500, 2500, 3000]), st.sampled_from([256, 1024, 2048, 3000]),
                     st.sampled_from([0, 0, 0, 300, 500, 600, 800, 1000, 2000, 3000]),
                     st.sampled_from(["", "", "", "A", "B", "A|B"]), st.sampled_from(["container", "container", "vm"]))
SETTINGS = settings(max_examples=int(os.environ.get("PLACEMENT_EXAMPLES", "60")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def build(types, works):
    hosts = table(*[host(f"h{t}-{i}", cpu, mem, gpu=gpu * DEVICE, gpu_model=model)
                    for t, (cpu, mem, gpu, model, n) in enumerate(types) for i in range(n)])
    asks = [ask(cpu=cpu, mem_mib=mem, gpu=gpu, kind=kind, group=f"w{i}", constraints=gpu_spec(spec) if gpu else [])
            for i, (cpu, mem, gpu, spec, kind) in enumerate(works)]
    return hosts, asks


@SETTINGS
@given(st.lists(host_type, min_size=2, max_size=3), st.lists(workload, min_size=4, max_size=12))
def test_the_lp_bound_lies_between_the_capacity_bound_and_the_optimum(types, works):
    try:
        lp_bound_against_the_optimum(types, works)
    except TooLong:
        reject()


def lp_bound_against_the_optimum(types, works):
    hosts, asks = build(types, works)
    assert len(hosts) <= 9
    got = summary(hosts, asks)
    reserved = reserved_of(asks)
    ok = allowed(hosts, asks)
    fit_somewhere = np.array([any(fits(s, tuple(int(v) for v in reserved[i]))
                                  for s in [(tuple(int(v) for v in hosts.capacity[h]),
                                             tuple(sorted(int(d) for d in hosts.gpu_capacity[h])))
                                            for h in np.flatnonzero(ok[i])])
                              for i in range(len(asks))], dtype=bool)
    assert got["lower_bound_lp_excluded"] == int((~fit_somewhere).sum())
    assert got["lower_bound_lp_unplaced"] >= got["lower_bound_lp_excluded"]
    best = optimum(hosts, reserved[fit_somewhere], ok[fit_somewhere])
    if best is None:   # no placement places them all: any number is a bound; reported as all hosts
        assert got["lower_bound_lp"] <= len(hosts)
        # and what every placement leaves out, in workloads and in GPUs, is at most what the best leaves
        ones = np.ones(len(asks), dtype=np.int64)
        assert got["lower_bound_lp_unplaced"] <= len(asks) - most_placed(hosts, reserved, ok, ones)
        gpus = reserved[:, GPU]
        assert got["lower_bound_lp_unplaced_gpus"] * DEVICE <= gpus.sum() - most_placed(hosts, reserved, ok, gpus) + 1e-6
    else:
        assert got["lower_bound_lp"] <= best
        if got["placed"] == len(asks):
            assert best <= got["hosts_used"]
    if got["lower_bound_lp_excluded"] == 0:
        assert got["lower_bound"] <= got["lower_bound_lp"]


plain_workload = st.tuples(st.sampled_from([1500, 2500, 3000, 4500, 5500, 7000]),
                          st.sampled_from([1024, 3000, 5000, 7000, 9000]), st.just(0), st.just(""),
                          st.sampled_from(["container", "vm"]))


@SETTINGS
@given(st.lists(host_type.map(lambda t: (t[0] * 2, t[1], 0, t[3], t[4])), min_size=1, max_size=3),
       st.lists(plain_workload, min_size=3, max_size=9))
def test_without_gpus_the_pattern_bound_lies_below_the_optimum(types, works):
    """No GPUs, so bound.py adds the whole-host pattern LP (patterns.py), and workloads of a
    large share of a host in cpu and in memory, where it is tighter than the rows per resource."""
    try:
        lp_bound_against_the_optimum(types, works)
    except TooLong:
        reject()


def test_patterns_see_what_shares_a_host_in_both_resources():
    """On 10-core 10 GiB hosts, 8c/4G x3, 3c/6G x3, 8c/8G x2: no two of them share a host (two
    8-core ones exceed the cpu, 3c/6G with any other exceeds one resource or the other), so 8
    hosts; the rows of bound.py, one resource at a time, pair them on 5.9."""
    hosts = table(*[host(f"h{i}", 10_000, 10) for i in range(12)])
    sizes = [(8000, 4)] * 3 + [(3000, 6)] * 3 + [(8000, 8)] * 2
    asks = [ask(cpu=c, mem_mib=g * 1024 - 1, group=f"w{i}") for i, (c, g) in enumerate(sizes)]   # + 1 MiB overhead
    got = summary(hosts, asks)
    assert got["lower_bound"] == 5   # 49 cores
    assert got["lower_bound_lp"] == 8 == got["hosts_used"]


@given(st.integers(4, 8), st.lists(st.integers(501, 700), min_size=8, max_size=8), st.integers(1, 3))
@settings(max_examples=30, deadline=None)
def test_items_above_half_a_host_take_a_host_each(k, sizes, spare):
    """k containers each above half a host's cpu (and together under k - 1 hosts of it): the
    capacity bound says fewer hosts than k, no placement uses fewer than k, and the LP says k."""
    hosts = table(*[host(f"h{i}", 10_000, 64) for i in range(k + spare)])
    asks = [ask(cpu=s * 10, mem_mib=64, group=f"w{i}") for i, s in enumerate(sizes[:k])]
    got = summary(hosts, asks)
    assert got["lower_bound"] < k == got["lower_bound_lp"] == got["hosts_used"]


@given(st.integers(3, 6), st.integers(501, 650))
@settings(max_examples=20, deadline=None)
def test_shares_above_half_a_gpu_take_a_device_each(n_hosts, share):
    """2-GPU hosts, 2n shares of more than half a GPU: as devices they need n hosts whatever the
    pooled sum says (the capacity bound)."""
    hosts = table(*[host(f"g{i}", 64_000, 256, gpu=2 * DEVICE) for i in range(2 * n_hosts)])
    asks = [ask(cpu=100, mem_mib=64, gpu=share, group=f"s{i}") for i in range(2 * n_hosts)]
    got = summary(hosts, asks)
    assert got["lower_bound"] == -(-2 * n_hosts * share // (2 * DEVICE)) < n_hosts
    assert got["lower_bound_lp"] == n_hosts


def test_gpu_spec_keeps_gpu_work_on_its_model():
    """1-GPU pods restricted to model A, which only 1-GPU hosts have: one host each, although the
    8-GPU hosts of model B would hold them all by the sum."""
    hosts = table(*[host(f"a{i}", 16_000, 64, gpu=DEVICE, gpu_model="A") for i in range(4)],
                  *[host(f"b{i}", 16_000, 64, gpu=8 * DEVICE, gpu_model="B") for i in range(2)])
    asks = [ask(cpu=1000, mem_mib=1024, gpu=DEVICE, group=f"p{i}", constraints=gpu_spec("A")) for i in range(3)]
    got = summary(hosts, asks)
    assert (got["lower_bound"], got["lower_bound_lp"], got["hosts_used"]) == (1, 3, 3)


def test_workloads_that_fit_nowhere_are_left_out_and_counted():
    hosts = table(host("a", 4000, 16), host("b", 4000, 16))
    asks = [ask(cpu=3000, group="x"), ask(cpu=3000, group="y"), ask(cpu=9000, group="huge")]
    got = summary(hosts, asks)
    # the capacity bound counts the 9 cores that no host holds (15 cores: more than both hosts)
    assert got["lower_bound"] == 2 and got["lower_bound_lp_excluded"] == got["lower_bound_lp_unplaced"] == 1
    assert got["lower_bound_lp"] == 2 and got["lower_bound_lp_fractional"] is not None


def test_when_nothing_can_place_everything_the_bound_is_every_host():
    """Three 3-core workloads on two 4-core hosts: each fits a host, no placement places all."""
    hosts = table(host("a", 4000, 16), host("b", 4000, 16))
    asks = [ask(cpu=3000, group=g) for g in "xyz"]
    got = summary(hosts, asks)
    assert got["lower_bound_lp"] == 2 and got["lower_bound_lp_fractional"] is None
    assert got["lower_bound_lp_excluded"] == 0 and got["lower_bound_lp_unplaced"] == 1


def test_pooled_gpus_are_one_device_per_host():
    """Pooled (gpumodel.py), three 0.6 shares fit one 2-GPU host: the LP must not count devices."""
    hosts = HostTable.from_hosts([host(f"g{i}", 64_000, 256, gpu=2 * DEVICE) for i in range(3)], gpu_model="pooled")
    asks = [ask(cpu=100, mem_mib=64, gpu=600, group=f"s{i}") for i in range(3)]
    room = hosts.capacity - hosts.allocated
    assert lp_lower_bound(hosts, room, asks, reserved_of(asks)).hosts == 1
    devices = table(*[host(f"g{i}", 64_000, 256, gpu=2 * DEVICE) for i in range(3)])
    assert lp_lower_bound(devices, devices.capacity, asks, reserved_of(asks)).hosts == 2


def test_no_workloads_need_no_hosts():
    hosts = table(host("a"))
    bound = lp_lower_bound(hosts, hosts.capacity, [], np.zeros((0, 4), dtype=np.int64))
    assert (bound.hosts, bound.excluded) == (0, 0)


def test_an_allocated_host_has_less_room():
    """Room is what the host has left: two 3-core workloads on 4-core hosts, one of which already
    runs 2 cores, cannot share it."""
    hosts = table(host("a", 4000, 16, used=ResourceAmounts(2000, 0, 0, 0)), host("b", 4000, 16), host("c", 4000, 16))
    asks = [ask(cpu=1500, group="x"), ask(cpu=1500, group="y"), ask(cpu=1500, group="z")]
    got = summary(hosts, asks)
    assert got["lower_bound_lp"] == 2 <= got["hosts_used"]


@given(st.integers(1, 4), st.integers(1, 4), st.sampled_from(["cpu", "memory", "gpu"]))
@settings(max_examples=30, deadline=None)
def test_items_of_exactly_a_part_of_a_host_fill_it(j, n, resource):
    """(j + 1) n workloads of exactly 1/(j+1) of a host's cpu, memory or GPU (a share of one
    device: 1/(j+1) of a 1-GPU host) fill n hosts exactly: the big-item rows count only items
    *above* a part, and the bound is n, what the engine uses."""
    part = 60 // (j + 1)   # 60 divides by 2, 3, 4 and 5
    hosts = table(*[host(f"h{i}", 60_000, 60, gpu=DEVICE if resource == "gpu" else 0)
                    for i in range(n + 2)])
    asks = [ask(cpu=part * 1000 if resource == "cpu" else 10,
                mem_mib=part * 1024 - 1 if resource == "memory" else 1,   # containers add 1 MiB
                gpu=DEVICE // (j + 1) if resource == "gpu" else 0, group=f"w{i}")
            for i in range((j + 1) * n)]
    got = summary(hosts, asks)
    assert got["lower_bound_lp"] == n == got["hosts_used"]


def test_the_pattern_bound_is_sound_when_stopped_at_once():
    """Stopped after its first round (the time limit), the pattern LP's bound is the dual made
    feasible: below the optimum (3 hosts: a 6-core item each, the 3-core ones beside them), above 0."""
    need = np.array([[6, 1], [3, 1]])
    stopped = pattern_bound(need, np.array([3.0, 3.0]), np.array([[10, 10]]), np.array([9.0]),
                            np.array([[1], [3]]), seconds=0.0)
    assert 0 < stopped <= 3
    assert pattern_bound(need, np.array([3.0, 3.0]), np.array([[10, 10]]), np.array([9.0]),
                         np.array([[1], [3]])) == pytest.approx(3.0)


def test_what_the_solver_prints_does_not_reach_stdout():
    """HiGHS' MIP solver prints debugging lines on file descriptor 1 on some knapsacks (seen with
    scipy 1.17 on a 30-host, 500-container case), where `packyard-bench pack` prints its JSON
    summary: the pattern LP runs with descriptor 1 on /dev/null, and gives it back."""
    code = ("import os, sys\nfrom scheduler.placement.patterns import _quiet\nprint('before', flush=True)\n"
            "with _quiet():\n    os.write(1, b'from C\\n')\n    print('from Python')\nprint('after')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["before", "after"]
