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
    # free milli on devices below each distinct threshold min(gpu, 1 GPU): (n, T)
    devices = gpu_free[:, None, :]
    below = (devices * (devices < mix.thresholds[None, :, None])).sum(axis=2)
    out[:, FRAGMENTED] = np.where(fits, below[:, mix.threshold_index], total[:, None]) @ mix.weight
    usable = total.astype(np.float64)
    if mix.cpu_per_gpu > 0:
        usable = np.minimum(usable, np.maximum(cpu_free, 0) * (GPU_DEVICE_MILLI / mix.cpu_per_gpu))
    if mix.memory_per_gpu > 0:
        usable = np.minimum(usable, np.maximum(memory_free, 0) * (GPU_DEVICE_MILLI / mix.memory_per_gpu))
    out[:, STRANDED] = total - usable
    return out


def gradients(view: View) -> np.ndarray | None:
    """(n, 2) scores in [0, 1]: 0.5 - (after - before) / (2 x the largest host's GPU milli), or
    None when there is no mix yet or no host has a GPU."""
    plan = view.plan
    mix = plan.mix
    if mix is None or plan.gpu_scale == 0:
        return None
    free = view.free
    before = plan.measured("gpu", view, lambda rows: measures(
        free[rows, CPU], free[rows, MEMORY], view.gpu_free[rows], mix))
    after = measures(free[:, CPU] - view.need[CPU], free[:, MEMORY] - view.need[MEMORY],
                     view.gpu_free_after, mix)
    return 0.5 - (after - before) / (2 * plan.gpu_scale)
