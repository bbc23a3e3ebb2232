"""GPU fragmentation and stranding: the measures behind the packyard policy's first two scorers.

On the Alibaba trace GPUs are the scarce resource (98% of them asked for), and a GPU is lost to
packing in two ways:
- fragmented: free milli on devices too small for the shares (or whole GPUs) that arrive: FGD's
  expected fragmentation ("Beware of Fragmentation", Weng et al., ATC '23), averaged over the
  workload mix, with all of a host's free GPU counted for a shape that no longer fits there;
- stranded: free GPUs whose host has run out of the cpu or memory to sell with them, counted at
  the mix's median cpu and memory per GPU (a sharper form of FGD's "does not fit" term).

Both are measured per host before and after placing the instance; the scorers turn the change
into [0, 1] on one scale for all hosts (the largest host's GPUs), 0.5 meaning no change. The
"before" values depend only on the host, so the Plan keeps them until the host changes.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from scheduler.placement.mix import WorkloadMix
from scheduler.placement.table import CPU, GPU_DEVICE_MILLI, MEMORY

if TYPE_CHECKING:
    from scheduler.placement.plan import View

FRAGMENTED, STRANDED = 0, 1


def measures(cpu_free: np.ndarray, memory_free: np.ndarray, gpu_free: np.ndarray,
             mix: WorkloadMix) -> np.ndarray:
    """(n, 2): expected fragmented GPU milli and stranded GPU milli of each host."""
    n = len(cpu_free)
    out = np.zeros((n, 2))
    if n == 0:
        return out
    total = gpu_free.sum(axis=1)
    largest = gpu_free.max(axis=1, initial=0)
    whole = (gpu_free == GPU_DEVICE_MILLI).sum(axis=1)
    # what each shape needs of the GPUs: a share one device with room, whole GPUs free devices
    room = np.where(mix.share, largest[:, None], whole[:, None] * GPU_DEVICE_MILLI)
    fits = (cpu_free[:, None] >= mix.cpu) & (memory_free[:, None] >= mix.memory) & (room >= mix.gpu)
    below = _below(gpu_free, mix.thresholds)
    out[:, FRAGMENTED] = np.where(fits, below[:, mix.threshold_index], total[:, None]) @ mix.weight
    usable = total.astype(np.float64)
    if mix.cpu_per_gpu > 0:
        usable = np.minimum(usable, np.maximum(cpu_free, 0) * (GPU_DEVICE_MILLI / mix.cpu_per_gpu))
    if mix.memory_per_gpu > 0:
        usable = np.minimum(usable, np.maximum(memory_free, 0) * (GPU_DEVICE_MILLI / mix.memory_per_gpu))
    out[:, STRANDED] = total - usable
    return out


def _below(gpu_free: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(n, T): free milli on each host's devices that have less free than each threshold."""
    n, g = gpu_free.shape
    if n * g * len(thresholds) < 50_000:   # few hosts (a refresh of changed rows): broadcast
        devices = gpu_free[:, None, :]
        return (devices * (devices < thresholds[None, :, None])).sum(axis=2)
    # many hosts: sort each host's devices, and find every threshold's place in one searchsorted
    # over all hosts (each host's values lifted above the previous host's)
    ordered = np.sort(gpu_free, axis=1)
    prefix = np.zeros((n, g + 1), dtype=np.int64)
    np.cumsum(ordered, axis=1, out=prefix[:, 1:])
    step = 2 * GPU_DEVICE_MILLI + 2
    lift = np.arange(n, dtype=np.int64)[:, None] * step
    position = np.searchsorted((ordered + lift).ravel(), (lift + thresholds[None, :]).ravel())
    count = position.reshape(n, len(thresholds)) - np.arange(n)[:, None] * g
    return np.take_along_axis(prefix, count, axis=1)


def gradients(view: View) -> np.ndarray | None:
    """(n, 2) scores in [0, 1]: 0.5 - (after - before) / (2 x the largest host's GPU milli), or
    None (0.5 on every row) when there is no mix yet or none of the rows' hosts has a GPU."""
    plan = view.plan
    mix = plan.mix
    if mix is None or plan.gpu_scale == 0:
        return None
    has_gpu = plan.has_gpu[view.index]
    if not has_gpu.any():   # hosts without GPUs: nothing to fragment or strand, 0.5 on every row
        return None
    if not has_gpu.all():
        out = np.full((len(view), 2), 0.5)
        out[has_gpu] = _gradients(plan.view(view.need, view.index[has_gpu]), mix, plan.gpu_scale)
        return out
    return _gradients(view, mix, plan.gpu_scale)


def _gradients(view: View, mix: WorkloadMix, scale: int) -> np.ndarray:
    free = view.free
    # "before" depends on the host alone: the plan keeps it until the host changes
    before = view.plan.before("gpu", view, lambda at: measures(
        free[at, CPU], free[at, MEMORY], view.gpu_free[at], mix))
    after = measures(free[:, CPU] - view.need[CPU], free[:, MEMORY] - view.need[MEMORY],
                     view.gpu_free_after, mix)
    return 0.5 - (after - before) / (2 * scale)
