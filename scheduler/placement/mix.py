"""The workload mix: what kinds of instance are expected to arrive, as reserved amounts
(cpu_milli, memory_bytes, gpu_milli) with a weight each. The fragmentation and stranding scorers
protect capacity for it ("Beware of Fragmentation", ATC '23, calls it the target workload).

Either given (EngineConfig.workload_mix: e.g. the instances running now) or learned by the Plan
from the asks it has seen so far: causal, no look-ahead at asks not yet made.

Which shapes are a share of one GPU, and how much cpu and memory a GPU brings, depend on the GPU
model (gpumodel.py): a mix is counted in devices of `device_milli`, and the Plan re-counts a given
mix in its config's model (for_devices).
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from packyard.records import ResourceAmounts
from scheduler.placement import gpumodel

Shape = tuple[int, int, int]
# which hosts an ask may use: None for any, else a hashable of its constraints (where_of), whose
# hosts the Plan finds in its table (a mix holds no table)
Where = tuple | None


def where_of(constraints) -> Where:
    """The Where of an ask's constraints (packyard.spec.Constraint: attribute, operator, value)."""
    if not constraints:
        return None
    return tuple((c.attribute, c.operator, tuple(c.value) if isinstance(c.value, list) else c.value)
                 for c in constraints)


class WorkloadMix:
    def __init__(self, classes: list[tuple[int, int, int, float]], *, device_milli: int = gpumodel.ONE_GPU,
                 misfit: np.ndarray | None = None, keep_off: float = 0.0,
                 where: list[dict[Where, float]] | None = None, per_gpu: tuple[float, float] | None = None):
        if not classes:
            raise ValueError("a workload mix needs at least one class")
        a = np.array(classes, dtype=np.float64).reshape(-1, 4)
        if np.any(a < 0) or a[:, 3].sum() <= 0:
            raise ValueError("a workload mix needs non-negative amounts and a positive total weight")
        self.cpu = a[:, 0].astype(np.int64)
        self.memory = a[:, 1].astype(np.int64)
        self.gpu = a[:, 2].astype(np.int64)
        self.weight = a[:, 3] / a[:, 3].sum()
        self.classes = list(classes)    # as given, to count them again in another device size
        # per shape, the share of its asks restricted to the hosts of each Where (None: any host):
        # how much of which hosts' GPUs the work restricted to them will need (scarcity.reserved),
        # so that work which may run anywhere leaves them to it
        self.where = [{None: 1.0}] * len(a) if where is None else [dict(w) for w in where]
        if len(self.where) != len(a):
            raise ValueError("a workload mix needs one `where` per class")
        self.constrained = any(set(w) != {None} for w in self.where)
        # per shape, how much of a host's free GPUs count as lost to it where it would fit but for
        # the host's cpu or memory (fragmentation.from_parts): FGD's 1, unless the Plan measured
        # that the shape's room lies elsewhere (scarcity.py)
        self.misfit = np.ones(len(a)) if misfit is None else np.array(misfit, dtype=np.float64)
        self.fgd = bool(np.all(self.misfit == 1.0))
        # how strongly work without GPUs is kept off the cpu and memory of hosts with free GPUs
        # (0..1; the fragmentation measure counts the share of a host's free cpu or memory it takes
        # as that share of the host's free GPUs lost, fragmentation.kept_off): 0 unless the Plan
        # measured that the GPU hosts are short for the work to come and such work has its room
        # elsewhere (scarcity.keep_off)
        self.keep_off = float(keep_off)
        self.device_milli = device_milli
        self.share = self.gpu < device_milli     # a share of one device (or no GPU at all)
        # the fragmentation scorer compares devices against min(gpu, 1 device): its distinct values
        self.thresholds, self.threshold_index = np.unique(
            np.minimum(self.gpu, device_milli), return_inverse=True)
        # (`per_gpu`: what a GPU brings with it until the mix has GPU work to tell; the Plan gives
        # its hosts' own proportion, so that work seen before any GPU work leaves GPU hosts the cpu
        # and memory their GPUs will need)
        self.per_gpu = per_gpu
        self.cpu_per_gpu, self.memory_per_gpu = self._per_gpu()
        if self.cpu_per_gpu == 0 and self.memory_per_gpu == 0 and per_gpu is not None:
            self.cpu_per_gpu, self.memory_per_gpu = per_gpu
        # the shapes the fragmentation measure is expected over: all of them on devices; with pooled
        # GPUs (a host's GPUs one amount) a share never needs one device, and what is left to
        # fragment is a host's pool too small for whole-GPU work (bench/PACKING.md measures it)
        self.frag_weight = (self.weight if device_milli == gpumodel.ONE_GPU
                            else np.where(self.gpu >= gpumodel.ONE_GPU, self.weight, 0.0))
        # the average instance: the proportion in which the mix asks for cpu and memory
        self.mean_cpu = float(self.cpu @ self.weight)
        self.mean_memory = float(self.memory @ self.weight)
        self.mean_cpu_memory = np.array([self.mean_cpu, self.mean_memory])
        # how unevenly the mix asks for cpu and memory, instance by instance: the standard deviation
        # of an instance's cpu less its memory, each in the average instance's (0 when either mean
        # is). n instances drawn from the mix ask cpu and memory in the mix's proportion give or
        # take spread x sqrt(n) average instances (opening.py)
        self.spread = 0.0
        if self.mean_cpu > 0 and self.mean_memory > 0:
            gap = self.cpu / self.mean_cpu - self.memory / self.mean_memory
            self.spread = float(np.sqrt(self.weight @ (gap * gap)))

    @classmethod
    def of(cls, counts: dict[Shape, float], top: int = 64, *, device_milli: int = gpumodel.ONE_GPU,
           restricted: dict[Shape, dict[Where, float]] | None = None) -> WorkloadMix:
        """The mix of counted shapes, keeping the `top` most frequent; `restricted`: of each
        shape's count, how many are restricted to the hosts of each Where (the rest: any host)."""
        best = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
        where = None
        if restricted:
            where = []
            for shape, n in best:
                by = {w: k / n for w, k in (restricted.get(shape) or {}).items() if w is not None}
                where.append({None: 1.0 - sum(by.values()), **by} if by else {None: 1.0})
        return cls([(*shape, float(n)) for shape, n in best], device_milli=device_milli, where=where)

    @classmethod
    def of_reserved(cls, reserved: Iterable[ResourceAmounts], top: int = 64, *,
                    device_milli: int = gpumodel.ONE_GPU) -> WorkloadMix | None:
        """The mix of instances' reserved amounts (e.g. those running now), None if there are none."""
        counts: dict[Shape, float] = {}
        for r in reserved:
            shape = (r.cpu_milli, r.memory_bytes, r.gpu_milli)
            counts[shape] = counts.get(shape, 0.0) + 1
        return cls.of(counts, top, device_milli=device_milli) if counts else None

    def for_devices(self, device_milli: int) -> WorkloadMix:
        """This mix counted in devices of `device_milli` (itself when it already is)."""
        if device_milli == self.device_milli:
            return self
        # (per_gpu is counted per device: the Plan gives its own again, with_per_gpu)
        return WorkloadMix(self.classes, device_milli=device_milli, misfit=self.misfit,
                           keep_off=self.keep_off, where=self.where, per_gpu=None)

    def with_misfit(self, misfit: np.ndarray, keep_off: float = 0.0) -> WorkloadMix:
        """This mix with other weights of GPUs lost for lack of cpu or memory (one a shape), and
        another strength with which work without GPUs is kept off hosts with free GPUs."""
        return WorkloadMix(self.classes, device_milli=self.device_milli, misfit=misfit, keep_off=keep_off,
                           where=self.where, per_gpu=self.per_gpu)

    def with_per_gpu(self, per_gpu: tuple[float, float] | None) -> WorkloadMix:
        """This mix, with what a GPU brings with it while it has no GPU work (None: nothing);
        itself where that changes nothing (it has GPU work, or the same already)."""
        if per_gpu == self.per_gpu or self.gpu.any():
            return self
        return WorkloadMix(self.classes, device_milli=self.device_milli, misfit=self.misfit,
                           keep_off=self.keep_off, where=self.where, per_gpu=per_gpu)

    def _per_gpu(self) -> tuple[float, float]:
        """The median cpu and memory a GPU's worth of the mix's GPU workloads brings with it
        (weighted by how often each arrives and by its GPUs); 0 when the mix has no GPU work."""
        g = self.gpu > 0
        if not g.any():
            return 0.0, 0.0
        share = self.weight[g] * self.gpu[g]
        return (weighted_median(self.cpu[g] / self.gpu[g], share) * self.device_milli,
                weighted_median(self.memory[g] / self.gpu[g], share) * self.device_milli)


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


class MixLearner:
    """Counts the shapes asked for. Every time the count has grown by `growth` it compares the
    mix it would build with the one in use, and offers the new one only if the distributions differ
    by more than `tolerance` (total variation): rebuilding the mix invalidates every cached score,
    and a stationary workload soon stops moving it."""

    def __init__(self, growth: float = 1.25, tolerance: float = 0.05, top: int = 64, *,
                 device_milli: int = gpumodel.ONE_GPU):
        self.device_milli = device_milli   # the mixes it offers are counted in these devices
        self.counts: dict[Shape, float] = {}
        self.wheres: dict[Shape, dict[Where, float]] = {}   # of each shape's count, by Where
        self.constrained = 0.0   # of the total, asks with a Where
        self.total = 0.0
        self.checked_at = 0.0
        self.in_use: dict[Shape, float] = {}
        self.constrained_in_use = 0.0
        self.growth = growth
        self.tolerance = tolerance
        self.top = top

    def observe(self, shape: Shape, count: int, where: Where = None) -> WorkloadMix | None:
        """Count an ask (restricted to the hosts of `where`; None: any); returns a new mix when it
        is time to change, else None. The shapes are counted as before whatever their Where, so
        that constraints change which hosts the measures count, not which shapes the mix keeps."""
        self.counts[shape] = self.counts.get(shape, 0.0) + count
        by = self.wheres.setdefault(shape, {})
        by[where] = by.get(where, 0.0) + count
        if where is not None:
            self.constrained += count
        self.total += count
        if self.total < self.checked_at * self.growth:
            return None
        self.checked_at = self.total
        best = dict(sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))[:self.top])
        norm = sum(best.values())
        candidate = {k: v / norm for k, v in best.items()}
        moved = sum(abs(candidate.get(k, 0.0) - self.in_use.get(k, 0.0))
                    for k in candidate.keys() | self.in_use.keys()) / 2
        # the share of constrained asks moved as much: the hosts each shape may use are stale
        moved = max(moved, abs(self.constrained / self.total - self.constrained_in_use))
        if self.in_use and moved <= self.tolerance:
            return None
        self.in_use = candidate
        self.constrained_in_use = self.constrained / self.total
        where = [{w: n / self.counts[k] for w, n in self.wheres[k].items()} for k in candidate]
        return WorkloadMix([(*k, v) for k, v in candidate.items()], device_milli=self.device_milli,
                           where=where)
