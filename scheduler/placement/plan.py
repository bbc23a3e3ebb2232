"""The plan overlay: proposed allocations on top of a snapshot (Nomad's "proposed allocs").

A Plan copies the table's allocation once and reserves into the copy, so the table stays the
snapshot it was and groups decided later see the groups decided earlier. `log` lists the host of
every reservation in order: the engine uses it to re-score only the hosts that changed since it
last looked (score caching per equivalence class).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from packyard.records import ResourceAmounts
from scheduler.placement import fragmentation, gpumodel
from scheduler.placement.asks import Running
from scheduler.placement.config import EngineConfig
from scheduler.placement.mix import MixLearner, WorkloadMix
from scheduler.placement.scorers import REGISTRY
from scheduler.placement.table import (
    CPU,
    DISK,
    GPU,
    MEMORY,
    HostTable,
    amounts,
    devices_after,
    to_amounts,
)


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
        return self.plan.free[self.rows]

    @cached_property
    def cpu_after(self) -> np.ndarray:      # (n,) cpu left once the instance is placed
        return self.free[:, CPU] - self.need[CPU]

    @cached_property
    def memory_after(self) -> np.ndarray:   # (n,) memory left once the instance is placed
        return self.free[:, MEMORY] - self.need[MEMORY]

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
        return devices_after(self.gpu_free, int(self.need[GPU]))

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
    if gpu_milli < gpumodel.device_milli:
        fits = np.flatnonzero(free >= gpu_milli)
        return (int(fits[np.argmin(free[fits])]),) if fits.size else ()
    whole = np.flatnonzero(free == gpumodel.device_milli)
    k = gpu_milli // gpumodel.device_milli
    return tuple(int(d) for d in whole[:k]) if whole.size >= k else ()


class Plan:
    def __init__(self, table: HostTable, config: EngineConfig | None = None,
                 running: Iterable[Running] | None = None):
        self.table = table
        self.config = config if config is not None else EngineConfig()
        total = sum(w for _, w in self.config.scorers)
        self.weighted = [(REGISTRY[name], w / total) for name, w in self.config.scorers if w]
        self.capacity = effective_capacity(table.capacity, self.config)
        self.inv_capacity = np.zeros(self.capacity.shape)
        np.divide(1.0, self.capacity, out=self.inv_capacity, where=self.capacity > 0)
        self.no_capacity = (self.capacity <= 0).astype(np.float64)
        self.gpu_scale = int(table.gpu_capacity.sum(axis=1).max(initial=0))
        self.mix: WorkloadMix | None = self.config.workload_mix
        self.learner = (MixLearner()
                        if self.mix is None and self.config.uses_mix() else None)
        self.allocated = table.allocated.copy()
        # capacity - allocated, kept with it (a refresh reads it for every row it looks at)
        self.free = self.capacity - self.allocated
        self.in_use = np.any(self.allocated > 0, axis=1).astype(np.float64)   # 1.0: holds something
        self.gpu_free = table.gpu_free.copy()
        # free GPU milli per host: a host with none left scores 0.5 on the GPU terms for the
        # instances it can still take (those without GPUs), exactly, without computing them
        self.gpu_left = self.gpu_free.sum(axis=1)
        self.log: list[int] = []
        # (kind, cpu, memory, disk, gpu) of a request -> its reserved amounts under the profiles,
        # and the same as an array
        self.reserved_of: dict[tuple[str, int, int, int, int], tuple[ResourceAmounts, np.ndarray]] = {}
        self.all_rows = np.arange(len(table))
        # engine-owned score cache: equivalence-class key -> its masks and scores (engine.py)
        self.classes: OrderedDict[Any, Any] = OrderedDict()
        # per-host values that depend on the host's state and the mix but not on the ask (a
        # scorer's "before"): name -> (values (N, k), valid), a host's entry dropped when it changes
        self.measures: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        # preemption's candidates: host index -> the instances running there, not yet evicted
        # (instances on hosts not in the table are left out: nothing can be placed there)
        # None: preemption off (the caller did not say what runs)
        self.preempting = running is not None
        self.running_on: dict[int, list[Running]] = {}
        vocab = table.columns["node.name"].vocab
        for r in running or ():
            if r.host in vocab:
                self.running_on.setdefault(vocab[r.host], []).append(r)
        # len(log) after the last release: a class that looked before it must re-check the hosts
        # it found infeasible, since a release (unlike a reservation) can make a host feasible
        self.released_at = 0

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
        index = view.index
        stale = self.stale(name, index)
        if stale is None:
            return self.measures[name][0][index]
        return self.remember(name, index, stale, compute(stale))

    def stale(self, name: str, index: np.ndarray) -> np.ndarray | None:
        """Positions in `index` (host indices) of the hosts whose measure `name` must be
        (re)computed; None when there are none."""
        entry = self.measures.get(name)
        if entry is None or not self.config.incremental:
            return np.arange(len(index))
        stale = (~entry[1][index]).nonzero()[0]
        return stale if len(stale) else None

    def remember(self, name: str, index: np.ndarray, stale: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Store the measure `name` computed for the hosts index[stale]; return it for every
        host of `index`."""
        entry = self.measures.get(name)
        if entry is None:
            entry = self.measures[name] = (np.zeros((len(self.table), *values.shape[1:]), dtype=values.dtype),
                                           np.zeros(len(self.table), dtype=bool))
        store, valid = entry
        hosts = index[stale]
        store[hosts] = values
        valid[hosts] = True
        return values if len(stale) == len(index) else store[index]

    def view(self, need: np.ndarray, rows: slice | np.ndarray = slice(None)) -> View:
        return View(self, rows, need)

    def reserve(self, host: int, need: np.ndarray) -> tuple[int, ...]:
        """Reserve `need` on `host` (which the filters found feasible); returns its GPU devices."""
        devices = pick_gpus(self.gpu_free[host], int(need[GPU]))
        if need[GPU] > 0:
            if not devices:
                raise AssertionError(f"no GPU device on host {host} holds {need[GPU]} milli")
            share = min(int(need[GPU]), gpumodel.device_milli)
            self.gpu_free[host, list(devices)] -= share
            self.gpu_left[host] -= share * len(devices)
        self.allocated[host] += need
        self.free[host] -= need
        self.in_use[host] = 1.0
        self.log.append(host)
        for _, valid in self.measures.values():
            valid[host] = False
        return devices

    def release(self, host: int, victims: list[Running]) -> None:
        """Give back the reservations of evicted instances on `host` (preemption)."""
        gone = {id(v) for v in victims}
        for v in victims:
            self.allocated[host] -= amounts(v.reserved)
            self.free[host] += amounts(v.reserved)
            share = min(v.reserved.gpu_milli, gpumodel.device_milli)
            for d in v.gpus:
                if 0 <= d < self.gpu_free.shape[1]:
                    self.gpu_free[host, d] = min(self.gpu_free[host, d] + share,
                                                 self.table.gpu_capacity[host, d])
        self.gpu_left[host] = self.gpu_free[host].sum()
        self.running_on[host] = [r for r in self.running_on[host] if id(r) not in gone]
        self.in_use[host] = float(np.any(self.allocated[host] > 0))
        self.log.append(host)
        self.released_at = len(self.log)
        for _, valid in self.measures.values():
            valid[host] = False

    def allocated_on(self, name: str) -> ResourceAmounts:
        return to_amounts(self.allocated[self.table.index(name)])

    def to_table(self) -> HostTable:
        """The snapshot with this plan's reservations applied, to continue from."""
        return self.table.with_allocation(self.allocated, self.gpu_free)
