"""The plan's hosts as they stand: the table's allocation with the plan's reservations and
releases applied (Nomad's "proposed allocs"), as arrays changed in place, and what the scorers
keep per host state (measures.py) and the workload mix they measure for.

The Plan (plan.py) decides what to reserve and keeps the log of it; this holds the numbers. They
change only through reserve() and release(), which also drop the changed host's measures, and
use_mix(), which drops them all: a measure is never read for a state it was not taken in.
"""
from __future__ import annotations

import functools
from collections.abc import Iterable

import numpy as np

from scheduler.placement.asks import Running
from scheduler.placement.measures import Measures
from scheduler.placement.mix import WorkloadMix
from scheduler.placement.table import GPU, HostTable, amounts

# Overlay.gpu_reserved when no host's GPUs are reserved (nothing to read)
NOT_RESERVED = np.zeros(0)


def pick_gpus(free: np.ndarray, gpu_milli: int, device_milli: int) -> tuple[int, ...]:
    """The devices (of `device_milli`) of one host that an instance asking `gpu_milli` takes, or
    () if none fit. A share goes to the fullest device that still holds it (best fit), keeping
    whole GPUs whole; whole GPUs take the lowest-numbered wholly free devices."""
    if gpu_milli <= 0:
        return ()
    if gpu_milli < device_milli:
        fits = np.flatnonzero(free >= gpu_milli)
        return (int(fits[np.argmin(free[fits])]),) if fits.size else ()
    whole = np.flatnonzero(free == device_milli)
    k = gpu_milli // device_milli
    return tuple(int(d) for d in whole[:k]) if whole.size >= k else ()


class Overlay:
    def __init__(self, table: HostTable, capacity: np.ndarray, mix: WorkloadMix | None,
                 keep_measures: bool = True):
        """`capacity`: the effective capacity (overcommit and host reserve applied, plan.py)."""
        self.device_milli = table.device_milli
        self.capacity = capacity
        self.inv_capacity = np.zeros(capacity.shape)
        np.divide(1.0, capacity, out=self.inv_capacity, where=capacity > 0)
        self.no_capacity = (capacity <= 0).astype(np.float64)
        # what the balance scorer measures a host's leftovers in: the largest host's cpu and memory
        # (at least 1), the same for every host (a row each, as the kernel reads it), so that a
        # small host's leftovers weigh what they are: measured as a share of the host itself, an
        # instance moved a small host's proportions the most, and balance opened many small hosts
        # where a few large ones held the work (bench/PACKING.md, change 8)
        top = np.maximum(capacity[:, :2].max(axis=0, initial=0), 1)
        self.cpu_memory_scale = np.ascontiguousarray(np.broadcast_to(top, capacity[:, :2].shape))
        self.gpu_capacity = table.gpu_capacity
        # the GPU scorers' scale: the largest host's GPUs
        self.gpu_scale = int(table.gpu_capacity.sum(axis=1).max(initial=0))
        self.allocated = table.allocated.copy()
        # capacity - allocated, kept with it (a refresh reads it for every row it looks at)
        self.free = capacity - self.allocated
        self.in_use = np.any(self.allocated > 0, axis=1).astype(np.float64)   # 1.0: holds something
        # each host's cpu and memory as a share of the largest host's (a table constant): when a
        # host must be opened, the larger one holds more of what follows (the bound fills them first)
        top = np.maximum(capacity[:, :2].max(axis=0, initial=0), 1)
        self.size = (capacity[:, 0] / top[0] + capacity[:, 1] / top[1]) / 2
        # the same with the host's GPUs as a third share, for instances that ask for GPUs: a GPU
        # instance opens the host with the most room for GPU work, not a large host with few GPUs
        gpus = table.gpu_capacity.sum(axis=1)
        self.size_gpu = (2 * self.size + gpus / max(int(gpus.max(initial=0)), 1)) / 3
        self.gpu_free = table.gpu_free.copy()
        # free GPU milli per host: a host with none left scores 0.5 on the GPU terms for the
        # instances it can still take (those without GPUs), exactly, without computing them
        self.gpu_left = self.gpu_free.sum(axis=1)
        self.all_rows = np.arange(len(table))
        self.measures = Measures(len(table), keep_measures)
        self.mix = mix
        # (N,) the share of each host's free GPUs that work restricted to it will need
        # (scarcity.reserved); empty when no work is restricted
        self.gpu_reserved = NOT_RESERVED
        self.emptied = 0   # (open_by_shape)

    @functools.cached_property
    def shapes(self) -> tuple[np.ndarray, np.ndarray]:
        """The hosts' shapes (cpu and memory): a host of each, and each host's shape. Empty hosts
        of one shape are alike to open (opening.py). Taken on first use, not per Plan: ~10 ms on
        10,000 hosts, and the service makes a Plan every pass."""
        _, host, shape_of = np.unique(self.capacity[:, :2], axis=0, return_index=True, return_inverse=True)
        return host, shape_of.reshape(-1)

    @functools.cached_property
    def shape_hosts(self) -> list[np.ndarray]:
        """Per shape (`shapes`), its hosts in index order."""
        host, shape_of = self.shapes
        order = np.argsort(shape_of, kind="stable")
        return np.split(order, np.cumsum(np.bincount(shape_of, minlength=len(host)))[:-1])

    @functools.cached_property
    def open_by_shape(self) -> list[np.ndarray]:
        """Per shape, its hosts that hold something (pairing.py looks among these: a few hundred
        where a shape has thousands). Taken on first use, then kept by reserve() and release(),
        which count in `emptied` each time a shape's last empty host is taken or one is empty
        again (the shapes with empty hosts have changed)."""
        return [rows[self.in_use[rows] > 0] for rows in self.shape_hosts]

    def empty_by_shape(self) -> np.ndarray:
        return np.array([len(h) - len(o) for h, o in zip(self.shape_hosts, self.open_by_shape, strict=True)])

    def _opened(self, host: int, opened: bool) -> None:
        if "open_by_shape" not in self.__dict__:   # (not taken yet: nothing to keep)
            return
        shape = self.shapes[1][host]
        rows = self.open_by_shape[shape]
        full = len(rows) == len(self.shape_hosts[shape])
        self.open_by_shape[shape] = np.append(rows, host) if opened else rows[rows != host]
        if full != (len(self.open_by_shape[shape]) == len(self.shape_hosts[shape])):
            self.emptied += 1

    def use_mix(self, mix: WorkloadMix, reserve: np.ndarray | None = None) -> None:
        """Measure for another workload mix (and `reserve`, None: nothing reserved) from now on:
        every measure taken is stale."""
        if reserve is not None and reserve.shape != self.gpu_left.shape:
            raise ValueError("reserve must have one value per host")
        self.mix = mix
        self.gpu_reserved = NOT_RESERVED if reserve is None else reserve
        self.measures.clear()

    def same_reserve(self, reserve: np.ndarray | None) -> bool:
        return np.array_equal(self.gpu_reserved, NOT_RESERVED if reserve is None else reserve)

    def reserve(self, host: int, need: np.ndarray) -> tuple[int, ...]:
        """Reserve `need` on `host` (which the filters found feasible); returns its GPU devices."""
        devices = pick_gpus(self.gpu_free[host], int(need[GPU]), self.device_milli)
        if need[GPU] > 0:
            if not devices:
                raise AssertionError(f"no GPU device on host {host} holds {need[GPU]} milli")
            share = min(int(need[GPU]), self.device_milli)
            self.gpu_free[host, list(devices)] -= share
            self.gpu_left[host] -= share * len(devices)
        self.allocated[host] += need
        self.free[host] -= need
        if not self.in_use[host]:
            self._opened(host, True)
        self.in_use[host] = 1.0
        self.measures.changed(host, devices=need[GPU] > 0)
        return devices

    def release(self, host: int, victims: Iterable[Running]) -> None:
        """Give back the reservations of evicted instances on `host` (preemption)."""
        for v in victims:
            self.allocated[host] -= amounts(v.reserved)
            self.free[host] += amounts(v.reserved)
            share = min(v.reserved.gpu_milli, self.device_milli)
            for d in v.gpus:
                if 0 <= d < self.gpu_free.shape[1]:
                    self.gpu_free[host, d] = min(self.gpu_free[host, d] + share,
                                                 self.gpu_capacity[host, d])
        self.gpu_left[host] = self.gpu_free[host].sum()
        was = self.in_use[host]
        self.in_use[host] = float(np.any(self.allocated[host] > 0))
        if was and not self.in_use[host]:
            self._opened(host, False)
        self.measures.changed(host)
