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
"""
from __future__ import annotations

import numpy as np

from scheduler.placement.mix import WorkloadMix
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
