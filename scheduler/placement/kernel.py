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
(measures not kept), and without a compiled kernel (fused.py's `for_plan` returns None then).

Which compiled code runs (`KERNEL`): the module aot.py builds ahead of time ("aot": every install
builds it, setup.py), while it was built from this very file (`source_digest`, baked into it);
else numba's JIT ("jit": the same functions compiled at the first Plan); else none ("numpy").
The first imports no numba: ~110-120 MiB less resident memory in the scheduler (README.md,
issue 12). The functions here are plain Python (this module imports numba only for the JIT) and
compiled from a copy of this module's globals (`namespace`). The AOT code reads its arguments'
memory as `ARGUMENTS` say without checking, so Fused checks them.

The JIT's code is cached on disk (numba's cache: beside this file, else the user's cache
directory, else a directory of this user's alone under the temporary directory, else none): a fresh
process loads it in ~0.3 s instead of compiling for ~3 s (CPU).
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import logging
import os
import stat
import tempfile
import types
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

# table.GPU, need's column of GPUs: this module imports nothing of the package (only numpy), so
# that setup.py can build it ahead of time with numpy and numba alone (test_kernel.py: the same)
GPU = 3

# numpy adds up to this many values in one block of its pairwise sum (PW_BLOCKSIZE); a mix of
# more shapes (not learned ones: MixLearner keeps 64) is left to numpy
PAIRWISE_MAX = 128

# the scorers fused here, as the kernel's codes
FRAGMENTATION, STRANDING, BALANCE, OCCUPIED, BINPACK, LEAST, BALANCED = range(7)
CODES = {"fragmentation": FRAGMENTATION, "stranding": STRANDING, "balance": BALANCE,
         "occupied": OCCUPIED, "binpack": BINPACK, "most_allocated": BINPACK,
         "least_allocated": LEAST, "balanced_allocation": BALANCED}


# _refresh's arguments, in order: (name, numpy type, dimensions; 0 a scalar). The build of aot.py
# compiles for exactly these, and its code reads an array's memory as this type without checking
# (a wrong one is a wrong score or a crash, not an error): Fused checks every array against them
ARGUMENTS = (
    ("rows", "i8", 1), ("need", "i8", 1), ("static_ok", "b1", 1), ("floor", "i8", 1), ("score", "f8", 1),
    ("device_milli", "i8", 0), ("free", "i8", 2), ("allocated", "i8", 2), ("inv_capacity", "f8", 2),
    ("no_capacity", "f8", 2), ("in_use", "f8", 1), ("size_cpu_memory", "f8", 1), ("size_gpu", "f8", 1),
    ("scale", "i8", 2), ("gpu_free", "i8", 2), ("gpu_left", "i8", 1), ("gpu_scale", "i8", 0),
    ("codes", "i8", 1), ("weights", "f8", 1),
    ("has_mix", "b1", 0), ("balanced_mix", "b1", 0), ("mean_cpu", "f8", 0), ("mean_memory", "f8", 0),
    ("mix_cpu", "i8", 1), ("mix_memory", "i8", 1), ("mix_gpu", "i8", 1), ("share", "b1", 1),
    ("thresholds", "i8", 1), ("threshold_index", "i8", 1), ("frag_weight", "f8", 1),
    ("cpu_factor", "f8", 0), ("memory_factor", "f8", 0), ("misfit", "f8", 1), ("fgd", "b1", 0),
    ("keep_off", "f8", 0), ("reserve", "f8", 1),
    ("balance_store", "f8", 1), ("balance_valid", "b1", 1), ("gpu_store", "f8", 2), ("gpu_valid", "b1", 1),
    ("parts_store", "i8", 2), ("parts_valid", "b1", 1),
)
PER_CALL = 5   # the first five change with every call; the rest are a Fused's, checked when built

# the compiled kernels' functions: each helper is called by the next ones, _refresh by Fused
FUNCTIONS = ("_pairwise", "_gpu_parts", "_from_parts", "_stranded_share", "_refresh")
# the module aot.py builds, beside this file
AOT_MODULE = "scheduler.placement._kernel_aot"


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


def _stranded_share(cpu, memory, scale_cpu, scale_memory, mean_cpu, mean_memory):
    """scorers.stranded_share of one host."""
    cpu = max(cpu, 0)
    memory = max(memory, 0)
    units = min(cpu / mean_cpu, memory / mean_memory)
    return (cpu - units * mean_cpu) / scale_cpu + (memory - units * mean_memory) / scale_memory


def _refresh(rows, need, static_ok, floor, score,
             device_milli, free, allocated, inv_capacity, no_capacity, in_use, size_cpu_memory,
             size_gpu, scale, gpu_free, gpu_left, gpu_scale, codes, weights,
             has_mix, balanced_mix, mean_cpu, mean_memory, mix_cpu, mix_memory, mix_gpu, share,
             thresholds, threshold_index, frag_weight, cpu_factor, memory_factor, misfit, fgd,
             keep_off, reserve, balance_store, balance_valid, gpu_store, gpu_valid, parts_store, parts_valid):
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
            if g <= 0 and keep_off > 0:   # fragmentation.kept_off
                taken = max(need[0] / max(free[h, 0], 1), need[1] / max(free[h, 1], 1))
                f_after = f_after + keep_off * (parts[0] * min(taken, 1.0))
            if g > 0 and len(reserve) > 0:   # fragmentation: the GPUs constrained work needs
                f_after = f_after + reserve[h] * g
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
            if in_use[h] == 0.0 and balance > 0.5:   # scorers.balance: no gain on an empty host
                balance = 0.5
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


def namespace(jit: Callable[[Callable], Callable]) -> dict:
    """This module's globals with copies of FUNCTIONS, the helpers compiled by `jit` and _refresh
    not (aot.py compiles it for its signature, jit_refresh as calls come): numba reads the
    helpers a function calls from its globals, and this module's stay plain Python, so that
    importing it imports no numba."""
    space = dict(globals())
    for name in FUNCTIONS:
        f = globals()[name]
        copy = types.FunctionType(f.__code__, space, name, f.__defaults__, f.__closure__)
        copy.__qualname__, copy.__doc__ = f.__qualname__, f.__doc__
        space[name] = copy if name == "_refresh" else jit(copy)
    return space


def source_digest() -> int:
    """What the compiled code is built from, as a positive int64: this file's text (the
    functions, their argument types, the constants they read). aot.py bakes it into its module."""
    return int.from_bytes(hashlib.sha256(Path(__file__).read_bytes()).digest()[:8], "big") >> 1


def aot_refresh(path: str | None = None) -> Callable | None:
    """The refresh aot.py built (at `path`, default AOT_MODULE beside this file), or None: not
    built, built from another kernel.py (stale: its digest differs) or not loadable here. numba
    is not imported."""
    log = logging.getLogger(__name__)
    try:
        if path is None:
            module = importlib.import_module(AOT_MODULE)
        else:
            spec = importlib.util.spec_from_file_location(AOT_MODULE, path)
            if spec is None or not os.path.exists(path):
                return None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
    except ModuleNotFoundError:
        log.info("the kernel is not built ahead of time (python -m scheduler.placement.aot builds it)")
        return None
    except Exception:   # a module the loader or numpy here cannot load: compiled with numba instead
        log.warning("the kernel built ahead of time does not load, compiling it with numba", exc_info=True)
        return None
    if module.digest() != source_digest():
        log.warning("the kernel built ahead of time (%s) is stale: kernel.py changed since; compiling "
                    "it with numba (python -m scheduler.placement.aot rebuilds it)", module.__file__)
        return None
    return module.refresh


@functools.cache
def jit_refresh() -> Callable | None:
    """_refresh compiled by numba as it is called (cached on disk where it can be, see the
    module's docstring), or None without numba."""
    try:
        import numba
    except ImportError:   # the numpy path does everything, only slower
        return None

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
    return compile_(namespace(compile_)["_refresh"])


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


def _load() -> tuple[Callable | None, str]:
    refresh = aot_refresh()
    if refresh is not None:
        return refresh, "aot"
    refresh = jit_refresh()
    return refresh, "numpy" if refresh is None else "jit"


# the refresh every Fused calls, and which it is: "aot" (no numba imported), "jit" or "numpy" (None)
REFRESH, KERNEL = _load()
COMPILED = REFRESH is not None
_DTYPES = {"i8": np.dtype(np.int64), "f8": np.dtype(np.float64), "b1": np.dtype(np.bool_)}
_TYPES = tuple((name, _DTYPES[kind], ndim) for name, kind, ndim in ARGUMENTS)


def check_arguments(values: Sequence, first: int = 0) -> None:
    """TypeError unless each array of `values` (_refresh's arguments from index `first` on) is of
    ARGUMENTS' type and dimensions, C-contiguous and aligned, as the compiled code reads it.
    (Scalars need no check: the compiled code converts them.)"""
    for value, (name, dtype, ndim) in zip(values, _TYPES[first:first + len(values)], strict=True):
        if ndim and not (isinstance(value, np.ndarray) and value.dtype == dtype and value.ndim == ndim
                         and value.flags.c_contiguous and value.flags.aligned):
            raise TypeError(f"the kernel's {name} must be a C-contiguous {ndim}-d {dtype} array, "
                            f"not {getattr(value, 'dtype', type(value).__name__)!s} {getattr(value, 'shape', '')}")
