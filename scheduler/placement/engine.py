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
from scheduler.placement import filters, opening, pairing, preempt
from scheduler.placement.asks import GroupAsk, GroupPlacement, Preemption, Running, Status
from scheduler.placement.config import EngineConfig
from scheduler.placement.plan import Plan
from scheduler.placement.soft import SoftTerms
from scheduler.placement.table import CPU, DISK, GPU, MEMORY, HostTable, amounts
from scheduler.placement.view import View

NEG = -np.inf
DynamicCheck = Callable[[View], filters.Verdict]


@dataclass
class _Class:
    """Feasibility and scores of one equivalence class over all hosts, as of Plan.log[:seen]
    (-inf: infeasible). Which filter rejected each host (`code`) is needed only when an instance
    finds no host, so it is brought up to date then, separately (_explain)."""
    need: np.ndarray
    reasons: list[str]           # reasons[k - 1] for filter code k
    distinct_code: int
    static: np.ndarray           # (N,) int16: the first static filter rejecting each host, 0 = none
    static_ok: np.ndarray        # (N,) bool: static == 0
    dynamic: list[DynamicCheck]  # with codes distinct_code + 1, + 2, ...
    score: np.ndarray            # (N,) float64
    floor: np.ndarray            # (3,) cpu, memory, disk asked, the lowest int64 where none is
    seen: int = 0
    code: np.ndarray | None = None   # (N,) int16 filter codes as of Plan.log[:code_seen]
    code_seen: int = 0


def place(table: HostTable, asks: Iterable[GroupAsk], config: EngineConfig | None = None, *,
          plan: Plan | None = None, running: Iterable[Running] | None = None) -> list[GroupPlacement]:
    """Place every ask in order, each seeing the reservations of those before it. `table` is never
    changed; pass `plan=Plan(table, config)` to keep the reservations (plan.to_table()). Given the
    `running` instances (or a Plan made with them; [] when nothing runs), an instance that fits
    nowhere may evict lower-priority ones (preempt.py; GroupPlacement.preemptions). Without them
    (None) there is no preemption."""
    if plan is None:
        plan = Plan(table, config, running)
    elif running is not None:
        raise ValueError("give the running instances to the Plan, not to place()")
    elif plan.table is not table:
        raise ValueError("plan was made for another table")
    elif config is not None and config is not plan.config:
        raise ValueError("plan was made with another config")
    return [place_group(plan, ask) for ask in asks]


def place_group(plan: Plan, ask: GroupAsk) -> GroupPlacement:
    profile = plan.config.profiles.get(ask.kind)
    if profile is None:
        return _error(ask, ResourceAmounts(), f"no overhead profile for kind {ask.kind!r}")
    r = ask.request
    shape = (ask.kind, r.cpu_milli, r.memory_bytes, r.disk_bytes, r.gpu_milli)
    known = plan.reserved_of.get(shape)
    if known is None:   # the profile is the plan's, fixed: one computation per shape
        reserved = profile.reserve(r)
        known = plan.reserved_of[shape] = (reserved, amounts(reserved))
    reserved, need = known
    device = plan.table.device_milli   # the config's GPU model (the Plan checked)
    if reserved.gpu_milli > device and reserved.gpu_milli % device:
        return _error(ask, reserved, "more than one GPU must be a whole number of GPUs")
    plan.observe(need, ask.count, ask.constraints)
    n = len(plan.table)
    existing = _existing(plan.table, ask)
    used = list(existing) if ask.distinct_hosts else []
    hosts: list[str] = []
    gpus: list[tuple[int, ...]] = []
    cls = None
    preemptions: list[Preemption] = []
    note = ""
    soft: SoftTerms | None = None
    working = np.empty(0)
    for i in range(ask.count):
        if cls is None or not plan.config.incremental:
            cls = _class_for(plan, ask, need)
            if soft is None:
                soft = SoftTerms.of(plan.table, ask, cls.static_ok, existing)
            working = _working(cls, soft, used, ask.distinct_hosts)
        elif i:   # only the host chosen last has changed since: re-evaluate its row alone
            last = plan.log[-1]
            _refresh(plan, cls, np.array([last]))
            cls.seen = len(plan.log)
            if soft is not None and soft.changing:   # a spread: every host of a value may move
                working = _working(cls, soft, used, ask.distinct_hosts)
            elif ask.distinct_hosts:
                working[last] = NEG
            elif soft is not None:
                working[last] = cls.score[last] + soft.static[last]
        best = int(working.argmax()) if n else 0
        if n and working[best] != NEG and not plan.overlay.in_use[best]:   # which empty host: opening.py
            best = opening.choose(plan, working, best, cls.need)
        if n and working[best] != NEG:   # a complementary pair of host shapes: pairing.py
            best = pairing.route(plan, working, best, cls.need)
        if n == 0 or working[best] == NEG:
            if not plan.preempting:
                break
            outcome = preempt.choose(plan, cls.need, ask.priority, cls.static_ok, used)
            if isinstance(outcome, str):
                note = outcome
                break
            best, victims = outcome
            plan.release(best, victims)
            preemptions.append(Preemption(len(hosts), plan.table.names[best],
                                          tuple(v.instance for v in victims)))
        gpus.append(plan.reserve(best, cls.need))
        hosts.append(plan.table.names[best])
        if soft is not None:
            soft.placed(best)
        if ask.distinct_hosts:
            used.append(best)
    unplaced = ask.count - len(hosts)
    reasons: dict[str, int] = {}
    if unplaced:
        if cls is None:
            cls = _class_for(plan, ask, need)
        reasons = _explain(plan, cls, used)
    status = (Status.PLACED if not unplaced else Status.PARTIAL if hosts else Status.UNSCHEDULABLE)
    return GroupPlacement(ask, reserved, hosts, unplaced, reasons, status, gpus,
                          preemptions=preemptions, preemption=note)


def _working(cls: _Class, soft: SoftTerms | None, used: list[int], private: bool) -> np.ndarray:
    """What the ask selects on: the class's cached scores, plus the ask's soft preferences, with
    the hosts distinct_hosts rules out at -inf. The class's own array when neither applies (it
    must then not be written to)."""
    if soft is None and not private:
        return cls.score
    working = cls.score + soft.bonus() if soft is not None else cls.score.copy()
    if used:
        working[used] = NEG
    return working


def _error(ask: GroupAsk, reserved: ResourceAmounts, message: str) -> GroupPlacement:
    return GroupPlacement(ask, reserved, [], ask.count, {}, Status.ERROR, error=message)


def _existing(table: HostTable, ask: GroupAsk) -> list[int]:
    vocab = table.columns["node.name"].vocab
    return [vocab[h] for h in ask.existing_hosts if h in vocab]


def _key(ask: GroupAsk, need: np.ndarray) -> tuple:
    if not ask.constraints:
        return ask.kind, need.tobytes()
    cons = tuple((c.attribute, c.operator, tuple(c.value) if isinstance(c.value, list) else c.value)
                 for c in ask.constraints)
    return ask.kind, need.tobytes(), cons


def _class_for(plan: Plan, ask: GroupAsk, need: np.ndarray) -> _Class:
    """The class of this ask (reserved amounts `need`), brought up to date with the plan."""
    if not plan.config.incremental:
        cls = _new_class(plan, ask, need)
        _refresh(plan, cls, _candidates(cls))
        return cls
    key = _key(ask, need)
    cls = plan.classes.get(key)
    if cls is None:
        cls = _new_class(plan, ask, need)
        _refresh(plan, cls, _candidates(cls))
        plan.classes[key] = cls
        while len(plan.classes) > plan.config.max_cached_classes:
            plan.classes.popitem(last=False)
    else:
        plan.classes.move_to_end(key)
        changed = plan.log[cls.seen:]
        if changed:
            # A reservation only takes room, so a host this class found infeasible stays so:
            # only the changed hosts that were feasible need another look. A release (preemption)
            # gives room back: then every changed host does.
            released = plan.released_at > cls.seen
            if len(changed) * 4 > len(plan.table):
                rows = (np.flatnonzero(cls.static_ok) if released
                        else np.flatnonzero(cls.score != NEG))
            else:
                # a host reserved on twice is re-scored once (sorted(set()): np.unique's overhead
                # is several times that of a few dozen Python ints)
                rows = np.array(sorted(set(changed)))
                if plan.fused is None:   # (the compiled refresh's filters reject them for less)
                    rows = rows[cls.static_ok[rows] if released else cls.score[rows] != NEG]
            if len(rows):
                _refresh(plan, cls, rows)
    cls.seen = len(plan.log)
    return cls


def _new_class(plan: Plan, ask: GroupAsk, need: np.ndarray) -> _Class:
    table = plan.table
    verdicts = filters.static(table, ask.kind, ask.constraints)
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
    floor = np.where(need[:GPU] > 0, need[:GPU], np.iinfo(np.int64).min)
    return _Class(need, reasons, len(verdicts) + 1, static, static == 0, dynamic, np.full(n, NEG), floor)


def _candidates(cls: _Class) -> slice | np.ndarray:
    """The rows a new class must evaluate: those passing its static filters when they are few
    (a system job's instance pinned to its node; a narrow constraint), else all (a slice is
    cheaper than a fancy index). The others keep -inf, as evaluating them would give."""
    rows = np.flatnonzero(cls.static_ok)
    return rows if len(rows) * 4 < len(cls.static_ok) else slice(None)


def _refresh(plan: Plan, cls: _Class, rows: slice | np.ndarray) -> None:
    """Re-run the dynamic filters and the scorers on `rows` against the plan as it stands."""
    if plan.fused is not None and plan.fused.refresh(
            plan.overlay.all_rows[rows] if isinstance(rows, slice) else rows, cls.need, cls.static_ok, cls.floor,
            cls.score):
        return   # compiled: for a few rows, one call instead of ~150 numpy calls; the same scores
    view = plan.view(cls.need, rows)
    # the fit filters of cpu, memory and disk in one comparison (a resource not asked for is
    # compared with the lowest integer); _codes runs them one by one when explaining
    ok = cls.static_ok[rows] & np.logical_and.reduce(view.free[:, :GPU] >= cls.floor, axis=1)
    if cls.need[GPU] > 0:
        ok &= filters.gpu_fits(view)[0]
    if np.logical_and.reduce(ok):   # (the ufunc: ndarray.all() costs a Python wrapper)
        score = _score(plan, view)
    else:   # score only the feasible hosts: the others cannot be chosen
        score = np.full(len(ok), NEG)
        if np.logical_or.reduce(ok):
            score[ok] = _score(plan, plan.view(cls.need, view.index[ok]))
    cls.score[rows] = score


def _score(plan: Plan, view: View) -> np.ndarray:
    """Weighted mean of the scorers (each in [0, 1], so the mean is too). A scorer may return one
    number for every host (a GPU scorer on hosts without GPUs)."""
    out = None
    constant = 0.0
    for scorer, weight in plan.weighted:
        s = scorer(view)
        if isinstance(s, float):
            constant += weight * s
        elif out is None:
            out = weight * s
        else:
            out += weight * s
    if out is None:
        return np.full(len(view), constant)
    if constant:
        out += constant
    return out


def _codes(plan: Plan, cls: _Class, rows: slice | np.ndarray) -> np.ndarray:
    """The first filter (its code) rejecting each host of `rows`; 0 where none does."""
    view = plan.view(cls.need, rows)
    code = cls.static[rows].copy()
    for k, check in enumerate(cls.dynamic, start=cls.distinct_code + 1):
        code[(code == 0) & ~check(view)[0]] = k
    return code


def _explain(plan: Plan, cls: _Class, used: list[int]) -> dict[str, int]:
    """How many hosts each filter eliminated, each host counted under the first that rejects it
    (pipeline order), for a class with no feasible host left. The codes are kept with the class
    and brought up to date like its scores, for a class that keeps finding no host."""
    changed = plan.log[cls.code_seen:]
    if cls.code is None or len(changed) * 4 > len(plan.table):
        cls.code = _codes(plan, cls, slice(None))
    elif changed:
        rows = np.array(changed)
        cls.code[rows] = _codes(plan, cls, rows)
    cls.code_seen = len(plan.log)
    code = cls.code
    if used:   # distinct hosts comes after the static filters and before the dynamic ones
        code = code.copy()
        u = np.array(used)
        code[u] = np.where((code[u] == 0) | (code[u] > cls.distinct_code), cls.distinct_code, code[u])
    counts = np.bincount(code, minlength=len(cls.reasons) + 1)
    assert counts[0] == 0, "explaining a class that still has a feasible host"
    reasons: dict[str, int] = {}
    for k, count in enumerate(counts[1:].tolist(), start=1):
        if count:
            reason = cls.reasons[k - 1]
            reasons[reason] = reasons.get(reason, 0) + count
    return reasons
