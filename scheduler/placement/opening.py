"""Opening a host: once the scores have chosen an empty host, which empty host.

Two of the policy's measures are the right ones for *whether* to open a host (the engine's
selection, which this leaves as it is) but the wrong ones for *which*, on clusters whose hosts
differ in proportions (bench/PACKING.md, change 10):

- `balance` scores an empty host by how the instance moves the host's own stranded share against
  the mix's *average* instance. A host of nearly the mix's proportion (32 cores, 64 GiB for a mix
  of 2.03 GiB per core) then strands a little for every memory-heavy instance, so those opened
  hosts of another shape (16 cores, 64 GiB), and the cpu-heavy ones hosts of a third (32 cores,
  32 GiB): 511 hosts where 388 hold the work. But a host holding n instances drawn from the mix
  gets cpu and memory in the mix's proportion give or take `WorkloadMix.spread` x sqrt(n)
  average instances. An empty host left within that of the mix's proportion once the instance is
  placed (in average instances: |cpu units - memory units| <= spread x sqrt(units)) is no loss:
  it counts as if balance gave it 0.5. One left further off keeps its loss (a memory-heavy
  instance on a host already short of memory).
- `occupied` ranks empty hosts by their size, cpu and memory as shares of the largest host's.
  A host with 8 GiB per core is "large" by its memory, yet holds fewer of a 1.7 GiB-per-core mix
  than a host of 96 cores and 192 GiB (136 against 204 average instances): 148 hosts opened
  where 99 hold the work. Here an empty host's size is the average instances it holds, in the
  same half-weight `occupied` gives it.

On a cluster with GPU hosts the engine's choice stands: which hosts without GPUs to open is
bound up there with the GPU hosts' room (the GPU scorers, scarcity.py), and opening by these two
measures moved the trace's own lists by up to 100 hosts (openb cpu100, GPUs pooled: 1,241 ->
1,341 hosts; three lists turned behind k8s-default on hosts). With one host shape there is
nothing to choose. Whether to open stays the engine's: the same undone loss in every empty
host's score also changed that, and opened more hosts in all (a drawn VM mix on hosts of one
shape: 232 -> 260).
"""
from __future__ import annotations

import numpy as np

from scheduler.placement.plan import Plan
from scheduler.placement.scorers import stranded_share
from scheduler.placement.table import CPU, GPU, MEMORY

TIE = 1e-3   # the raw size's part: only between hosts that hold as many of the mix's instances


def choose(plan: Plan, working: np.ndarray, best: int, need: np.ndarray) -> int:
    """The host to open for an instance reserving `need`, where the engine chose `best`, an empty
    host; `working`: the ask's scores over all hosts (-inf where infeasible). `best` itself when
    the policy does not weigh the mix (the peers' policies), or on a cluster with GPU hosts."""
    overlay = plan.overlay
    mix = overlay.mix
    balance, occupied = plan.balance_weight, plan.occupied_weight
    if overlay.gpu_scale > 0 or mix is None or balance + occupied == 0 or need[GPU] > 0:
        return best
    host, shape_of = overlay.shapes
    if len(host) < 2:
        return best
    # a host scoring lower than `best` by more than these terms can give back cannot win
    give = (balance + occupied) * 0.5 + plan.binpack_weight
    rows = np.flatnonzero((working >= working[best] - give) & (overlay.in_use == 0))
    if len(rows) < 2:
        return best
    # every term below is one of the host's shape (an empty host's free cpu and memory are its
    # capacity, the scale is one for all hosts): computed per shape, gathered per host
    free = overlay.capacity[host, :MEMORY + 1]
    left = free - need[:MEMORY + 1]
    scale = overlay.cpu_memory_scale[host]
    mean = mix.mean_cpu_memory
    # balance's loss on an empty host (its score is 0.5 - loss there), undone where the host is
    # left near the mix's proportion
    loss = np.maximum((stranded_share(left, scale, mean) - stranded_share(free, scale, mean)) / 4, 0.0)
    units = np.maximum(left, 0) / mean
    gap = units[:, CPU] - units[:, MEMORY]
    near = gap * gap <= mix.spread * mix.spread * np.minimum(units[:, CPU], units[:, MEMORY])
    # occupied's half of an empty host's size, the size counted in the mix's average instances
    # (those the host holds empty, over the most any host holds) instead
    holds = np.minimum(free[:, CPU] / mean[CPU], free[:, MEMORY] / mean[MEMORY])
    holds /= max(float(holds.max(initial=0)), 1e-9)
    size = overlay.size[host]
    undo = balance * loss * near + occupied * 0.5 * (holds - size)
    # binpack's tie-break (the host fullest after placing) is for hosts in use: among empty ones
    # it picks the smaller of two that hold as many (a 16 GiB host over a 64 GiB one of 8 cores
    # each: smallshapes seed 5, 240 -> 257 hosts). Taken out here; the larger of equals is chosen,
    # which has the room for instances that stray from the mix's proportion
    used = np.minimum(need[:MEMORY + 1] * overlay.inv_capacity[host, :MEMORY + 1]
                      + overlay.no_capacity[host, :MEMORY + 1], 1.0)
    undo += occupied * 0.5 * TIE * size - plan.binpack_weight * (used[:, CPU] + used[:, MEMORY]) / 2
    score = working[rows] + undo[shape_of[rows]]
    # (argmax: the first of equals, the lowest host index, as the engine's selection)
    return int(rows[np.argmax(score)])
