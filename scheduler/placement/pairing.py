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

Where no pair holds more per host, the shape that holds most alone may still be too few for the
stream: change 9's case 1 has 32 hosts of 96 cores and 768 GiB, each holding 96 cores of a mix
of 1.4 GiB per core, filled alone with most of their memory stranded, and then 663 hosts of 96
cores and 96 GiB, each holding 67 cores' worth: 134 hosts for an LP bound of 93. Paired, the rich
hosts take the memory-heavy instances, the others the cpu-heavy, both fill in cores, and the rich
hosts last the stream. Whether they run out depends on how many instances are still to come,
which is not known online; `best_pair` weighs the ways against each other for as many again as
have come, twice as many and so on (change 12).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scheduler.placement.mix import WorkloadMix
from scheduler.placement.overlay import Overlay
from scheduler.placement.plan import Plan
from scheduler.placement.table import CPU, GPU, MEMORY

MARGIN = 0.05


@dataclass(frozen=True)
class Pair:
    cpu_side: int        # the shape (Overlay.shapes) for instances of at most `threshold`
    memory_side: int     # the shape for the others
    threshold: float     # an instance's memory per cpu (in the mix's units: bytes per milli-core)
    holds: float         # the mix's instances per host of the pair, both sides filled


def best_pair(capacity: np.ndarray, available: np.ndarray, mix: WorkloadMix,
              supply: np.ndarray | None = None, seen: float = 0.0) -> Pair | None:
    """The pair of shapes to split the mix between, or None when no pair does MARGIN better than
    the shapes filled alone. `capacity` (S, 2): each shape's cpu and memory; `available` (S,):
    whether the shape has an empty host left (a pair is of hosts that can be opened).

    For a pair (a, b), a poorer in memory per cpu than b: the mix's classes sorted by their
    memory per cpu, the first k to a and the rest to b; a needs max(cpu/a's cpu, memory/a's
    memory) hosts per instance of the mix for its part, b as much for its own. One class is not
    split, so the figure is what routing by the threshold reaches.

    Without `supply`, as many hosts of each shape as wanted: the split that holds most per host.
    With `supply` (S,), the hosts left of each shape (empty ones, and the room on those in use)
    and `seen`, the instances counted so far: the shapes alone fill the best first, each until it
    runs out, and a pair holds the instances until either side runs out, the rest filled alone.
    Each way is weighed for as many instances again as `seen`, twice as many and so on up to half
    what the cluster holds (near a full cluster every way runs out alike), as its hosts against
    the fewest of any way for that many; the way whose worst ratio is least is taken, a pair only
    MARGIN below the shapes alone, and only a pair that holds within MARGIN as much per host as
    the best shape alone (what pairing costs if the stream ends before that shape runs out)."""
    cap = capacity.astype(np.float64)
    if mix.mean_cpu <= 0 or mix.mean_memory <= 0 or np.any(cap <= 0) or not np.any(available):
        return None
    ratio = mix.memory / np.maximum(mix.cpu, 1e-9)
    order = np.argsort(ratio, kind="stable")
    if len(order) < 2:
        return None
    per_host = np.where(available, np.min(cap / mix.mean_cpu_memory, axis=1), 0.0)   # instances
    if supply is None:
        left, demands = np.where(available, np.inf, 0.0), np.ones(1)
        alone = demands / np.max(per_host)
    else:
        left = np.where(available, supply.astype(np.float64), 0.0)
        # (up to half what the shapes alone hold: near a full cluster every way runs out alike,
        # and a pair's stranding at the end of the cluster would weigh more than all its gain)
        most = float(np.sum(per_host * left)) / 2
        if not most > 0:
            return None
        demands = max(seen, 1.0) * 2.0 ** np.arange(64)
        demands = np.append(demands[demands < most], most)
        alone = _alone(demands[None, :], per_host, left[None, :])[0]
    low_cpu = np.concatenate(([0.0], np.cumsum((mix.cpu * mix.weight)[order])))
    low_memory = np.concatenate(([0.0], np.cumsum((mix.memory * mix.weight)[order])))
    high_cpu, high_memory = low_cpu[-1] - low_cpu, low_memory[-1] - low_memory
    shape_ratio = cap[:, MEMORY] / cap[:, CPU]
    ways, hosts_of = [None], [alone[None, :]]    # (Pair), hosts for each demand
    lasting = [0.0]
    for a in np.flatnonzero(available):
        for b in np.flatnonzero(available & (shape_ratio > shape_ratio[a])):
            on_a = np.maximum(low_cpu / cap[a, CPU], low_memory / cap[a, MEMORY])[1:-1]
            on_b = np.maximum(high_cpu / cap[b, CPU], high_memory / cap[b, MEMORY])[1:-1]
            each = on_a + on_b
            if supply is None:
                lasts = np.full(len(each), np.inf)
                hosts = each[:, None] * demands[None, :]
            else:
                lasts = np.minimum(left[a] / on_a, left[b] / on_b)   # instances until a side runs out
                rest = np.repeat(left[None, :], len(each), axis=0)
                rest[:, a] = np.maximum(left[a] - lasts * on_a, 0.0)
                rest[:, b] = np.maximum(left[b] - lasts * on_b, 0.0)
                hosts = (np.minimum(demands[None, :], lasts[:, None]) * each[:, None]
                         + _alone(np.maximum(demands[None, :] - lasts[:, None], 0.0), per_host, rest))
            usable = lasts > 0                                     # (both sides given work)
            if supply is not None:
                # (only pairs that hold about as much per host as the best shape alone: one that
                # holds less is paid for at once, for a stream that may end before the best shape
                # runs out; taken where it held up to a quarter less per host, smallshapes seed
                # 10 296 -> 305 and seed 55 482 -> 491)
                usable &= each <= (1 + MARGIN) / np.max(per_host)
            for k in np.flatnonzero(usable):
                # (midway, as a ratio, between the last class of one side and the first of the
                # other: an instance of neither, or a class's own with its overhead, goes by
                # which it is nearer)
                threshold = float(np.sqrt(ratio[order[k]] * ratio[order[k + 1]]))
                ways.append(Pair(int(a), int(b), threshold, float(1 / each[k])))
                lasting.append(float(lasts[k]))
            hosts_of.append(hosts[usable])
    hosts = np.concatenate(hosts_of)
    worst = np.max(hosts / np.min(hosts, axis=0), axis=1)
    best, enough = None, worst[0] / (1 + MARGIN)
    for i in range(1, len(ways)):
        # (of pairs as good, the one that runs out last: where both sides fill in cpu any split
        # does as well, and one giving most to the scarcer side would run it out first)
        if worst[i] < enough or best is not None and worst[i] == enough and lasting[i] > lasting[best]:
            best, enough = i, worst[i]
    return ways[best] if best is not None else None


def _alone(demands: np.ndarray, per_host: np.ndarray, left: np.ndarray) -> np.ndarray:
    """Hosts that hold `demands` (W, D) instances filled alone, the shapes that hold most first,
    each up to the hosts `left` (W, S) of it; inf beyond what they hold."""
    order = np.argsort(-per_host, kind="stable")
    order = order[per_host[order] > 0]
    each = per_host[order]
    held = np.concatenate((np.zeros((len(left), 1)), np.cumsum(left[:, order] * each, axis=1)), axis=1)
    hosts = np.concatenate((np.zeros((len(left), 1)), np.cumsum(left[:, order], axis=1)), axis=1)
    # the shape each demand ends in: the count of shapes it fills up
    j = np.sum(held[:, None, 1:] < demands[:, :, None], axis=2)
    beyond = j >= len(order)
    j = np.minimum(j, len(order) - 1)
    out = (np.take_along_axis(hosts, j, axis=1)
           + (demands - np.take_along_axis(held, j, axis=1)) / each[j])
    return np.where(beyond & (demands > held[:, -1:] * (1 + 1e-9)), np.inf, out)


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
    changes, or when the learner has counted a step more instances (by its growth). A pair's own
    shapes stay in it while their hosts in use take its instances (the last empty host of a shape
    opened is not the end of its room), until `spent`: an instance of its side found no host of
    its shape.

    First the pair that holds most per host (as many hosts of each shape as wanted), as change 11;
    only where none does (a shape alone holds more), one that lasts where that shape is too few
    for the stream (weighed from the hosts left and the instances counted). Weighing the hosts
    left where a pair already holds more per host was measured and not taken: it swapped a pair
    of a scarce shape used first for one that lasts, and such clusters filled worse (change 9's
    case 3 208 -> 213)."""
    overlay = plan.overlay
    kept = plan.pairing
    step = plan.learner.checked_at if plan.learner is not None else 0
    if not spent and kept is not None and kept[0] is overlay.mix and kept[1] == (overlay.emptied, step):
        return kept[2]
    empty = overlay.empty_by_shape()
    available = empty > 0
    if not spent and kept is not None and kept[0] is overlay.mix and kept[2] is not None:
        available[[kept[2].cpu_side, kept[2].memory_side]] = True
    host = overlay.shapes[0]
    capacity = overlay.capacity[host, :MEMORY + 1]
    # the pair that holds most per host, as many hosts of each shape as wanted; where none does
    # (the shape that holds most alone does), one that lasts where that shape is too few
    pair = best_pair(capacity, available, overlay.mix)
    if pair is None and plan.learner is not None:
        supply = empty + np.array([_room(overlay, rows, capacity[s]) for s, rows in enumerate(overlay.open_by_shape)])
        pair = best_pair(capacity, available, overlay.mix, supply, plan.learner.total)
    plan.pairing = (overlay.mix, (overlay.emptied, step), pair)
    return pair


def _room(overlay: Overlay, rows: np.ndarray, capacity: np.ndarray) -> float:
    """The room left on hosts in use of one shape, in hosts: each's least free share."""
    if not len(rows):
        return 0.0
    free = overlay.free[rows, :MEMORY + 1]
    return float(np.sum(np.min(free / capacity, axis=1)))
