"""Pairing host shapes: on a cluster whose hosts differ in proportion, the mix's cpu-heavy
instances go to hosts of one shape and its memory-heavy instances to hosts of another, so that
both fill in cpu and memory.

Left to the scores, each host is filled by the stream as it comes, in the mix's proportion: a host
of 128 cores and 128 GiB runs out of memory at 71% of its cores under a mix of 1.5 GiB per core,
and a host of 96 cores and 384 GiB out of cores at 39% of its memory (smallshapes seed 25: 159
hosts where the LP bound is 118). `balance` prefers the host where an instance strands least,
but only among hosts in use, by a little per instance, and hosts are opened one at a time: there
is rarely a second shape open to prefer. Yet a pair of shapes, one poorer in memory per core than
the mix and one richer, holds the mix in full when each gets the instances on its side of a
threshold, and it can hold more per host than any one shape (bench/PACKING.md, change 11).

`best_pair` finds the pair and the threshold from the mix and the shapes that still have empty
hosts; `route` moves an instance that the engine put on the pair's other shape to a host of its
own side's: one in use where one takes it, else an empty one. It applies where `opening` does (a
cluster without GPU hosts, under the policy that weighs the mix, an instance without GPUs) and
only when the pair holds at least MARGIN more per host than the best single shape: routing by a
threshold is coarse (an instance near it fits either side), and a pair that gains less was not
worth its second open host. A cluster of one proportion (one shape, or sizes of one shape) has no
pair and nothing changes there.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scheduler.placement.mix import WorkloadMix
from scheduler.placement.plan import Plan
from scheduler.placement.table import CPU, GPU, MEMORY

MARGIN = 0.05


@dataclass(frozen=True)
class Pair:
    cpu_side: int        # the shape (Overlay.shapes) for instances of at most `threshold`
    memory_side: int     # the shape for the others
    threshold: float     # an instance's memory per cpu (in the mix's units: bytes per milli-core)
    holds: float         # the mix's instances per host of the pair, both sides filled


def best_pair(capacity: np.ndarray, available: np.ndarray, mix: WorkloadMix) -> Pair | None:
    """The pair of shapes that holds most of the mix per host, or None when no pair holds MARGIN
    more than the best single shape. `capacity` (S, 2): each shape's cpu and memory; `available`
    (S,): whether the shape has an empty host left (a pair is of hosts that can be opened).

    For a pair (a, b), a poorer in memory per cpu than b: the mix's classes sorted by their
    memory per cpu, the first k to a and the rest to b; a needs max(cpu/a's cpu, memory/a's
    memory) hosts per instance of the mix for its part, b as much for its own. The best k is the
    threshold. One class is not split, so the figure is what routing by the threshold reaches."""
    cap = capacity.astype(np.float64)
    if mix.mean_cpu <= 0 or mix.mean_memory <= 0 or np.any(cap <= 0):
        return None
    single = float(np.max(np.where(available, np.min(cap / mix.mean_cpu_memory, axis=1), 0.0), initial=0.0))
    ratio = mix.memory / np.maximum(mix.cpu, 1e-9)
    order = np.argsort(ratio, kind="stable")
    low_cpu = np.concatenate(([0.0], np.cumsum((mix.cpu * mix.weight)[order])))
    low_memory = np.concatenate(([0.0], np.cumsum((mix.memory * mix.weight)[order])))
    high_cpu, high_memory = low_cpu[-1] - low_cpu, low_memory[-1] - low_memory
    shape_ratio = cap[:, MEMORY] / cap[:, CPU]
    best: Pair | None = None
    enough = single * (1 + MARGIN)
    for a in np.flatnonzero(available):
        for b in np.flatnonzero(available & (shape_ratio > shape_ratio[a])):
            hosts = (np.maximum(low_cpu / cap[a, CPU], low_memory / cap[a, MEMORY])
                     + np.maximum(high_cpu / cap[b, CPU], high_memory / cap[b, MEMORY]))
            k = int(np.argmin(hosts[1:-1])) + 1 if len(order) > 1 else 0   # both sides given work
            if k and 1 / hosts[k] > enough:
                enough = 1 / hosts[k]
                # (midway, as a ratio, between the last class of one side and the first of the
                # other: an instance of neither, or a class's own with its overhead, goes by which
                # it is nearer)
                threshold = float(np.sqrt(ratio[order[k - 1]] * ratio[order[k]]))
                best = Pair(int(a), int(b), threshold, float(enough))
    return best


def route(plan: Plan, working: np.ndarray, best: int, need: np.ndarray) -> int:
    """The host for an instance reserving `need` where the engine chose `best`; `working`: the
    ask's scores over all hosts (-inf where infeasible). `best` itself unless a pair applies and
    `best` is of the pair's shape for the other side."""
    overlay = plan.overlay
    mix = overlay.mix
    if (overlay.gpu_scale > 0 or mix is None or plan.balance_weight == 0 or need[GPU] > 0
            or len(overlay.shapes[0]) < 2):
        return best
    pair = _pair_for(plan)
    # (a mix learned from fewer instances than one host of the pair holds is too young to split:
    # on smallshapes seed 55 two instances moved by the mix of the first two opened a host of
    # 24 cores and 192 GiB first, and the cluster filled from there 29 hosts worse)
    if pair is None or plan.learner is not None and plan.learner.total < pair.holds:
        return best
    side, other = ((pair.cpu_side, pair.memory_side) if need[MEMORY] <= pair.threshold * need[CPU]
                   else (pair.memory_side, pair.cpu_side))
    if overlay.shapes[1][best] != other:
        return best
    rows = overlay.open_by_shape[side]   # a host of its side in use that takes it, the best scored
    if len(rows):
        scores = working[rows]
        k = int(np.argmax(scores))
        if scores[k] != -np.inf:
            return int(rows[k])
    rows = overlay.shape_hosts[side]     # else an empty one
    scores = np.where(overlay.in_use[rows] > 0, -np.inf, working[rows])
    k = int(np.argmax(scores))
    if scores[k] == -np.inf:   # no host of its side takes it: where the engine chose
        if len(overlay.open_by_shape[side]) == len(rows):   # and none is empty: the pair is spent
            _pair_for(plan, spent=True)
        return best
    return int(rows[k])


def _pair_for(plan: Plan, spent: bool = False) -> Pair | None:
    """The pair for the plan's mix among the shapes with empty hosts left, found again when either
    changes. A pair's own shapes stay in it while their hosts in use take its instances (the last
    empty host of a shape opened is not the end of its room), until `spent`: an instance of its
    side found no host of its shape."""
    overlay = plan.overlay
    kept = plan.pairing
    if not spent and kept is not None and kept[0] is overlay.mix and kept[1] == overlay.emptied:
        return kept[2]
    available = overlay.empty_by_shape() > 0
    if not spent and kept is not None and kept[0] is overlay.mix and kept[2] is not None:
        available[[kept[2].cpu_side, kept[2].memory_side]] = True
    host = overlay.shapes[0]
    pair = best_pair(overlay.capacity[host, :MEMORY + 1], available, overlay.mix)
    plan.pairing = (overlay.mix, overlay.emptied, pair)
    return pair
