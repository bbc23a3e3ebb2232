"""Per-host measures: values that depend on a host's state (and the workload mix) but not on the
instance being placed, such as a scorer's "before" (fragmentation.py, scorers.balance).

Computed once per host state and shared by every equivalence class: a scorer asks which of its
rows are stale, computes those (usually in the same numpy calls as the rows' "after" values, so
there is no `compute` callback here) and remembers them. A host's values are dropped when its
state changes (Overlay.reserve and release), all of them when the mix changes. A measure
remembered with `devices_only=True` reads nothing but the host's GPU devices: a reservation that
takes no GPU keeps it (most instances of a GPU mix ask for none).

Hosts are row indices of the table; this module knows nothing of plans or views.
"""
from __future__ import annotations

import numpy as np


class Measures:
    def __init__(self, hosts: int, keep: bool = True):
        self.hosts = hosts
        # False: every measure is recomputed on every call (EngineConfig(incremental=False), the
        # reference the property tests compare the cached engine against)
        self.keep = keep
        # name -> (values (hosts, ...), valid (hosts,) bool)
        self.entries: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        # the valid flags of the measures that change with the host's devices alone
        self.devices_only: list[np.ndarray] = []
        self.others: list[np.ndarray] = []
        # how many times everything was dropped: a holder of entry() arrays checks it (kernel.py)
        self.generation = 0

    def stale(self, name: str, index: np.ndarray) -> np.ndarray | None:
        """Positions in `index` (host indices) of the hosts whose measure `name` must be
        (re)computed; None when there are none."""
        entry = self.entries.get(name)
        if entry is None or not self.keep:
            return np.arange(len(index))
        stale = (~entry[1][index]).nonzero()[0]
        return stale if len(stale) else None

    def known(self, name: str, index: np.ndarray) -> np.ndarray:
        """The measure `name` of the hosts `index`, none of them stale."""
        return self.entries[name][0][index]

    def entry(self, name: str, tail: tuple[int, ...], dtype: type,
              devices_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The store (hosts, *tail) and valid flags (hosts,) of measure `name`, made empty if
        there are none yet: for a caller that computes and stores values itself (kernel.py), as
        remember() would. Valid until clear() (`generation` says when)."""
        entry = self.entries.get(name)
        if entry is None:
            entry = self.entries[name] = (np.zeros((self.hosts, *tail), dtype=dtype),
                                          np.zeros(self.hosts, dtype=bool))
            (self.devices_only if devices_only else self.others).append(entry[1])
        return entry

    def remember(self, name: str, index: np.ndarray, stale: np.ndarray, values: np.ndarray,
                 devices_only: bool = False) -> np.ndarray:
        """Store the measure `name` computed for the hosts index[stale]; return it for every
        host of `index`. `devices_only`: the measure reads only the host's GPU devices."""
        store, valid = self.entry(name, values.shape[1:], values.dtype, devices_only)
        hosts = index[stale]
        store[hosts] = values
        valid[hosts] = True
        return values if len(stale) == len(index) else store[index]

    def changed(self, host: int, devices: bool = True) -> None:
        """The host's state changed: every measure of it is stale, but for those that read only
        its devices when they did not change (`devices` False)."""
        for valid in self.others:
            valid[host] = False
        if devices:
            for valid in self.devices_only:
                valid[host] = False

    def clear(self) -> None:
        """Everything is stale (the workload mix changed)."""
        self.entries.clear()
        self.generation += 1
        self.devices_only.clear()
        self.others.clear()
