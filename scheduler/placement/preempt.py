"""Preemption: when an instance fits on no host, evict lower-priority instances from one host so
that it does (issue 3). Pure: it proposes victims; the controller stops them and reschedules
them as pending.

Rules (README.md):
- only instances of priority <= ask priority - EngineConfig.preempt_margin (10 by default, as
  Nomad) are victims, never equal or higher ones; only on hosts the ask's static filters admit
  (node ready, driver, constraints) and distinct_hosts allows;
- one host per instance; on it the fewest victims, then the lowest highest priority among them,
  then the lowest sum of priorities, then the least capacity freed (as a share of the host);
  ties go to the lowest host index. Per host the victims are chosen by a heuristic, exact for a
  single victim: the best single victim that makes room if there is one, else lowest priority
  first (largest first among equals) until the instance fits, then any victim not needed is
  given back (highest priority first).
"""
from __future__ import annotations

import numpy as np

from scheduler.placement.asks import Running
from scheduler.placement.plan import Plan
from scheduler.placement.table import CPU, DISK, GPU, MEMORY, amounts

Cost = tuple[int, int, int, float]


def fits(free: np.ndarray, gpu_free: np.ndarray, need: np.ndarray, device_milli: int) -> bool:
    """The fit filters (filters.fits, filters.gpu_fits) for one host's free amounts."""
    for r in (CPU, MEMORY, DISK):
        if need[r] > 0 and free[r] < need[r]:
            return False
    g = int(need[GPU])
    if g <= 0:
        return True
    if g < device_milli:
        return bool(gpu_free.max(initial=0) >= g)
    return int((gpu_free == device_milli).sum()) >= g // device_milli


class _Host:
    """One host's free amounts as victims are taken off it."""

    def __init__(self, plan: Plan, host: int):
        self.capacity = np.maximum(plan.capacity[host], 1)
        self.free = plan.capacity[host] - plan.allocated[host]
        self.gpu_free = plan.gpu_free[host].copy()
        self.device_milli = plan.table.device_milli

    def after(self, victims: list[Running]) -> tuple[np.ndarray, np.ndarray]:
        free, gpu = self.free.copy(), self.gpu_free.copy()
        for v in victims:
            free[:GPU] += amounts(v.reserved)[:GPU]
            share = min(v.reserved.gpu_milli, self.device_milli)
            for d in v.gpus:
                if 0 <= d < len(gpu):
                    gpu[d] += share
        return free, gpu

    def fits_without(self, victims: list[Running], need: np.ndarray) -> bool:
        return fits(*self.after(victims), need, self.device_milli)

    def size(self, v: Running) -> float:
        """What evicting `v` frees, as a share of the host (summed over resources)."""
        return float((amounts(v.reserved) / self.capacity).sum())


def victims_on(plan: Plan, host: int, need: np.ndarray, eligible: list[Running]) -> list[Running] | None:
    """The victims to evict from `host` so that `need` fits, or None if evicting every eligible
    instance would not make room."""
    h = _Host(plan, host)
    if not h.fits_without(eligible, need):
        return None
    singles = [v for v in eligible if h.fits_without([v], need)]
    if singles:
        return [min(singles, key=lambda v: (v.priority, h.size(v)))]
    chosen: list[Running] = []
    for v in sorted(eligible, key=lambda v: (v.priority, -h.size(v))):
        chosen.append(v)
        if h.fits_without(chosen, need):
            break
    for v in sorted(chosen, key=lambda v: (-v.priority, h.size(v))):   # give back what is not needed
        rest = [c for c in chosen if c is not v]
        if h.fits_without(rest, need):
            chosen = rest
    return chosen


def cost(plan: Plan, host: int, victims: list[Running]) -> Cost:
    h = _Host(plan, host)
    return (len(victims), max(v.priority for v in victims), sum(v.priority for v in victims),
            sum(h.size(v) for v in victims))


def choose(plan: Plan, need: np.ndarray, priority: int, admitted: np.ndarray,
           used: list[int]) -> tuple[int, list[Running]] | str:
    """The host and victims that make room for one instance of priority `priority` at the least
    harm, or why there are none (the explanation's last words)."""
    limit = priority - plan.config.preempt_margin
    blocked = set(used)
    best: tuple[Cost, int, list[Running]] | None = None
    any_eligible = False
    for host in sorted(plan.running_on):
        if not admitted[host] or host in blocked:
            continue
        eligible = [v for v in plan.running_on[host] if v.priority <= limit]
        if not eligible:
            continue
        any_eligible = True
        victims = victims_on(plan, host, need, eligible)
        if victims is None:
            continue
        c = cost(plan, host, victims)
        if best is None or c < best[0]:
            best = (c, host, victims)
    if best is not None:
        return best[1], best[2]
    if not any_eligible:
        return (f"preemption cannot help: no instance of priority <= {limit} runs on a host "
                "this group may use")
    return (f"preemption cannot help: evicting every instance of priority <= {limit} from one "
            "host would not make room on any")
