"""Rows of the plan's hosts (all of them, or the few a reservation changed) as an instance that
needs `need` sees them: what filters and scorers read. Arrays are sliced, and derived ones
computed, on first use, so a filter or scorer pays only for what it reads.

A view reads the Overlay (overlay.py), never the Plan: filters, scorers and the GPU measures sit
below the Plan and take their data from here.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from scheduler.placement.overlay import Overlay
from scheduler.placement.table import CPU, GPU, MEMORY, devices_after


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
    def __init__(self, overlay: Overlay, rows: slice | np.ndarray, need: np.ndarray):
        self.overlay = overlay
        self.rows = rows
        self.need = need            # (4,) the instance's reserved amounts
        self.device_milli = overlay.device_milli

    @cached_property
    def capacity(self) -> np.ndarray:       # (n, 4) effective: overcommit and host reserve applied
        return self.overlay.capacity[self.rows]

    @cached_property
    def allocated(self) -> np.ndarray:      # (n, 4)
        return self.overlay.allocated[self.rows]

    @cached_property
    def free(self) -> np.ndarray:           # (n, 4) what is left before placing the instance
        return self.overlay.free[self.rows]

    @cached_property
    def left_after(self) -> np.ndarray:     # (n, 2) cpu and memory left once the instance is placed
        return self.free[:, :MEMORY + 1] - self.need[:MEMORY + 1]

    @cached_property
    def cpu_after(self) -> np.ndarray:      # (n,)
        return self.left_after[:, CPU]

    @cached_property
    def memory_after(self) -> np.ndarray:   # (n,)
        return self.left_after[:, MEMORY]

    @cached_property
    def used_after(self) -> np.ndarray:
        """(n, 4) fraction of each resource in use once the instance is placed, at most 1; a
        resource the host does not have counts as fully used."""
        frac = (self.allocated + self.need) * self.overlay.inv_capacity[self.rows]
        frac += self.overlay.no_capacity[self.rows]
        return np.minimum(frac, 1.0, out=frac)

    @cached_property
    def gpu_capacity(self) -> np.ndarray:   # (n, G) milli per device
        return self.overlay.gpu_capacity[self.rows]

    @cached_property
    def gpu_free(self) -> np.ndarray:       # (n, G)
        return self.overlay.gpu_free[self.rows]

    @cached_property
    def gpu_free_after(self) -> np.ndarray:
        """(n, G) the devices once the instance is placed, by the rule of overlay.pick_gpus (rows
        where it does not fit are left as they are)."""
        return devices_after(self.gpu_free, int(self.need[GPU]), self.device_milli)

    @cached_property
    def index(self) -> np.ndarray:          # (n,) the rows' host indices
        rows = self.rows
        return rows if isinstance(rows, np.ndarray) else self.overlay.all_rows[rows]

    def shared(self, name: str, compute: Callable[[View], Any]) -> Any:
        """compute(self) the first time `name` is asked for, the same value after: for what
        several scorers read (both GPU scorers read fragmentation.gradients)."""
        memo = self.__dict__
        if name not in memo:
            memo[name] = compute(self)
        return memo[name]

    def __len__(self) -> int:
        return len(self.free)   # (every refresh gathers it for the fit filters)
