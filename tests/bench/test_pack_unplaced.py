"""bench/pack_unplaced.py: why unplaced workloads are left out at the end, and the shares' L2 bound."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from bench.pack_unplaced import best_fit_bins, breakdown, ffd_bins, l2_bins, pattern_bins
from tests.scheduler.placement.test_benchcli import write as _write

WORK = ["name", "cpu_milli", "memory_mib", "kind", "num_gpu", "gpu_milli", "gpu_spec"]
OUT = ["name", "node", "cpu_milli", "memory_mib", "gpu_milli", "gpus"]


def _optimal_bins(sizes: list[int], capacity: int) -> int:
    """Fewest bins by trying every assignment (tiny cases only)."""
    n = len(sizes)
    for bins in range(1, n + 1):
        for assign in itertools.product(range(bins), repeat=n):
            load = [0] * bins
            for s, b in zip(sizes, assign, strict=True):
                load[b] += s
            if max(load) <= capacity:
                return bins
    return n


@pytest.mark.parametrize("seed", range(25))
def test_bounds_are_below_the_optimum_and_the_heuristics_above(seed):
    rng = np.random.default_rng(seed)
    sizes = [int(x) for x in rng.integers(50, 1000, size=int(rng.integers(1, 7))) // 10 * 10]
    best = _optimal_bins(sizes, 1000)
    assert -(-sum(sizes) // 1000) <= l2_bins(np.array(sizes)) <= best
    assert pattern_bins(np.array(sizes)) <= best <= min(ffd_bins(np.array(sizes)), best_fit_bins(np.array(sizes)))


@pytest.mark.parametrize("seed", range(25))
def test_online_best_fit_opens_no_fewer_than_l2_and_fills_each_bin_it_leaves(seed):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 100, size=int(rng.integers(1, 60))) * 10
    opened = best_fit_bins(sizes)
    assert l2_bins(sizes) <= opened <= len(sizes)
    # at most one bin is half empty or more (best fit opens a bin only for what fits in none)
    assert opened <= 2 * -(-int(sizes.sum()) // 1000) or opened == len(sizes)


def test_online_best_fit_goes_to_the_fullest_bin_that_holds_it():
    # 0.3 joins 0.6, 0.1 fills the bin
    assert best_fit_bins(np.array([600, 300, 100])) == 1
    # 0.7, then 0.5 in a second bin; 0.3 beside 0.7 (the fullest that holds it), 0.5 beside 0.5
    assert best_fit_bins(np.array([700, 500, 300, 500])) == 2
    # first fit would put 0.2 beside 0.5 (the first bin); best fit beside 0.7, leaving 0.5 room for 0.5
    assert best_fit_bins(np.array([500, 700, 200, 500])) == 2


def test_l2_counts_the_slivers_no_share_fills():
    # ten shares of 0.81 and ten of 0.3: volume says 11 devices, but no 0.3 fits beside a 0.81,
    # so ten devices for the 0.81s and three at least for the 0.3s (14 in fact: three a device)
    assert l2_bins(np.array([810] * 10 + [300] * 10)) == 13
    # the pattern LP sees that a device holds three 0.3s at most: 10 + 10/3, rounded up
    assert pattern_bins(np.array([810] * 10 + [300] * 10)) == 14


def test_each_unplaced_workload_gets_the_first_reason_and_stranded_room_is_taken_once(tmp_path: Path):
    nodes = _write(tmp_path / "n.csv", ["name", "cpu_milli", "memory_mib", "gpu", "model"],
                   [["a", 8000, 8192, 2, "T4"], ["b", 8000, 8192, 2, "T4"]])
    works = _write(tmp_path / "w.csv", WORK, [
        ["p0", 8000, 1024, "container", 1, 1000, ""],   # a: all its cpu, one GPU, one left free
        ["p1", 1000, 1024, "container", 1, 900, ""],    # b: 0.9 of device 0
        ["p2", 1000, 1024, "container", 1, 1000, ""],   # b: device 1
        ["u0", 1000, 1024, "container", 1, 1000, ""],   # a's free GPU, a's cpu gone: stranded
        ["u1", 1000, 1024, "container", 1, 1000, ""],   # that GPU explains u0 only: no whole device
        ["u2", 1000, 1024, "container", 2, 1000, ""],   # no host with 2 free
        ["u3", 1000, 1024, "container", 1, 500, ""],    # b's 0.1 sliver: too small
        ["u4", 1000, 1024, "container", 0, 0, ""],      # fits on b
    ])
    out = _write(tmp_path / "o.csv", OUT, [
        ["p0", "a", 8000, 1025, 1000, "0:1000"], ["p1", "b", 1000, 1025, 900, "0:900"],
        ["p2", "b", 1000, 1025, 1000, "1:1000"], *[[f"u{i}", "", 0, 0, 0, ""] for i in range(5)]])
    by_shape, by_reason, free = breakdown(nodes, works, out)
    assert {why: by_reason[why, "n"] for why, key in by_reason if key == "n"} == {
        "stranded": 1, "no whole devices": 2, "slivers": 1, "fits": 1}
    assert by_reason["no whole devices", "gpus"] == 3.0
    assert free == {"free whole": 1.0, "free in part-used": 0.1, "free whole, host < 4 cores or 16 GiB": 1.0}
    assert by_shape[("1", "whole", "<= 4"), "n"] == 2
