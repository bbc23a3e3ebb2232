"""The placement pipeline (README.md draws it):

    overhead profile -> static filters -> dynamic filters -> scorers -> weigh -> select -> reserve

A group of `count` instances is one equivalence class: the filters and scorers run once over all
hosts, and after each reservation only the chosen host's row is re-evaluated. Classes are cached
in the Plan (Borg's score caching): when a later ask has the same kind, reserved amounts and
constraints, only the hosts reserved on since it was last evaluated (Plan.log) are re-evaluated.
This is exact, not an approximation, because every filter and scorer reads its own row only.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from packyard.records import ResourceAmounts
from scheduler.placement import filters
from scheduler.placement.asks import GroupAsk, GroupPlacement, Status
from scheduler.placement.config import EngineConfig
from scheduler.placement.plan import Plan, View
from scheduler.placement.scorers import REGISTRY
from scheduler.placement.table import CPU, DISK, GPU, GPU_DEVICE_MILLI, MEMORY, HostTable, amounts, to_amounts

NEG = -np.inf
DynamicCheck = Callable[[View], filters.Verdict]


@dataclass
class _Class:
    """Filter codes and scores of one equivalence class over all hosts, as of Plan.log[:seen].
    code[i] = 0: host i is feasible; k > 0: reasons[k - 1] rejected it first."""
    need: np.ndarray
    reasons: list[str]
    distinct_code: int
    static: np.ndarray           # (N,) int16, codes of the static filters alone
    dynamic: list[DynamicCheck]  # with codes distinct_code + 1, + 2, ...
    code: np.ndarray             # (N,) int16
    score: np.ndarray            # (N,) float64, -inf where code != 0
    seen: int = 0


def place(table: HostTable, asks: Iterable[GroupAsk], config: EngineConfig | None = None, *,
          plan: Plan | None = None) -> list[GroupPlacement]:
    """Place every ask in order, each seeing the reservations of those before it. `table` is never
    changed; pass `plan=Plan(table, config)` to keep the reservations (plan.to_table())."""
    if plan is None:
        plan = Plan(table, config)
    elif plan.table is not table:
        raise ValueError("plan was made for another table")
    elif config is not None and config is not plan.config:
        raise ValueError("plan was made with another config")
    return [place_group(plan, ask) for ask in asks]


def place_group(plan: Plan, ask: GroupAsk) -> GroupPlacement:
    profile = plan.config.profiles.get(ask.kind)
    if profile is None:
        return _error(ask, ResourceAmounts(), f"no overhead profile for kind {ask.kind!r}")
    reserved = profile.reserve(ask.request)
    if reserved.gpu_milli > GPU_DEVICE_MILLI and reserved.gpu_milli % GPU_DEVICE_MILLI:
        return _error(ask, reserved, "more than one GPU must be a whole number of GPUs")
    plan.observe(amounts(reserved), ask.count)
    n = len(plan.table)
    used = _existing(plan.table, ask) if ask.distinct_hosts else []
    hosts: list[str] = []
    gpus: list[tuple[int, ...]] = []
    cls = None
    working = np.empty(0)
    for i in range(ask.count):
        if cls is None or not plan.config.incremental:
            cls = _class_for(plan, ask, reserved)
            working = cls.score
            if ask.distinct_hosts:   # a private copy: the cached scores must stay the class's own
                working = cls.score.copy()
                working[used] = NEG
        elif i:   # only the host chosen last has changed since: re-evaluate its row alone
            last = plan.log[-1]
            _refresh(plan, cls, np.array([last]))
            cls.seen = len(plan.log)
            if ask.distinct_hosts:
                working[last] = NEG
        best = int(np.argmax(working)) if n else 0
        if n == 0 or working[best] == NEG:
            break
        gpus.append(plan.reserve(best, cls.need))
        hosts.append(plan.table.names[best])
        if ask.distinct_hosts:
            used.append(best)
    unplaced = ask.count - len(hosts)
    reasons: dict[str, int] = {}
    if unplaced:
        if cls is None:
            cls = _class_for(plan, ask, reserved)
        reasons = _explain(cls, used)
    status = (Status.PLACED if not unplaced else Status.PARTIAL if hosts else Status.UNSCHEDULABLE)
    return GroupPlacement(ask, reserved, hosts, unplaced, reasons, status, gpus)


def _error(ask: GroupAsk, reserved: ResourceAmounts, message: str) -> GroupPlacement:
    return GroupPlacement(ask, reserved, [], ask.count, {}, Status.ERROR, error=message)


def _existing(table: HostTable, ask: GroupAsk) -> list[int]:
    vocab = table.columns["node.name"].vocab
    return [vocab[h] for h in ask.existing_hosts if h in vocab]


def _key(ask: GroupAsk, need: np.ndarray) -> tuple:
    cons = tuple((c.attribute, c.operator, tuple(c.value) if isinstance(c.value, list) else c.value)
                 for c in ask.constraints)
    return ask.kind, tuple(need.tolist()), cons


def _class_for(plan: Plan, ask: GroupAsk, reserved: ResourceAmounts) -> _Class:
    """The class of this ask, brought up to date with the plan."""
    need = amounts(reserved)
    if not plan.config.incremental:
        cls = _new_class(plan, ask, need)
        _refresh(plan, cls, slice(None))
        return cls
    key = _key(ask, need)
    cls = plan.classes.get(key)
    if cls is None:
        cls = _new_class(plan, ask, need)
        _refresh(plan, cls, slice(None))
        plan.classes[key] = cls
        while len(plan.classes) > plan.config.max_cached_classes:
            plan.classes.popitem(last=False)
    else:
        plan.classes.move_to_end(key)
        changed = plan.log[cls.seen:]
        if len(changed) * 4 > len(plan.table):
            _refresh(plan, cls, slice(None))
        elif changed:
            _refresh(plan, cls, np.array(changed))
    cls.seen = len(plan.log)
    return cls


def _new_class(plan: Plan, ask: GroupAsk, need: np.ndarray) -> _Class:
    table = plan.table
    verdicts = [filters.node_ready(table), filters.driver_available(table, ask.kind)]
    verdicts += [filters.constraint(table, c) for c in ask.constraints]
    static = np.zeros(len(table), dtype=np.int16)
    for k, (mask, _) in enumerate(verdicts, start=1):
        static[(static == 0) & ~mask] = k
    reasons = [reason for _, reason in verdicts] + [filters.DISTINCT_REASON]
    dynamic: list[DynamicCheck] = []
    for r in (CPU, MEMORY, DISK):
        if need[r] > 0:
            dynamic.append(lambda view, r=r: filters.fits(view, r))
    if need[GPU] > 0:
        dynamic.append(filters.gpu_fits)
    # a reason string per dynamic check, known without running it
    reasons += [f"not enough {filters.RESOURCE_NAMES[r]}" for r in (CPU, MEMORY, DISK) if need[r] > 0]
    reasons += ["not enough gpu"] if need[GPU] > 0 else []
    n = len(table)
    return _Class(need, reasons, len(verdicts) + 1, static, dynamic,
                  np.zeros(n, dtype=np.int16), np.full(n, NEG))


def _refresh(plan: Plan, cls: _Class, rows: slice | np.ndarray) -> None:
    """Re-run the dynamic filters and the scorers on `rows` against the plan as it stands."""
    view = plan.view(cls.need, rows)
    code = cls.static[rows].copy()
    for k, check in enumerate(cls.dynamic, start=cls.distinct_code + 1):
        mask, _ = check(view)
        code[(code == 0) & ~mask] = k
    score = _score(plan.config, view)
    score[code != 0] = NEG
    cls.code[rows] = code
    cls.score[rows] = score


def _score(config: EngineConfig, view: View) -> np.ndarray:
    """Weighted mean of the scorers, each clipped to [0, 1]."""
    total = sum(w for _, w in config.scorers)
    out = np.zeros(len(view))
    for name, weight in config.scorers:
        if weight:
            s = REGISTRY[name](view)
            out += (weight / total) * np.minimum(np.maximum(s, 0.0), 1.0)
    return out


def _explain(cls: _Class, used: list[int]) -> dict[str, int]:
    code = cls.code.copy()
    if used:
        d = cls.distinct_code
        u = np.array(used)
        code[u] = np.where((code[u] == 0) | (code[u] > d), d, code[u])
    counts = np.bincount(code, minlength=len(cls.reasons) + 1)
    assert counts[0] == 0, "explaining a class that still has a feasible host"
    reasons: dict[str, int] = {}
    for k, count in enumerate(counts[1:].tolist(), start=1):
        if count:
            reason = cls.reasons[k - 1]
            reasons[reason] = reasons.get(reason, 0) + count
    return reasons


def reserved_amounts(placement: GroupPlacement) -> ResourceAmounts:
    """Everything a placement reserved, all instances together."""
    return to_amounts(amounts(placement.reserved) * placement.placed)
