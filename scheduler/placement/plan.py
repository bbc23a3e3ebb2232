"""The plan: proposed allocations on top of a snapshot (Nomad's "proposed allocs"), and what the
engine remembers while it places.

A Plan copies the table's allocation once (its Overlay, overlay.py) and reserves into the copy, so
the table stays the snapshot it was and groups decided later see the groups decided earlier. `log`
lists the host of every reservation in order: the engine uses it to re-score only the hosts that
changed since it last looked (score caching per equivalence class, kept in `classes`).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from packyard.records import ResourceAmounts
from packyard.spec import Constraint
from scheduler.placement import filters, fused, scarcity
from scheduler.placement.asks import Running
from scheduler.placement.config import EngineConfig
from scheduler.placement.mix import MixLearner, Where, WorkloadMix, weighted_median, where_of
from scheduler.placement.overlay import Overlay
from scheduler.placement.scorers import REGISTRY
from scheduler.placement.table import CPU, DISK, GPU, MEMORY, HostTable, to_amounts
from scheduler.placement.view import View


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


def hosts_per_gpu(table: HostTable, capacity: np.ndarray) -> tuple[float, float] | None:
    """The median cpu and memory the hosts with GPUs have per device, weighted by their GPUs (what
    a GPU host's hardware gives each GPU); None without GPUs."""
    gpus = table.gpu_capacity.sum(axis=1)
    has = gpus > 0
    if not has.any():
        return None
    per = capacity[has][:, [CPU, MEMORY]] * (table.device_milli / gpus[has])[:, None]
    return tuple(weighted_median(per[:, r], gpus[has].astype(np.float64)) for r in (0, 1))


class Plan:
    def __init__(self, table: HostTable, config: EngineConfig | None = None,
                 running: Iterable[Running] | None = None):
        self.table = table
        self.config = config if config is not None else EngineConfig()
        device_milli = self.config.device_milli
        if table.device_milli != device_milli:
            raise ValueError(f"the table counts GPUs in devices of {table.device_milli} milli, the "
                             f"config's GPU model {self.config.gpu_model!r} in {device_milli}: build it "
                             "with HostTable.from_hosts(hosts, gpu_model=config.gpu_model)")
        total = sum(w for _, w in self.config.scorers)
        weights = [(name, w / total) for name, w in self.config.scorers if w]
        self.weighted = [(REGISTRY[name], w) for name, w in weights]
        # balance's, occupied's and binpack's shares of the weighted mean: what opening.py may give
        # back or take from an empty host's score (0 for the peers' policies, which weigh none)
        self.balance_weight = sum(w for name, w in weights if name == "balance")
        self.occupied_weight = sum(w for name, w in weights if name == "occupied")
        self.binpack_weight = sum(w for name, w in weights if name == "binpack")
        given = self.config.workload_mix
        self.learner = (MixLearner(device_milli=device_milli)
                        if given is None and self.config.uses_mix() else None)
        capacity = effective_capacity(table.capacity, self.config)
        # what a GPU brings with it on these hosts (cpu and memory, per device): a mix's, given or
        # learned, until it has GPU work of its own (WorkloadMix.per_gpu)
        self.per_gpu = hosts_per_gpu(table, capacity)
        self.overlay = Overlay(table, capacity,
                               given.for_devices(device_milli).with_per_gpu(self.per_gpu) if given is not None else None,
                               keep_measures=self.config.incremental)
        # the engine's refresh, compiled (kernel.py); None: numpy only
        self.fused = fused.for_plan(self.overlay, weights, self.config.incremental)
        self.log: list[int] = []
        # the cluster's cpu and GPU milli, and how much of them is taken (kept by reserve and
        # release), for the clock of the cpu-only shapes' weights (scarcity.py)
        self.cpu_total = int(np.add.reduce(self.overlay.capacity[:, CPU]))
        self.gpu_total = int(np.add.reduce(self.overlay.gpu_capacity, axis=None))
        self.cpu_taken = self.gpu_taken = 0
        self._count_taken()
        self.measured_at: tuple[int, int] | None = None
        # (kind, cpu, memory, disk, gpu) of a request -> its reserved amounts under the profiles,
        # and the same as an array
        self.reserved_of: dict[tuple[str, int, int, int, int], tuple[ResourceAmounts, np.ndarray]] = {}
        # engine-owned score cache: equivalence-class key -> its masks and scores (engine.py)
        self.classes: OrderedDict[Any, Any] = OrderedDict()
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
        # the hosts of each Where the mix (learned or given) names (WorkloadMix.where -> mask)
        self.where_hosts: dict[Where, np.ndarray] = {}
        # pairing.py's last answer: (the mix, (Overlay.emptied, the learner's step), the pair or
        # None), found again only when one of them changes
        self.pairing: tuple[WorkloadMix, tuple[int, float], Any] | None = None
        if given is not None:   # a given mix gets the weights of the hosts as they stand
            self.observe(np.zeros(4, dtype=np.int64), 0)

    # the overlay's arrays, read where the plan is the handle (preempt.py, benchcli, tests)
    @property
    def capacity(self) -> np.ndarray:    # (N, 4) effective: overcommit and host reserve applied
        return self.overlay.capacity

    @property
    def allocated(self) -> np.ndarray:   # (N, 4) the table's allocation + the plan's reservations
        return self.overlay.allocated

    @property
    def free(self) -> np.ndarray:        # (N, 4) capacity - allocated
        return self.overlay.free

    @property
    def gpu_free(self) -> np.ndarray:    # (N, G) milli left per device
        return self.overlay.gpu_free

    @property
    def mix(self) -> WorkloadMix | None:
        return self.overlay.mix

    def observe(self, need: np.ndarray, count: int, constraints: Sequence[Constraint] = ()) -> None:
        """Count an ask (restricted by `constraints`) into the learned mix, and re-measure where the
        cpu-only shapes' room lies when the cluster has filled by a step (scarcity.py); when the
        mix or its weights change, every cached score is stale."""
        mix = None
        if self.learner is not None and count > 0:
            mix = self.learner.observe((int(need[CPU]), int(need[MEMORY]), int(need[GPU])), count,
                                       self._where(constraints))
            if mix is not None:
                mix = mix.with_per_gpu(self.per_gpu)
        if self.gpu_total <= 0:   # no GPU to fragment: the weights are never read
            if mix is not None:
                self._use_mix(mix)
            return
        now = scarcity.clock(self.cpu_taken, self.cpu_total, self.gpu_taken, self.gpu_total)
        if mix is None:
            mix = self.overlay.mix
            if mix is None or now == self.measured_at:
                return
        self.measured_at = now
        weights = scarcity.misfit(self.overlay.free, self.overlay.gpu_left, mix)
        keep_off = scarcity.keep_off(self.overlay.free, self.overlay.gpu_left, mix)
        reserve = scarcity.reserved(self.overlay.gpu_left, mix, self._hosts_of)
        if (mix is self.overlay.mix and np.array_equal(weights, mix.misfit) and keep_off == mix.keep_off
                and self.overlay.same_reserve(reserve)):
            return
        self._use_mix(mix.with_misfit(weights, keep_off), reserve)

    def _where(self, constraints: Sequence[Constraint]) -> Where:
        """The mix's key for the hosts an ask with `constraints` may use (None: any host), its
        mask found once. Only constraints count: whether a host is ready or has the kind's
        driver is the cluster's state, not the work's."""
        where = where_of(constraints)
        if where is None:
            return None
        # constraints every host meets restrict nothing: the ask is any host's
        return None if self._hosts_of(where).all() else where

    def _hosts_of(self, where: Where) -> np.ndarray:
        """The hosts of a (non-None) Where, found once (a given mix's too)."""
        if where not in self.where_hosts:
            self.where_hosts[where] = np.logical_and.reduce([
                filters.constraint(self.table, Constraint(attribute=a, operator=o, value=list(v) if isinstance(v, tuple) else v))[0]
                for a, o, v in where])
        return self.where_hosts[where]

    def _use_mix(self, mix: WorkloadMix, reserve: np.ndarray | None = None) -> None:
        """Measure for `mix` (and the hosts' GPUs `reserve`d for constrained work) from now on."""
        self.overlay.use_mix(mix, reserve)
        self.classes.clear()

    def view(self, need: np.ndarray, rows: slice | np.ndarray = slice(None)) -> View:
        return View(self.overlay, rows, need)

    def _count_taken(self) -> None:
        self.cpu_taken = int(np.add.reduce(self.overlay.allocated[:, CPU]))
        self.gpu_taken = self.gpu_total - int(np.add.reduce(self.overlay.gpu_left))

    def reserve(self, host: int, need: np.ndarray) -> tuple[int, ...]:
        """Reserve `need` on `host` (which the filters found feasible); returns its GPU devices."""
        devices = self.overlay.reserve(host, need)
        self.log.append(host)
        self.cpu_taken += int(need[CPU])
        self.gpu_taken += int(need[GPU])
        return devices

    def release(self, host: int, victims: list[Running]) -> None:
        """Give back the reservations of evicted instances on `host` (preemption)."""
        self.overlay.release(host, victims)
        self._count_taken()
        gone = {id(v) for v in victims}
        self.running_on[host] = [r for r in self.running_on[host] if id(r) not in gone]
        self.log.append(host)
        self.released_at = len(self.log)

    def allocated_on(self, name: str) -> ResourceAmounts:
        return to_amounts(self.allocated[self.table.index(name)])

    def to_table(self) -> HostTable:
        """The snapshot with this plan's reservations applied, to continue from."""
        return self.table.with_allocation(self.allocated, self.gpu_free)
