"""The host table: one snapshot of every host as numpy arrays, so a filter is one vectorised mask
and a scorer one float array over all hosts.

Rows are hosts in the order given; a row index is a host's identity inside the engine and the
tie-break between equal scores (lowest index wins). The table is immutable: its arrays are
read-only, and a placement run reserves into a Plan (plan.py), never into the table.

GPUs are devices, not a pool: a host with `gpu_milli=4000` has four GPUs of 1000 milli each, and
`gpu_free[i, d]` is what is left on device d of host i. A share of one GPU (< 1000 milli) must fit
on a single device, and whole GPUs must be whole free devices; an aggregate counter would happily
place two 0.6 shares "on" one GPU. The device size is the table's (`device_milli`, from the GPU
model it was built for, gpumodel.py): the layout depends on it.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from packyard.records import ResourceAmounts
from scheduler.placement import gpumodel

RESOURCES = ("cpu_milli", "memory_bytes", "disk_bytes", "gpu_milli")
CPU, MEMORY, DISK, GPU = range(4)
MISSING = -1   # code of a host that has no value for a column


def amounts(a: ResourceAmounts) -> np.ndarray:
    return np.array([a.cpu_milli, a.memory_bytes, a.disk_bytes, a.gpu_milli], dtype=np.int64)


def to_amounts(v: np.ndarray) -> ResourceAmounts:
    return ResourceAmounts(*(int(x) for x in v))


@dataclass(frozen=True)
class Host:
    """One host as the scheduler's snapshot sees it. `allocated` is what is already reserved on it
    (overhead included). `gpu_allocated` gives the per-device split when known; without it the
    aggregate `allocated.gpu_milli` is laid onto devices in order (whole devices first)."""
    name: str
    capacity: ResourceAmounts
    allocated: ResourceAmounts = field(default_factory=ResourceAmounts)
    ready: bool = True
    labels: Mapping[str, str] = field(default_factory=dict)
    attributes: Mapping[str, str] = field(default_factory=dict)
    gpu_allocated: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Column:
    """A host property as integer codes (MISSING where a host lacks it) and the code of each value."""
    codes: np.ndarray
    vocab: Mapping[str, int]

    def code(self, value: str) -> int:
        return self.vocab.get(value, -2)   # -2 matches no host, not even MISSING


def _devices(capacity_milli: int, allocated_milli: int, given: tuple[int, ...] | None,
             width: int, device_milli: int) -> np.ndarray:
    """Free milli per GPU device (of `device_milli`) of one host, padded with 0 (no device) to `width`."""
    n = -(-capacity_milli // device_milli)
    size = np.clip(capacity_milli - device_milli * np.arange(width), 0, device_milli)
    if given is not None:
        if len(given) > n:
            raise ValueError(f"gpu_allocated names {len(given)} devices, the host has {n}")
        used = np.zeros(width, dtype=np.int64)
        used[:len(given)] = given
        if np.any(used < 0) or np.any(used > size):
            raise ValueError(f"gpu_allocated {given} does not fit devices of {size[:n].tolist()} milli")
    else:
        used = np.clip(allocated_milli - device_milli * np.arange(width), 0, device_milli)
    return (size - used).astype(np.int64)


def devices_after(gpu_free: np.ndarray, g: int, device_milli: int) -> np.ndarray:
    """(n, G) each host's devices (of `device_milli`) once an instance asking `g` milli-GPUs is
    placed there, by the rule of overlay.pick_gpus (rows where it does not fit are left as they are)."""
    after = gpu_free.copy()
    if g <= 0 or after.size == 0:
        return after
    if g < device_milli:
        candidates = np.where(after >= g, after, np.iinfo(np.int64).max)
        device = np.argmin(candidates, axis=1)
        rows = np.flatnonzero(candidates[np.arange(len(after)), device] != np.iinfo(np.int64).max)
        after[rows, device[rows]] -= g
    else:
        whole = after == device_milli
        enough = whole.sum(axis=1) >= g // device_milli
        take = whole & (np.cumsum(whole, axis=1) <= g // device_milli) & enough[:, None]
        after[take] = 0
    return after


def _column(values: Iterable[str | None], n: int) -> Column:
    codes = np.full(n, MISSING, dtype=np.int32)
    vocab: dict[str, int] = {}
    for i, v in enumerate(values):
        if v is not None:
            codes[i] = vocab.setdefault(v, len(vocab))
    codes.setflags(write=False)
    return Column(codes, vocab)


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class HostTable:
    names: tuple[str, ...]
    capacity: np.ndarray        # (N, 4) int64, RESOURCES order
    allocated: np.ndarray       # (N, 4) int64, overhead included
    ready: np.ndarray           # (N,) bool
    gpu_capacity: np.ndarray    # (N, G) int64 milli per device, 0 where the host has no device d
    gpu_free: np.ndarray        # (N, G) int64
    columns: Mapping[str, Column]   # "label.<key>", "node.name", and every attribute name
    device_milli: int = gpumodel.ONE_GPU     # milli per GPU device under the model the table was built for

    @classmethod
    def from_hosts(cls, hosts: Iterable[Host], *, gpu_model: str = gpumodel.DEVICES) -> HostTable:
        """The table of `hosts`, their GPUs laid out as devices of `gpu_model` (gpumodel.py; a
        Plan refuses a table built for another model than its EngineConfig.gpu_model)."""
        device_milli = gpumodel.device_milli(gpu_model)
        hosts = list(hosts)
        names = tuple(h.name for h in hosts)
        if len(set(names)) != len(names):
            raise ValueError("host names must be unique")
        n = len(hosts)
        capacity = np.array([amounts(h.capacity) for h in hosts], dtype=np.int64).reshape(n, 4)
        allocated = np.array([amounts(h.allocated) for h in hosts], dtype=np.int64).reshape(n, 4)
        width = int(max(1, -(-int(capacity[:, GPU].max(initial=0)) // device_milli)))
        gpu_capacity = np.array([_devices(int(c[GPU]), 0, (), width, device_milli) for c in capacity],
                                dtype=np.int64).reshape(n, width)
        gpu_free = np.zeros((n, width), dtype=np.int64)
        for i, h in enumerate(hosts):
            if h.gpu_allocated is not None and sum(h.gpu_allocated) != h.allocated.gpu_milli:
                raise ValueError(f"{h.name}: gpu_allocated does not add up to allocated.gpu_milli")
            try:
                gpu_free[i] = _devices(h.capacity.gpu_milli, h.allocated.gpu_milli, h.gpu_allocated, width,
                                       device_milli)
            except ValueError as e:
                raise ValueError(f"{h.name}: {e}") from None
        columns = {"node.name": Column(_frozen(np.arange(n, dtype=np.int32)),
                                       {name: i for i, name in enumerate(names)})}
        for prefix, maps in (("label.", [h.labels for h in hosts]),
                             ("", [h.attributes for h in hosts])):
            keys = sorted({k for m in maps for k in m})
            for k in keys:
                columns[prefix + k] = _column((m.get(k) for m in maps), n)
        ready = np.array([h.ready for h in hosts], dtype=bool).reshape(n)
        return cls(names, _frozen(capacity), _frozen(allocated), _frozen(ready),
                   _frozen(gpu_capacity), _frozen(gpu_free), columns, device_milli)

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        return self.columns["node.name"].vocab[name]

    def column(self, attribute: str) -> Column:
        """`label.X` -> labels[X], `node.name` -> the name, anything else -> attributes[attribute].
        A property no host has is an all-MISSING column."""
        col = self.columns.get(attribute)
        if col is None:
            return Column(_frozen(np.full(len(self), MISSING, dtype=np.int32)), {})
        return col

    def with_allocation(self, allocated: np.ndarray, gpu_free: np.ndarray) -> HostTable:
        """The same hosts with another allocation (a committed plan)."""
        if allocated.shape != self.allocated.shape or gpu_free.shape != self.gpu_free.shape:
            raise ValueError("allocation does not match this table's shape")
        return HostTable(self.names, self.capacity, _frozen(allocated.copy()), self.ready,
                         self.gpu_capacity, _frozen(gpu_free.copy()), self.columns, self.device_milli)
