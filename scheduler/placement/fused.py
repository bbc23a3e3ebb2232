"""A Plan's compiled refresh: kernel.py's _refresh bound to the Plan's overlay and its policy's
scorers, or None where the engine must score with numpy (see kernel.py)."""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from scheduler.placement import kernel
from scheduler.placement.overlay import Overlay


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
                         none_f, 0.0, 0.0, none_f, True, 0.0, self.overlay.gpu_reserved, none_f, flags, np.zeros((0, 2)), flags,
                         np.zeros((0, 0), dtype=np.int64), flags)
        elif len(mix.weight) > kernel.PAIRWISE_MAX:
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
                         mix.misfit, mix.fgd, mix.keep_off, self.overlay.gpu_reserved, *balance, *gpu, *parts)
        if self.args is not None:
            kernel.check_arguments(self.args, kernel.PER_CALL)
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
        kernel.check_arguments((rows, need, static_ok, floor, score))
        kernel.REFRESH(rows, need, static_ok, floor, score, *args)
        return True


def for_plan(overlay: Overlay, scorers: Sequence[tuple[str, float]], keep_measures: bool) -> Fused | None:
    """The fused refresh of a Plan weighing `scorers` (name, weight / total), or None where the
    engine must use numpy: a scorer not fused here, measures not kept (the reference pipeline,
    EngineConfig(incremental=False)), or no numba."""
    if not keep_measures or not all(name in kernel.CODES for name, _ in scorers):
        return None
    if kernel.REFRESH is None:
        return None
    fused = Fused(overlay, np.array([kernel.CODES[name] for name, _ in scorers], dtype=np.int64),
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
