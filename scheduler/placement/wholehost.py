"""Hosts kept whole for the largest shapes seen so far: the weight with which the fragmentation
measure counts a host's free GPUs as lost to a shape of which a host takes at most one instance
(`WorkloadMix.keep`).

FGD (fragmentation.py) weighs each shape by how often it arrives: the chance that the *next*
instance is of that shape. For a shape that takes (nearly) a whole host, e.g. an 8-GPU pod of 120
cores that fits only an empty 128-core 8-GPU host, that chance is tiny (a few in 8,000), and the
hosts that can take it are opened by smaller GPU work long before it comes again (bench/PACKING.md,
"Hosts kept whole"). What such a host is worth to the shape is not the chance that the next
instance is of it but the chance that the host will be needed by it. Any of the hosts where it fits will do, so opening one
costs the shape only when the hosts left may be too few: with as many instances still to come as
have been seen (the only causal estimate of the stream ahead; Poisson around it), the chance that
at least as many come as there are hosts where it fits now. The measure counts the shape at the
larger of that and how often it arrives.

Only while the stream ahead, as much again as has been asked, fits in the GPUs free: keeping a
host whole then costs the other work nothing. Where it does not (an over-full cluster), the kept
host's GPUs would be wanted by the smaller work too, and an 8-GPU pod placed there is eight smaller
ones left out (bench/PACKING.md measures both).

Only GPU shapes of which no host can take two instances (by capacity: cpu, memory or GPUs) are
counted this way: for smaller shapes the hosts' room is shared by many shapes, and FGD's
expectation is the measure. Causal: the shapes and counts of the asks seen so far (the learner's,
all of them, not only the mix's most frequent), the hosts as the plan stands, re-measured at the
next ask after a host stops having room for one (the plan counts them as it reserves); weights
in steps of 1/STEPS.
"""
from __future__ import annotations

import math

import numpy as np

from scheduler.placement.mix import Shape
from scheduler.placement.table import CPU, MEMORY

STEPS = 32


def whole(shape: Shape, capacity: np.ndarray, gpu_capacity: np.ndarray, device_milli: int) -> bool:
    """A GPU shape that fits some host when empty, and of which no host can take two instances."""
    cpu, memory, gpu = shape
    if gpu <= 0:
        return False
    room = fits(shape, capacity[:, CPU], capacity[:, MEMORY], gpu_capacity, device_milli)
    if not room.any():
        return False
    two = fits((2 * cpu, 2 * memory, gpu), capacity[:, CPU], capacity[:, MEMORY], gpu_capacity,
                device_milli, count=2)
    return not two.any()


def fits(shape: Shape, cpu_free: np.ndarray, memory_free: np.ndarray, gpu_free: np.ndarray,
         device_milli: int, count: int = 1) -> np.ndarray:
    """Hosts (rows of `gpu_free`, one host's devices for a 1-d one) with room for `count`
    instances of a shape's GPUs and for its cpu and memory (given already multiplied): a share
    needs devices with room for that many, whole GPUs that many wholly free devices each
    (filters.gpu_fits)."""
    cpu, memory, gpu = shape
    ok = (cpu_free >= cpu) & (memory_free >= memory)
    if gpu < device_milli:   # shares: instances per device
        return ok & (np.add.reduce(gpu_free // gpu, axis=-1) >= count)
    return ok & (np.add.reduce(gpu_free == device_milli, axis=-1) >= count * (gpu // device_milli))


def keep(seen: float, hosts: int) -> float:
    """The weight of a whole-host shape seen `seen` times so far, with room on `hosts` hosts now:
    the chance that the last of them will be needed by it, i.e. that at least as many instances
    of it come as there are such hosts (Poisson, with as many to come as seen), rounded down to
    1/STEPS; 0 where no host has room for it."""
    return float(np.floor(at_least(hosts, seen) * STEPS) / STEPS) if hosts > 0 else 0.0


def at_least(n: int, mean: float) -> float:
    """P(N >= n) for N Poisson with `mean`."""
    if mean <= 0:
        return 0.0
    if n > mean + 12 * math.sqrt(mean) + 12:   # (below 1e-20: nothing to keep)
        return 0.0
    # the terms P(N = k) for k < n, from logs (exp(-mean) underflows for a mean of hundreds)
    log_mean = math.log(mean)
    below = math.fsum(math.exp(k * log_mean - mean - math.lgamma(k + 1)) for k in range(n))
    return min(1.0, max(0.0, 1.0 - below))
