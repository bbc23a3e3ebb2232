"""The plan overlay: proposed allocations on top of a snapshot (Nomad's "proposed allocs").

A Plan copies the table's allocation once and reserves into the copy, so the table stays the
snapshot it was and groups decided later see the groups decided earlier. `log` lists the host of
every reservation in order: the engine uses it to re-score only the hosts that changed since it
last looked (score caching per equivalence class).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from packyard.records import ResourceAmounts
from scheduler.placement import fragmentation
from scheduler.placement.config import EngineConfig
from scheduler.placement.mix import MixLearner, WorkloadMix
from scheduler.placement.scorers import REGISTRY
from scheduler.placement.table import CPU, DISK, GPU, GPU_DEVICE_MILLI, MEMORY, HostTable, to_amounts


class cached_property:   # noqa: N801 - functools.cached_property without its lock (3.11): hot path
    def __init__(self, compute: Callable[[Any], Any]):
        self.compute = compute
        self.name = compute.__name__
        self.__doc__ = compute.__doc__

    def __get__(self, view: Any, owner: type | None = None) -> Any:
        if view is None:
            return self
        value = view.__dict__[self.name] = self.compute(view)
        return value


class View:
    """Some rows of the plan as it stands (all hosts, or the few a reservation changed), seen by an
    instance that needs `need`: what filters and scorers read. Arrays are sliced on first use."""

    def __init__(self, plan: Plan, rows: slice | np.ndarray, need: np.ndarray):
        self.plan = plan
        self.rows = rows
        self.need = need            # (4,) the instance's reserved amounts

    @cached_property
    def capacity(self) -> np.ndarray:       # (n, 4) effective: overcommit and host reserve applied
        return self.plan.capacity[self.rows]

    @cached_property
    def allocated(self) -> np.ndarray:      # (n, 4)
        return self.plan.allocated[self.rows]

    @cached_property
    def free(self) -> np.ndarray:           # (n, 4) what is left before placing the instance
        return self.capacity - self.allocated

    @cached_property
    def used_after(self) -> np.ndarray:
        """(n, 4) fraction of each resource in use once the instance is placed, at most 1; a
        resource the host does not have counts as fully used."""
        frac = (self.allocated + self.need) * self.plan.inv_capacity[self.rows]
        frac += self.plan.no_capacity[self.rows]
        return np.minimum(frac, 1.0, out=frac)

    @cached_property
    def gpu_capacity(self) -> np.ndarray:   # (n, G) milli per device
        return self.plan.table.gpu_capacity[self.rows]

    @cached_property
    def gpu_free(self) -> np.ndarray:       # (n, G)
        return self.plan.gpu_free[self.rows]

    @cached_property
    def gpu_free_after(self) -> np.ndarray:
        """(n, G) the devices once the instance is placed, by the rule of pick_gpus (rows where it
        does not fit are left as they are)."""
        g = int(self.need[GPU])
        after = self.gpu_free.copy()
        if g <= 0 or after.size == 0:
            return after
        if g < GPU_DEVICE_MILLI:
            candidates = np.where(after >= g, after, np.iinfo(np.int64).max)
            device = np.argmin(candidates, axis=1)
            rows = np.flatnonzero(candidates[np.arange(len(after)), device] != np.iinfo(np.int64).max)
            after[rows, device[rows]] -= g
        else:
            whole = after == GPU_DEVICE_MILLI
            enough = whole.sum(axis=1) >= g // GPU_DEVICE_MILLI
            take = whole & (np.cumsum(whole, axis=1) <= g // GPU_DEVICE_MILLI) & enough[:, None]
            after[take] = 0
        return after

    @cached_property
    def gpu_gradients(self) -> np.ndarray | None:
        """(n, 2) the fragmentation and stranding scores, computed together (fragmentation.py)."""
        return fragmentation.gradients(self)

    @cached_property
    def index(self) -> np.ndarray:          # (n,) the rows' host indices
        rows = self.rows
        return rows if isinstance(rows, np.ndarray) else self.plan.all_rows[rows]

    def __len__(self) -> int:
        return len(self.capacity)


def effective_capacity(capacity: np.ndarray, config: EngineConfig) -> np.ndarray:
    """capacity x overcommit ratio - host reserve, per resource. GPUs are devices: neither
    overcommitted nor reserved (config validation refuses both)."""
    out = capacity.copy()
    for r in (CPU, MEMORY, DISK):
        ratio = config.overcommit_ratios()[r]
        if ratio != 1.0:
            out[:, r] = np.floor(capacity[:, r] * ratio).astype(np.int64)
    reserve = np.array([config.host_reserve.cpu_milli, config.host_reserve.memory_bytes,
                        config.host_reserve.disk_bytes, 0], dtype=np.int64)
    return np.maximum(out - reserve, 0)


def pick_gpus(free: np.ndarray, gpu_milli: int) -> tuple[int, ...]:
    """The devices of one host that an instance asking `gpu_milli` takes, or () if none fit.
    A share goes to the fullest device that still holds it (best fit), keeping whole GPUs whole;
    whole GPUs take the lowest-numbered wholly free devices."""
    if gpu_milli <= 0:
        return ()
    if gpu_milli < GPU_DEVICE_MILLI:
        fits = np.flatnonzero(free >= gpu_milli)
        return (int(fits[np.argmin(free[fits])]),) if fits.size else ()
    whole = np.flatnonzero(free == GPU_DEVICE_MILLI)
    k = gpu_milli // GPU_DEVICE_MILLI
    return tuple(int(d) for d in whole[:k]) if whole.size >= k else ()


class Plan:
    def __init__(self, table: HostTable, config: EngineConfig | None = None):
        self.table = table
        self.config = config if config is not None else EngineConfig()
        total = sum(w for _, w in self.config.scorers)
        self.weighted = [(REGISTRY[name], w / total) for name, w in self.config.scorers if w]
        self.capacity = effective_capacity(table.capacity, self.config)
        self.inv_capacity = np.zeros(self.capacity.shape)
        np.divide(1.0, self.capacity, out=self.inv_capacity, where=self.capacity > 0)
        self.no_capacity = (self.capacity <= 0).astype(np.float64)
        self.gpu_scale = int(table.gpu_capacity.sum(axis=1).max(initial=0))
        self.has_gpu = table.gpu_capacity.sum(axis=1) > 0
        self.mix: WorkloadMix | None = self.config.workload_mix
        self.learner = (MixLearner()
                        if self.mix is None and self.config.uses_mix() else None)
        self.allocated = table.allocated.copy()
        self.in_use = np.any(self.allocated > 0, axis=1).astype(np.float64)   # 1.0: holds something
        self.gpu_free = table.gpu_free.copy()
        self.log: list[int] = []
        self.all_rows = np.arange(len(table))
        # engine-owned score cache: equivalence-class key -> its masks and scores (engine.py)
        self.classes: OrderedDict[Any, Any] = OrderedDict()
        # per-host values that depend on the host's state and the mix but not on the ask (a
        # scorer's "before"): name -> (values (N, k), valid), a host's entry dropped when it changes
        self.measures: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def observe(self, need: np.ndarray, count: int) -> None:
        """Count an ask into the learned mix; when the mix changes, every cached score is stale."""
        if self.learner is None or count <= 0:
            return
        mix = self.learner.observe((int(need[CPU]), int(need[MEMORY]), int(need[GPU])), count)
        if mix is not None:
            self.mix = mix
            self.classes.clear()
            self.measures.clear()

    def before(self, name: str, view: View, compute: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """The per-host measure `name` for the view's rows, calling compute(positions) only for
        the positions in the view whose host changed since the measure was last taken."""
        stale = self.stale(name, view)
        if len(stale) or name not in self.measures:
            return self.remember(name, view, stale, compute(stale))
        return self.measures[name][0][view.index]

    def stale(self, name: str, view: View) -> np.ndarray:
        """Positions in the view of the hosts whose measure `name` must be (re)computed."""
        entry = self.measures.get(name)
        if entry is None or not self.config.incremental:
            return np.arange(len(view.index))
        return np.flatnonzero(~entry[1][view.index])

    def remember(self, name: str, view: View, stale: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Store the measure `name` computed for the view's `stale` positions; return it for every
        row of the view."""
        entry = self.measures.get(name)
        if entry is None:
            entry = self.measures[name] = (np.zeros((len(self.table), *values.shape[1:])),
                                           np.zeros(len(self.table), dtype=bool))
        store, valid = entry
        hosts = view.index[stale]
        store[hosts] = values
        valid[hosts] = True
        return store[view.index]

    def view(self, need: np.ndarray, rows: slice | np.ndarray = slice(None)) -> View:
        return View(self, rows, need)

    def reserve(self, host: int, need: np.ndarray) -> tuple[int, ...]:
        """Reserve `need` on `host` (which the filters found feasible); returns its GPU devices."""
        devices = pick_gpus(self.gpu_free[host], int(need[GPU]))
        if need[GPU] > 0:
            if not devices:
                raise AssertionError(f"no GPU device on host {host} holds {need[GPU]} milli")
            share = min(int(need[GPU]), GPU_DEVICE_MILLI)
            self.gpu_free[host, list(devices)] -= share
        self.allocated[host] += need
        self.in_use[host] = 1.0
        self.log.append(host)
        for _, valid in self.measures.values():
            valid[host] = False
        return devices

    def allocated_on(self, name: str) -> ResourceAmounts:
        return to_amounts(self.allocated[self.table.index(name)])

    def to_table(self) -> HostTable:
        """The snapshot with this plan's reservations applied, to continue from."""
        return self.table.with_allocation(self.allocated, self.gpu_free)
