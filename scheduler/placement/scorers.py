"""Scorers: each maps (rows of the plan, the instance's reserved amounts) to a float array in [0, 1],
higher is better, scoring each host as if the instance were placed on it. A scorer reads only its
own row, never other hosts: that is what lets the engine re-score only the hosts a reservation
changed. The engine clips, weighs (EngineConfig.scorers) and sums them.

The peers' policies are re-derived from their published formulas (FIELD-NOTES.md), not copied.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from scheduler.placement.fragmentation import FRAGMENTED, STRANDED, gradients
from scheduler.placement.table import CPU, GPU, MEMORY
from scheduler.placement.view import View

# an array with one score a row, or one float for every row
Scorer = Callable[[View], np.ndarray | float]


def binpack(view: View) -> np.ndarray:
    """Prefer the host that ends up fullest (mean of cpu and memory use after placing), so small
    instances fill one host before another is opened."""
    used = view.used_after
    return (used[:, CPU] + used[:, MEMORY]) / 2


def occupied(view: View) -> np.ndarray:
    """1 on a host that already holds something, 0 on an empty one: a tie-breaker that keeps work
    on the hosts in use, so empty hosts stay empty (to be powered down or kept for big work). An
    empty host scores up to 0.5 by its size (overlay.size): opening a large host rather than a small
    one leaves fewer hosts open for the small work that follows. For an instance asking for GPUs
    the host's GPUs are a third share of its size: GPU work opening a large host with 2 GPUs fills
    its GPUs long before its cpu and memory, and the host's room is then lost to both."""
    rows = view.rows
    in_use = view.overlay.in_use[rows]
    size = view.overlay.size_gpu if view.need[GPU] > 0 else view.overlay.size
    return in_use + (1.0 - in_use) * 0.5 * size[rows]


def nomad_binpack(view: View) -> np.ndarray:
    """Nomad's ScoreFitBinPack: 20 - (10^freeCpu + 10^freeMem), free = fraction left after
    placing; ranges 0..18, divided by 18."""
    free_cpu = 1.0 - view.used_after[:, CPU]
    free_mem = 1.0 - view.used_after[:, MEMORY]
    return (20.0 - (np.power(10.0, free_cpu) + np.power(10.0, free_mem))) / 18.0


def least_allocated(view: View) -> np.ndarray:
    """kube-scheduler NodeResourcesFit LeastAllocated (its default, spreads): mean over cpu and
    memory (weights 1, 1) of the fraction left free after placing."""
    return 1.0 - binpack(view)


def most_allocated(view: View) -> np.ndarray:
    """kube-scheduler NodeResourcesFit MostAllocated: mean of the fraction in use after placing."""
    return binpack(view)


def balanced_allocation(view: View) -> np.ndarray:
    """kube-scheduler NodeResourcesBalancedAllocation: 1 - standard deviation of the cpu and memory
    fractions after placing (for two resources, |cpu - mem| / 2)."""
    used = view.used_after
    return 1.0 - np.abs(used[:, CPU] - used[:, MEMORY]) / 2


def fragmentation(view: View) -> np.ndarray | float:
    """Fragmentation gradient (FGD, fragmentation.py): prefer the host whose expected GPU
    fragmentation for the workload mix grows least: a share on a partly used GPU rather than a
    whole one, whole GPUs where they leave no partial device behind.

    Under the pooled GPU model (gpumodel.py, a bench setting for the peers' figures) only the mix's
    whole-GPU shapes count (mix.frag_weight): a host's GPUs are one amount there, a share never
    needs one device, and for shares FGD would measure only whether a host's last GPUs still fit
    one, opening an empty host rather than use them (the trace with every GPU pod sharing: 1,244
    hosts, 812 without; bench/PACKING.md)."""
    g = gradients(view)
    return 0.5 if g is None else g[:, FRAGMENTED]


def stranding(view: View) -> np.ndarray | float:
    """Prefer the host where placing the instance strands the fewest GPUs (fragmentation.py):
    keep the cpu and memory that a host's free GPUs will need."""
    g = gradients(view)
    return 0.5 if g is None else g[:, STRANDED]


def stranded_share(left: np.ndarray, scale: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """The share of a host's cpu and memory that average instances of the mix could not use
    because the other resource runs out first (free cpu beside full memory, or the reverse).
    `left` (n, 2): cpu and memory free; `scale` (n, 2): what they are measured in (the largest
    host's cpu and memory, Overlay.cpu_memory_scale); `mean` (2,): the mix's average cpu and
    memory. Both columns in each call, as the calls are what a refresh of a few rows costs."""
    left = np.maximum(left, 0)
    share = left / mean
    # (two columns, not minimum.reduce over axis 1: that loops per row on a refresh of all hosts)
    units = np.minimum(share[:, CPU], share[:, MEMORY])
    rest = (left - units[:, None] * mean) / scale
    return rest[:, CPU] + rest[:, MEMORY]


def balance(view: View) -> np.ndarray | float:
    """Keep each host's free cpu and memory in the proportion the workload mix asks for them:
    0.5 - (stranded share after placing - before) / 4 (the share is 0..2, of the largest host's
    cpu and memory: one scale for all hosts, as the GPU scorers'), at most 0.5 on an empty host.
    Unlike kube-scheduler's BalancedAllocation (equal fractions), the target proportion is the
    mix's, so a memory-heavy VM goes where cpu would otherwise be left over."""
    mix = view.overlay.mix
    if mix is None or mix.mean_cpu <= 0 or mix.mean_memory <= 0:
        return 0.5
    index, left, scale = view.index, view.left_after, view.overlay.cpu_memory_scale
    kept = view.overlay.measures   # the "before" of each host, until it changes (measures.py)
    stale = kept.stale("balance", index)
    if stale is None:
        before = kept.known("balance", index)
        after = stranded_share(left, scale[index], mix.mean_cpu_memory)
    else:   # the stale hosts' "before" and every host's "after" in one call (fewer numpy calls)
        k = len(stale)
        both = stranded_share(np.concatenate((view.free[stale, :MEMORY + 1], left)),
                              scale[np.concatenate((index[stale], index))], mix.mean_cpu_memory)
        before = kept.remember("balance", index, stale, both[:k])
        after = both[k:]
    score = 0.5 - (after - before) / 4
    # an empty host's proportions strand nothing until something runs there: moving them toward
    # the mix's is no gain (it opened hosts of another shape than those in use for any instance
    # that one strands a little; small containers on hosts of 1, 2 and 4 GiB per core: 670 hosts
    # for a bound of 317), only a loss where the instance strands even there
    return np.minimum(score, 0.5, out=score, where=view.overlay.in_use[view.rows] == 0)


REGISTRY: dict[str, Scorer] = {
    "balance": balance,
    "fragmentation": fragmentation,
    "stranding": stranding,
    "occupied": occupied,
    "binpack": binpack,
    "nomad_binpack": nomad_binpack,
    "least_allocated": least_allocated,
    "most_allocated": most_allocated,
    "balanced_allocation": balanced_allocation,
}

# scorers that read the workload mix (the Plan learns one only when one of these is weighed)
MIX_SCORERS = frozenset({"fragmentation", "stranding", "balance"})
