"""Where a cpu-only shape's room lies, as the plan can know it causally: the weight with which the
fragmentation measure counts a host's free GPUs as lost to a cpu-only shape that no longer fits
there for lack of cpu or memory (`WorkloadMix.misfit`).

FGD (fragmentation.py) counts all of a host's free GPUs as fragmented for every shape that does not
fit beside them, CPU-only shapes included: it keeps a GPU host's cpu for the GPU work to come, and
with it the GPUs usable. That pays where CPU-only work has room on hosts without free GPUs (it need
not take a GPU host's cpu at all), and costs hosts where most of its room is on GPU hosts: there it
must take their cpu anyway, and the measure only makes the placer open more GPU hosts than it
fills (bench/PACKING.md: the trace with every GPU pod a share, G2 hosts left at 82% cpu). So a
cpu-only shape counts the GPUs with the share of the cluster's room for it (instances it could
still take, each host on its own) that lies on hosts with no free GPU: 1 (FGD) where it all does,
0 where none does. GPU shapes keep FGD's count. Causal: the hosts as the plan stands, re-measured
when the share of the cluster's cpu or GPUs taken has moved by 1/STEPS, or the mix changed.

The same clock measures how strongly work without GPUs is kept off the cpu and memory of hosts
with free GPUs (`keep_off`, `WorkloadMix.keep_off`): where the GPU hosts are short of cpu or memory
for the work the mix brings with their free GPUs, and the CPU-only hosts have room for its share
without GPUs, such work placed beside free GPUs takes their cpu from them (bench/PACKING.md, the
mixed hosts: CPU-only containers filled the GPU hosts' cpu while hundreds of CPU-only hosts stayed
empty, and the last 8-GPU pods found no host).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from scheduler.placement.mix import Where, WorkloadMix
from scheduler.placement.table import CPU, MEMORY

# re-measured in steps of 1/STEPS of the cluster's cpu and GPUs taken, the weights kept in steps of
# 1/STEPS: each change of the weights drops every cached score and measure
STEPS = 32


def misfit(free: np.ndarray, gpu_left: np.ndarray, mix: WorkloadMix) -> np.ndarray:
    """(S,) the weights: for each cpu-only shape of the mix that the fragmentation measure counts,
    the share of its room (`free`: (N, >=2) each host's free cpu and memory) on hosts with no
    free GPU (`gpu_left` 0), rounded down to 1/STEPS (1 where there is no room at all); 1 for the
    other shapes."""
    out = np.ones(len(mix.weight))
    counted = np.flatnonzero((mix.gpu == 0) & (mix.frag_weight > 0))
    if counted.size == 0:
        return out
    free = np.maximum(free[:, [CPU, MEMORY]], 0)
    room = None
    for resource, asks in ((CPU, mix.cpu[counted]), (MEMORY, mix.memory[counted])):
        fits = free[:, resource, None] // np.maximum(asks, 1)
        fits[:, asks <= 0] = np.iinfo(np.int64).max // (len(free) + 1)   # (a shape asking none)
        room = fits if room is None else np.minimum(room, fits)
    total = np.add.reduce(room, axis=0)
    elsewhere = np.add.reduce(room[gpu_left <= 0], axis=0)
    share = np.where(total > 0, elsewhere / np.maximum(total, 1), 1.0)
    out[counted] = np.floor(share * STEPS) / STEPS
    return out


def clock(cpu_taken: int, cpu_total: int, gpu_taken: int, gpu_total: int) -> tuple[int, int]:
    """The steps of 1/STEPS of the cluster's cpu and GPU milli taken: the weights are re-measured
    when it moves."""
    return (cpu_taken * STEPS // max(cpu_total, 1), gpu_taken * STEPS // max(gpu_total, 1))


def keep_off(free: np.ndarray, gpu_left: np.ndarray, mix: WorkloadMix) -> float:
    """How strongly work without GPUs is kept off the cpu and memory of hosts with free GPUs
    (`WorkloadMix.keep_off`, 0..1 in steps of 1/STEPS), from the work the mix brings with the GPUs
    still free (as many instances as fill the free GPU milli at the mix's GPU milli per instance):
    how short the hosts with free GPUs are of cpu (or memory) for both its GPU work and its work
    without GPUs (the share of the latter they cannot hold beside the former: 0 when they hold
    both, 1 when they hold none of it), times how much room
    the hosts with no free GPU (CPU-only hosts, open or empty, and GPU hosts whose GPUs are all
    taken) have to spare once they hold all of the latter (the share of their room left: 0 when it
    does not fit there). Where the GPU hosts hold it beside their GPUs' work, or it must take their
    cpu anyway, the placer packs it as before. 0 too when the mix has no work with or without GPUs,
    and under the pooled GPU model, where the fragmentation measure does not count the shapes
    without GPUs (mix.frag_weight: a host's GPUs are one amount there, kept for whole-GPU work)."""
    cpu_only = mix.gpu == 0
    gpu_asked = float(mix.weight[~cpu_only] @ mix.gpu[~cpu_only])
    if gpu_asked <= 0 or not np.logical_or.reduce(cpu_only & (mix.frag_weight > 0)):
        return 0.0
    to_come = float(np.add.reduce(np.maximum(gpu_left, 0))) / gpu_asked   # instances of the mix
    has_gpu = gpu_left > 0
    short, spare = 0.0, 1.0
    for resource, asks in ((CPU, mix.cpu), (MEMORY, mix.memory)):
        left = np.maximum(free[:, resource], 0)
        without = float(mix.weight[cpu_only] @ asks[cpu_only]) * to_come
        both = float(mix.weight[~cpu_only] @ asks[~cpu_only]) * to_come + without
        if without > 0:
            short = max(short, (both - float(np.add.reduce(left[has_gpu]))) / without)
            spare = min(spare, 1.0 - without / max(float(np.add.reduce(left[~has_gpu])), 1.0))
    return float(np.floor(min(max(short, 0.0), 1.0) * max(spare, 0.0) * STEPS) / STEPS)


def reserved(gpu_left: np.ndarray, mix: WorkloadMix, hosts_of: Callable[[Where], np.ndarray]) -> np.ndarray | None:
    """(N,) how much of each host's free GPUs the work restricted to it by constraints will need
    (`Overlay.gpu_reserved`, 0..1 in steps of 1/STEPS), or None when the mix has no such work: the
    fragmentation measure counts the GPU milli an instance takes there as that share lost, so
    that work which may run anywhere leaves the few hosts of a GPU model (or any constrained set)
    to the work that may run only there (bench/PACKING.md, the trace with GPU models asked for:
    1-GPU pods of any model filled the T4, P100 and V100 hosts, then the pods asking for those
    models found none).

    For each set of hosts some of the mix's GPU work is restricted to (`hosts_of`: WorkloadMix.where
    -> its hosts' mask), its pressure: its share of the GPU milli the mix asks, over the share of the free GPU
    milli on those hosts (as much work to come as fills the free GPUs, as `keep_off` assumes): 1
    when that work alone needs all of the set's free GPUs. A host's is the sum over the sets it is
    in, at most 1."""
    if not mix.constrained:
        return None
    gpu_asked = float(mix.weight @ mix.gpu)
    free = np.maximum(gpu_left, 0).astype(np.float64)
    total = float(np.add.reduce(free))
    if gpu_asked <= 0 or total <= 0:
        return None
    demand: dict[Where, float] = {}   # GPU milli an instance of the mix asks, restricted to each set
    for k in np.flatnonzero(mix.gpu > 0):
        for where, share in mix.where[k].items():
            if where is not None:
                demand[where] = demand.get(where, 0.0) + float(mix.weight[k]) * share * float(mix.gpu[k])
    out = np.zeros(len(free))
    for where, asked in demand.items():
        hosts = hosts_of(where)
        supply = float(np.add.reduce(free[hosts]))
        if supply > 0:
            out[hosts] += (asked / gpu_asked) / (supply / total)
    return np.floor(np.minimum(out, 1.0) * STEPS) / STEPS
