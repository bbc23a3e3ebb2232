"""A refresh as one compiled loop over its rows: the dynamic filters and the scorers of
scorers.py (fragmentation.py's GPU measures included), fused.

Almost every placement re-evaluates the handful of hosts (1-6) reserved on since its class last
looked. Through numpy that is ~150 calls on arrays of a few rows, each ~0.5-1 µs whatever the
rows: ~105 µs a placement, most of the engine's time (bench/PACKING.md, "Fourth pass"). Here the
same arithmetic runs row by row in a numba-compiled function, in the same float operations and
the same order as the numpy path, so a host scores the same to the last bit either way:
numpy's `np.add.reduce` over the mix's shapes is its pairwise summation (`_pairwise`), a Python
float constant joins the sum where `engine._score` adds it, a GPU scorer is the constant 0.5 on
the same refreshes (no scored row with a free GPU). tests/scheduler/placement/test_kernel.py
compares both on random rows and on all hosts, bit for bit. A refresh of all hosts (a new class,
a changed mix) runs here too: ~1 ms at 10,000 hosts against numpy's ~3.

The engine keeps numpy for policies with a scorer not fused here, for the reference pipeline
(measures not kept), and without numba (not installed: `for_plan` returns None).

The compiled code is cached on disk (numba's cache: beside this file, else the user's cache
directory, else a directory of this user's alone under the temporary directory, else none): a fresh
process loads it in ~0.3 s instead of compiling for ~3 s (CPU).
"""
from __future__ import annotations

import logging
import os
import stat
import tempfile
from collections.abc import Callable, Sequence

import numpy as np

from scheduler.placement.overlay import Overlay
from scheduler.placement.table import GPU

# numpy adds up to this many values in one block of its pairwise sum (PW_BLOCKSIZE); a mix of
# more shapes (not learned ones: MixLearner keeps 64) is left to numpy
PAIRWISE_MAX = 128

# the scorers fused here, as the kernel's codes
FRAGMENTATION, STRANDING, BALANCE, OCCUPIED, BINPACK, LEAST, BALANCED = range(7)
CODES = {"fragmentation": FRAGMENTATION, "stranding": STRANDING, "balance": BALANCE,
         "occupied": OCCUPIED, "binpack": BINPACK, "most_allocated": BINPACK,
         "least_allocated": LEAST, "balanced_allocation": BALANCED}


def _compiler() -> tuple[Callable[[Callable], Callable], bool]:
    """numba's njit, caching where it can write, and True; without numba, the identity and False."""
    try:
        import numba
    except ImportError:   # the numpy path does everything, only slower
        return (lambda function: function), False

    def compile_(function: Callable) -> Callable:
        try:
            return numba.njit(cache=True)(function)
        except RuntimeError:   # neither the package's directory nor the user's cache is writable
            pass
        private = private_cache_dir()
        if private is not None:
            numba.config.CACHE_DIR = private
            try:
                return numba.njit(cache=True)(function)
            except RuntimeError:
                pass
        return numba.njit(function)   # compiled in every process
    return compile_, True


def private_cache_dir() -> str | None:
    """A cache directory under the temporary directory that only this user can write, or None.
    numba's cache files are pickles: loading some another user put there would run their code."""
    path = os.path.join(tempfile.gettempdir(), f"packyard-numba-{os.getuid()}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        return None   # a symlink, someone else's, or writable by others
    return path


_jit, COMPILED = _compiler()


@_jit
def _pairwise(a: np.ndarray, n: int) -> float:
    """numpy's pairwise sum of a[:n] (DOUBLE_pairwise_sum), as np.add.reduce adds a row of up to
    PAIRWISE_MAX values (above, numpy splits the row in halves: Fused leaves such mixes to numpy)."""
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[0], a[1], a[2], a[3]
    r4, r5, r6, r7 = a[4], a[5], a[6], a[7]
    i = 8
    end = n - n % 8
    while i < end:
        r0 += a[i]
        r1 += a[i + 1]
        r2 += a[i + 2]
        r3 += a[i + 3]
        r4 += a[i + 4]
        r5 += a[i + 5]
        r6 += a[i + 6]
        r7 += a[i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[i]
        i += 1
    return res


@_jit
def _gpu_parts(devices, device_milli, mix_gpu, share, thresholds, threshold_index, below, out):
    """fragmentation.gpu_parts of one host's devices, into `out` (1 + 2S,)."""
    total = 0
    largest = 0
    whole = 0
    for d in range(len(devices)):
        v = devices[d]
        total += v
        if v > largest:
            largest = v
        if v == device_milli:
            whole += 1
    out[0] = total
    s = len(mix_gpu)
    for k in range(s):
        room = largest if share[k] else whole * device_milli
        out[1 + k] = 1 if room >= mix_gpu[k] else 0
    for t in range(len(thresholds)):
        acc = 0
        for d in range(len(devices)):
            if devices[d] < thresholds[t]:
                acc += devices[d]
        below[t] = acc
    for k in range(s):
        out[1 + s + k] = below[threshold_index[k]]


@_jit
def _from_parts(cpu_free, memory_free, parts, mix_cpu, mix_memory, frag_weight, cpu_factor,
                memory_factor, misfit, fgd, terms):
    """fragmentation.from_parts of one host: (fragmented, stranded)."""
    s = len(mix_cpu)
    total = parts[0]
    for k in range(s):
        below = parts[1 + s + k]
        if cpu_free >= mix_cpu[k] and memory_free >= mix_memory[k] and parts[1 + k] != 0:
            terms[k] = below * frag_weight[k]
        elif not fgd and parts[1 + k] != 0:   # only its cpu or memory does not fit
            terms[k] = (below + misfit[k] * (total - below)) * frag_weight[k]
        else:
            terms[k] = total * frag_weight[k]
    fragmented = 0.0 + _pairwise(terms, s)   # np.add.reduce starts from its identity, 0
    usable = float(total)
    if cpu_factor > 0:
        usable = min(usable, max(cpu_free, 0) * cpu_factor)
    if memory_factor > 0:
        usable = min(usable, max(memory_free, 0) * memory_factor)
    return fragmented, total - usable


@_jit
def _stranded_share(cpu, memory, scale_cpu, scale_memory, mean_cpu, mean_memory):
    """scorers.stranded_share of one host."""
    cpu = max(cpu, 0)
    memory = max(memory, 0)
    units = min(cpu / mean_cpu, memory / mean_memory)
    return (cpu - units * mean_cpu) / scale_cpu + (memory - units * mean_memory) / scale_memory


@_jit
def _refresh(rows, need, static_ok, floor, score,
             device_milli, free, allocated, inv_capacity, no_capacity, in_use, size_cpu_memory,
             size_gpu, scale, gpu_free, gpu_left, gpu_scale, codes, weights,
             has_mix, balanced_mix, mean_cpu, mean_memory, mix_cpu, mix_memory, mix_gpu, share,
             thresholds, threshold_index, frag_weight, cpu_factor, memory_factor, misfit, fgd,
             balance_store, balance_valid, gpu_store, gpu_valid, parts_store, parts_valid):
    """engine._refresh of `rows` (host indices): -inf where a filter fails, else the weighted
    scores, written into `score`; the hosts' "before" measures kept as the numpy path keeps them."""
    n = len(rows)
    g = need[GPU]
    size = size_gpu if g > 0 else size_cpu_memory   # scorers.occupied
    ok = np.empty(n, dtype=np.bool_)
    any_gpu = False
    for j in range(n):
        h = rows[j]
        fit = static_ok[h] and free[h, 0] >= floor[0] and free[h, 1] >= floor[1] and free[h, 2] >= floor[2]
        if fit and g > 0:
            if g < device_milli:
                largest = 0
                for d in range(gpu_free.shape[1]):
                    if gpu_free[h, d] > largest:
                        largest = gpu_free[h, d]
                fit = largest >= g
            else:
                whole = 0
                for d in range(gpu_free.shape[1]):
                    if gpu_free[h, d] == device_milli:
                        whole += 1
                fit = whole >= g // device_milli
        ok[j] = fit
        if fit and gpu_left[h] > 0:
            any_gpu = True
    # as fragmentation.gradients: None (0.5, a constant) when no scored row has a free GPU
    gradients = has_mix and gpu_scale != 0 and any_gpu
    s = len(mix_cpu)
    terms = np.empty(s)
    below = np.empty(len(thresholds), dtype=np.int64)
    after_parts = np.empty(1 + 2 * s, dtype=np.int64)
    devices = np.empty(gpu_free.shape[1], dtype=np.int64)
    for j in range(n):
        h = rows[j]
        if not ok[j]:
            score[h] = -np.inf
            continue
        cpu_left = free[h, 0] - need[0]
        memory_left = free[h, 1] - need[1]
        # a host with no free GPU scores exactly 0.5 on both (both measures are 0 before and
        # after: fragmentation._view_gradients), computed or not
        fragmented = stranded = 0.5
        if gradients and gpu_left[h] > 0:
            if not gpu_valid[h]:
                if not parts_valid[h]:
                    _gpu_parts(gpu_free[h], device_milli, mix_gpu, share, thresholds, threshold_index,
                               below, parts_store[h])
                    parts_valid[h] = True
                gpu_store[h, 0], gpu_store[h, 1] = _from_parts(
                    free[h, 0], free[h, 1], parts_store[h], mix_cpu, mix_memory, frag_weight,
                    cpu_factor, memory_factor, misfit, fgd, terms)
                gpu_valid[h] = True
            if g <= 0:
                if not parts_valid[h]:
                    _gpu_parts(gpu_free[h], device_milli, mix_gpu, share, thresholds, threshold_index,
                               below, parts_store[h])
                    parts_valid[h] = True
                parts = parts_store[h]
            else:   # table.devices_after, one host
                for d in range(len(devices)):   # (not devices[:] = ...: its shape check's
                    devices[d] = gpu_free[h, d]   # error message costs ~2 s more to compile)
                if g < device_milli:
                    best = -1
                    for d in range(len(devices)):
                        if devices[d] >= g and (best < 0 or devices[d] < devices[best]):
                            best = d
                    if best >= 0:
                        devices[best] -= g
                else:
                    k = g // device_milli
                    whole = 0
                    for d in range(len(devices)):
                        if devices[d] == device_milli:
                            whole += 1
                    if whole >= k:
                        taken = 0
                        for d in range(len(devices)):
                            if devices[d] == device_milli and taken < k:
                                devices[d] = 0
                                taken += 1
                _gpu_parts(devices, device_milli, mix_gpu, share, thresholds, threshold_index, below,
                           after_parts)
                parts = after_parts
            f_after, s_after = _from_parts(cpu_left, memory_left, parts, mix_cpu, mix_memory, frag_weight,
                                           cpu_factor, memory_factor, misfit, fgd, terms)
            fragmented = 0.5 - (f_after - gpu_store[h, 0]) / (2 * gpu_scale)
            stranded = 0.5 - (s_after - gpu_store[h, 1]) / (2 * gpu_scale)
        balance = 0.5
        if balanced_mix:
            if not balance_valid[h]:
                balance_store[h] = _stranded_share(free[h, 0], free[h, 1], scale[h, 0], scale[h, 1],
                                                   mean_cpu, mean_memory)
                balance_valid[h] = True
            after = _stranded_share(cpu_left, memory_left, scale[h, 0], scale[h, 1], mean_cpu, mean_memory)
            balance = 0.5 - (after - balance_store[h]) / 4
        used_cpu = min((allocated[h, 0] + need[0]) * inv_capacity[h, 0] + no_capacity[h, 0], 1.0)
        used_memory = min((allocated[h, 1] + need[1]) * inv_capacity[h, 1] + no_capacity[h, 1], 1.0)
        # engine._score: arrays summed in policy order, the constants (a scorer's 0.5 for all
        # rows) summed apart and added last
        out = 0.0
        arrays = 0
        constant = 0.0
        for c in range(len(codes)):
            code = codes[c]
            w = weights[c]
            if code == FRAGMENTATION or code == STRANDING:
                if not gradients:
                    constant += w * 0.5
                    continue
                value = fragmented if code == FRAGMENTATION else stranded
            elif code == BALANCE:
                if not balanced_mix:
                    constant += w * 0.5
                    continue
                value = balance
            elif code == OCCUPIED:
                value = in_use[h] + (1.0 - in_use[h]) * 0.5 * size[h]
            elif code == BINPACK:
                value = (used_cpu + used_memory) / 2
            elif code == LEAST:
                value = 1.0 - (used_cpu + used_memory) / 2
            else:
                value = 1.0 - abs(used_cpu - used_memory) / 2
            out = w * value if arrays == 0 else out + w * value
            arrays += 1
        if arrays == 0:
            out = constant
        elif constant != 0.0:
            out += constant
        score[h] = out


class Fused:
    """The compiled refresh for one Plan: its overlay and its policy's scorers and weights. The
    kernel's arguments but the refresh's own are kept (the Overlay changes its arrays in place,
    never replaces them) and rebuilt when the mix changes, which drops the measures."""

    def __init__(self, overlay: Overlay, codes: np.ndarray, weights: np.ndarray):
        self.overlay = overlay
        self.hosts = (overlay.device_milli, overlay.free, overlay.allocated, overlay.inv_capacity,
                      overlay.no_capacity, overlay.in_use, overlay.size, overlay.size_gpu,
                      overlay.cpu_memory_scale, overlay.gpu_free, overlay.gpu_left, overlay.gpu_scale,
                      codes, weights)
        self.mix: object = self   # (not a mix: the first refresh builds the arguments)
        self.generation = -1
        self.args: tuple | None = None

    def _arguments(self) -> tuple | None:
        """The hosts', the mix's and the measures' arguments; None for a mix of more than
        PAIRWISE_MAX shapes."""
        mix = self.overlay.mix
        kept = self.overlay.measures
        self.mix, self.generation = mix, kept.generation
        if mix is None:
            none_i, none_f = np.zeros(0, dtype=np.int64), np.zeros(0)
            flags = np.zeros(0, dtype=np.bool_)
            self.args = (*self.hosts, False, False, 1.0, 1.0, none_i, none_i, none_i, flags, none_i, none_i,
                         none_f, 0.0, 0.0, none_f, True, none_f, flags, np.zeros((0, 2)), flags,
                         np.zeros((0, 0), dtype=np.int64), flags)
        elif len(mix.weight) > PAIRWISE_MAX:
            self.args = None
        else:
            s = len(mix.weight)
            balance = kept.entry("balance", (), np.float64)
            gpu = kept.entry("gpu", (2,), np.float64)
            parts = kept.entry("gpu parts", (1 + 2 * s,), np.int64, devices_only=True)
            dm = mix.device_milli
            self.args = (*self.hosts, True, bool(mix.mean_cpu > 0 and mix.mean_memory > 0),
                         float(mix.mean_cpu), float(mix.mean_memory), mix.cpu, mix.memory, mix.gpu,
                         mix.share, mix.thresholds.astype(np.int64), mix.threshold_index.astype(np.int64),
                         mix.frag_weight,
                         dm / mix.cpu_per_gpu if mix.cpu_per_gpu > 0 else 0.0,
                         dm / mix.memory_per_gpu if mix.memory_per_gpu > 0 else 0.0,
                         mix.misfit, mix.fgd, *balance, *gpu, *parts)
        return self.args

    def refresh(self, rows: np.ndarray, need: np.ndarray, static_ok: np.ndarray, floor: np.ndarray,
                score: np.ndarray) -> bool:
        """engine._refresh of `rows` (an int64 array of host indices) into `score`; False (and
        nothing done) for a mix of more than PAIRWISE_MAX shapes."""
        args = self.args
        if self.mix is not self.overlay.mix or self.generation != self.overlay.measures.generation:
            args = self._arguments()
        if args is None:
            return False
        _refresh(rows, need, static_ok, floor, score, *args)
        return True


def for_plan(overlay: Overlay, scorers: Sequence[tuple[str, float]], keep_measures: bool) -> Fused | None:
    """The fused refresh of a Plan weighing `scorers` (name, weight / total), or None where the
    engine must use numpy: a scorer not fused here, measures not kept (the reference pipeline,
    EngineConfig(incremental=False)), or no numba."""
    if not keep_measures or not all(name in CODES for name, _ in scorers):
        return None
    if not COMPILED:
        return None
    fused = Fused(overlay, np.array([CODES[name] for name, _ in scorers], dtype=np.int64),
                  np.array([w for _, w in scorers], dtype=np.float64))
    # compile (or load from the cache) now, with the argument types of every later call, rather
    # than within the first placement: a refresh of no rows
    n = len(overlay.free)
    try:
        fused.refresh(np.zeros(0, dtype=np.int64), np.zeros(4, dtype=np.int64), np.zeros(n, dtype=bool),
                      np.zeros(3, dtype=np.int64), np.zeros(n))
    except Exception:   # numba cannot compile here: numpy decides the same, only slower
        logging.getLogger(__name__).warning("the compiled refresh is not available, placing with numpy",
                                            exc_info=True)
        return None
    return fused
