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
"before" values depend only on the host, so they are kept (measures.py) until the host changes.
Devices are counted in the mix's device size, which is the plan's (mix.py, gpumodel.py).
"""
from __future__ import annotations

import numpy as np

from scheduler.placement.mix import WorkloadMix
from scheduler.placement.overlay import Overlay
from scheduler.placement.table import CPU, GPU, MEMORY, devices_after
from scheduler.placement.view import View

FRAGMENTED, STRANDED = 0, 1
FEW_ROWS = 256   # up to this many rows, hosts without free GPUs are scored with the others


def measures(cpu_free: np.ndarray, memory_free: np.ndarray, gpu_free: np.ndarray,
             mix: WorkloadMix) -> np.ndarray:
    """(n, 2): expected fragmented GPU milli and stranded GPU milli of each host."""
    return from_parts(cpu_free, memory_free, gpu_parts(gpu_free, mix), mix)


def gpu_parts(gpu_free: np.ndarray, mix: WorkloadMix) -> np.ndarray:
    """(n, 1 + 2S) int64, what the measures take from the GPU devices alone (S: the mix's
    shapes): each host's free GPU milli; per shape, 1 if the GPUs have room for it; per shape, the
    free milli on devices with less free than it asks. An instance without GPUs leaves them as
    they are, so its "after" reuses the host's parts (the Plan keeps them until the host changes)."""
    n, s = len(gpu_free), len(mix.weight)
    out = np.empty((n, 1 + 2 * s), dtype=np.int64)
    if n == 0:
        return out
    # (the ufuncs' reduce: ndarray.sum and .max cost a Python wrapper each, on the hot path)
    out[:, 0] = np.add.reduce(gpu_free, axis=1)
    largest = np.maximum.reduce(gpu_free, axis=1, initial=0)
    whole = np.add.reduce(gpu_free == mix.device_milli, axis=1)
    # what each shape needs of the GPUs: a share one device with room, whole GPUs free devices
    room = np.where(mix.share, largest[:, None], whole[:, None] * mix.device_milli)
    np.greater_equal(room, mix.gpu, out=out[:, 1:1 + s], casting="unsafe")
    out[:, 1 + s:] = _below(gpu_free, mix.thresholds, mix.device_milli)[:, mix.threshold_index]
    return out


def from_parts(cpu_free: np.ndarray, memory_free: np.ndarray, parts: np.ndarray,
               mix: WorkloadMix) -> np.ndarray:
    """measures() given the hosts' gpu_parts()."""
    n, s = len(cpu_free), len(mix.weight)
    out = np.empty((n, 2))
    if n == 0:
        return out
    total = parts[:, 0]
    # (in place where it can be: a refresh's arrays are a few rows, their cost is the calls)
    fits = cpu_free[:, None] >= mix.cpu
    fits &= memory_free[:, None] >= mix.memory
    np.logical_and(fits, parts[:, 1:1 + s], out=fits)
    # a row-by-row sum, not a matrix product: BLAS may round a row differently with the number of
    # rows, and the same host must score the same in a refresh of one row or of all
    # (into a fresh array: an `out=` column could change the order the reduction adds in)
    below = parts[:, 1 + s:]
    if mix.fgd:   # FGD: a shape that does not fit loses all the host's free GPUs
        lost = total[:, None]
    else:   # where only its cpu or memory does not fit, those it would not fragment count in part
        lost = np.where(parts[:, 1:1 + s] != 0, below + mix.misfit * (total[:, None] - below), total[:, None])
    out[:, FRAGMENTED] = np.add.reduce(np.where(fits, below, lost) * mix.frag_weight, axis=1)
    usable = total.astype(np.float64)
    if mix.cpu_per_gpu > 0:
        np.minimum(usable, np.maximum(cpu_free, 0) * (mix.device_milli / mix.cpu_per_gpu), out=usable)
    if mix.memory_per_gpu > 0:
        np.minimum(usable, np.maximum(memory_free, 0) * (mix.device_milli / mix.memory_per_gpu), out=usable)
    np.subtract(total, usable, out=out[:, STRANDED])
    return out


def _below(gpu_free: np.ndarray, thresholds: np.ndarray, device_milli: int) -> np.ndarray:
    """(n, T): free milli on each host's devices (of `device_milli`) that have less free than
    each threshold (at most `device_milli`)."""
    n, g = gpu_free.shape
    if n * g * len(thresholds) < 50_000:   # few hosts (a refresh of changed rows): broadcast
        devices = gpu_free[:, None, :]
        return np.add.reduce(devices * (devices < thresholds[None, :, None]), axis=2)
    # many hosts: sort each host's devices, and find every threshold's place in one searchsorted
    # over all hosts (each host's values lifted above the previous host's)
    ordered = np.sort(gpu_free, axis=1)
    prefix = np.zeros((n, g + 1), dtype=np.int64)
    np.cumsum(ordered, axis=1, out=prefix[:, 1:])
    step = 2 * device_milli + 2
    lift = np.arange(n, dtype=np.int64)[:, None] * step
    position = np.searchsorted((ordered + lift).ravel(), (lift + thresholds[None, :]).ravel())
    count = position.reshape(n, len(thresholds)) - np.arange(n)[:, None] * g
    return np.take_along_axis(prefix, count, axis=1)


def gradients(view: View) -> np.ndarray | None:
    """(n, 2) scores in [0, 1]: 0.5 - (after - before) / (2 x the largest host's GPU milli), or
    None (0.5 on every row) when there is no mix yet or none of the rows' hosts has a GPU.
    Computed once per view: both GPU scorers read it."""
    return view.shared("gpu gradients", _view_gradients)


def _view_gradients(view: View) -> np.ndarray | None:
    hosts = view.overlay
    mix = hosts.mix
    if mix is None or hosts.gpu_scale == 0:
        return None
    index = view.index
    # a host with no free GPU (none at all, or all taken) has nothing to fragment or strand,
    # before or after an instance without GPUs (the only kind it can take): both measures are 0
    # there, so its scores are exactly 0.5, computed or not
    has_gpu = hosts.gpu_left[index] > 0
    if not np.logical_or.reduce(has_gpu):
        return None
    if len(index) <= FEW_ROWS or np.logical_and.reduce(has_gpu):
        # a refresh of a few rows costs its numpy calls, not its rows: compute them all rather
        # than pick out those with GPUs
        return _gradients(hosts, index, view.free, view.left_after, view.gpu_free, view.need, mix)
    out = np.full((len(index), 2), 0.5)
    at = index[has_gpu]
    out[has_gpu] = _gradients(hosts, at, view.free[has_gpu], view.left_after[has_gpu],
                              hosts.gpu_free[at], view.need, mix)
    return out


def _gradients(hosts: Overlay, index: np.ndarray, free: np.ndarray, left: np.ndarray,
               gpu_free: np.ndarray, need: np.ndarray, mix: WorkloadMix) -> np.ndarray:
    """The scores of hosts `index`, whose free amounts are `free` (cpu and memory `left` after
    placing the instance) and devices `gpu_free`."""
    # "before" depends on the host alone: it is kept until the host changes, its GPU parts until
    # its devices change (so a host whose "before" is known has its parts known too)
    kept = hosts.measures
    stale = kept.stale("gpu", index)
    g = int(need[GPU])
    if stale is None:
        before = kept.known("gpu", index)
        if g <= 0:
            parts = kept.known("gpu parts", index)
        else:
            parts = gpu_parts(devices_after(gpu_free, g, hosts.device_milli), mix)
        after = from_parts(left[:, CPU], left[:, MEMORY], parts, mix)
    else:
        # the stale hosts' "before" and every host's "after" in one call each: a refresh
        # typically has one stale host, and the cost is the number of numpy calls, not rows.
        # A host's GPU parts outlive its "before": a reservation without GPUs keeps them
        k = len(stale)
        stale_parts = kept.stale("gpu parts", index)
        if g <= 0:   # an instance without GPUs leaves the devices as they are: after = before's parts
            if stale_parts is not None:
                kept.remember("gpu parts", index, stale_parts, gpu_parts(gpu_free[stale_parts], mix),
                              devices_only=True)
            parts = kept.known("gpu parts", index)
            new_parts = parts[stale]
        else:
            after_devices = devices_after(gpu_free, g, hosts.device_milli)
            if stale_parts is None:
                parts = gpu_parts(after_devices, mix)
            else:
                both = gpu_parts(np.concatenate((gpu_free[stale_parts], after_devices)), mix)
                kept.remember("gpu parts", index, stale_parts, both[:len(stale_parts)], devices_only=True)
                parts = both[len(stale_parts):]
            new_parts = kept.known("gpu parts", index[stale])
        both_left = np.concatenate((free[stale, :MEMORY + 1], left))
        measured = from_parts(both_left[:, CPU], both_left[:, MEMORY], np.concatenate((new_parts, parts)), mix)
        before = kept.remember("gpu", index, stale, measured[:k])
        after = measured[k:]
    if g <= 0 and mix.keep_off > 0:
        after[:, FRAGMENTED] += kept_off(need, free, parts[:, 0], mix.keep_off)
    if g > 0 and len(hosts.gpu_reserved):   # the GPUs it takes from those constrained work needs
        after[:, FRAGMENTED] += hosts.gpu_reserved[index] * g
    return 0.5 - (after - before) / (2 * hosts.gpu_scale)


def kept_off(need: np.ndarray, free: np.ndarray, gpus: np.ndarray, strength: float) -> np.ndarray:
    """The GPU milli that an instance without GPUs (`need`) strands on hosts with `free` cpu and
    memory and `gpus` free GPU milli when such work is kept off their cpu and memory
    (`WorkloadMix.keep_off`, scarcity.py): the share of the host's free cpu or memory it takes
    (the larger), as that share of its free GPUs, times `strength`."""
    taken = np.maximum(need[CPU] / np.maximum(free[:, CPU], 1), need[MEMORY] / np.maximum(free[:, MEMORY], 1))
    return strength * (gpus * np.minimum(taken, 1.0))
