"""The configuration LP (Gilmore and Gomory) by column generation: a lower bound on hosts that
stays tight where workloads are large against a host, for bound.py (issue 18).

bound.py's LP splits instances fractionally over a host's room; its big-item and Martello-Toth
rows recover some of what that loses, one resource at a time. Where VMs take most of a host in
one resource and a share of it in another (a 16-vCPU, 64 GiB VM on 96 cores and 192 GiB holds
three in cpu, two in memory), what is lost is which instances can share a host, and only whole
host *patterns* say so:

- A pattern is what one host of a type holds: a_c instances of each class c, within the type's
  room in every resource (cpu, memory, disk) and at most m[c, t] of a class (bound.py's
  per-host count). Minimise the hosts used, sum over patterns lambda_p, subject to every class
  covered (sum_p a_pc lambda_p >= n_c) and at most N_t hosts of each type.
- Column generation: the restricted LP over the patterns found so far gives duals u (per class)
  and w (per type); the pattern of type t that prices best, max u.a, is an integer knapsack over
  the room, solved exactly (scipy's milp, HiGHS); it enters while u.a > 1 + w_t.
- A bound at every round, not only at convergence (the restricted LP's optimum is an *upper*
  bound on the LP's until no pattern prices out): for any u >= 0 and theta > 0, (u / theta,
  w_t = max(0, v_t / theta - 1)) with v_t the best u.a of type t is feasible in the dual, so
  sum n.u / theta - sum N_t max(0, v_t / theta - 1) bounds the hosts from below (with theta =
  max v_t, Farley's bound). The largest over the rounds is returned, so stopping on the time
  limit is still sound.

Only plain amounts: a class asking GPUs leaves the bound to bound.py's rows (devices make
patterns a placement problem of their own). Classes are few (tens), so rounds take milliseconds.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, linprog, milp

ROUNDS = 400        # column generation rounds at most
SECONDS = 10.0      # and at most this long; the bound found so far is sound either way
TOLERANCE = 1e-9    # a pattern enters when it prices out by more than this
SLACK = 1e-6        # relative: an optimum is rounded up to hosts after this much is taken off


def _price(value: np.ndarray, need: np.ndarray, room: np.ndarray, most: np.ndarray) -> tuple[float, np.ndarray]:
    """The pattern of one host of `room` with the largest value.a (a_c <= most[c]), and an upper
    bound on that value (the milp's dual bound where it stopped short of optimal)."""
    keep = (value > TOLERANCE) & (most > 0)
    pattern = np.zeros(len(value))
    if not keep.any():
        return 0.0, pattern
    v, r, m = value[keep], need[keep], most[keep].astype(np.float64)
    used = np.flatnonzero(room > 0)
    a = r[:, used].T.astype(np.float64) / room[used].astype(np.float64)[:, None]   # scaled to 1
    result = milp(-v, constraints=LinearConstraint(a, -np.inf, np.ones(len(used)) + 1e-12),
                  integrality=np.ones(len(v)), bounds=Bounds(np.zeros(len(v)), m),
                  options={"mip_rel_gap": 1e-3, "time_limit": 5.0})
    if result.x is None:   # no solution in time: every instance of every class is an upper bound
        return float(v @ m), pattern
    pattern[keep] = np.round(result.x)
    upper = -float(result.mip_dual_bound) if getattr(result, "mip_dual_bound", None) is not None else float(v @ m)
    return max(float(v @ pattern[keep]), min(upper, float(v @ m))), pattern


@contextlib.contextmanager
def _quiet():
    """File descriptor 1 to /dev/null: HiGHS' MIP solver (scipy 1.17) prints debugging lines to the
    process's stdout, where `packyard-bench pack` prints its JSON summary."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        sys.stdout.flush()   # what Python wrote meanwhile goes where the solver's lines went
        os.dup2(saved, 1)
        os.close(saved)


def pattern_bound(need: np.ndarray, demand: np.ndarray, room: np.ndarray, hosts: np.ndarray,
                  most: np.ndarray, seconds: float = SECONDS, known: float = 0.0) -> float:
    with _quiet():
        return _pattern_bound(need, demand, room, hosts, most, seconds, known)


def hosts_for(optimum: float) -> int:
    """An LP optimum rounded up to hosts (the slack absorbs the solver's tolerances; it can only
    lower the bound): bound.py's rounding, and the rounds' stopping rule here."""
    return math.ceil(optimum - SLACK * max(1.0, optimum))


def _pattern_bound(need: np.ndarray, demand: np.ndarray, room: np.ndarray, hosts: np.ndarray,
                   most: np.ndarray, seconds: float, known: float) -> float:
    """A lower bound on the hosts (fractional; the caller rounds it up) that placing `demand[c]`
    instances of each class of `need` (C, R) needs on `hosts[t]` hosts of each type of `room`
    (T, R), with `most` (C, T) instances of a class on one host (0: does not fit). `known`: a bound
    the caller has (bound.py's rows): the rounds stop once the restricted LP's optimum, an upper
    bound on this LP's, rounds to no more hosts than it or the bound found so far."""
    started = time.perf_counter()
    n_cls, n_types = most.shape
    most = np.minimum(most, demand[:, None]).astype(np.int64)
    # a first pattern per (class, type) it fits: as many of that class as one host holds
    columns = [(t, np.where(np.arange(n_cls) == c, most[c, t], 0))
               for c in range(n_cls) for t in range(n_types) if most[c, t] > 0]
    # a slack per class at the cost of every host keeps the restricted LP feasible while the
    # patterns so far cannot cover the demand within the hosts (the bound needs only u >= 0)
    slack = np.vstack([-np.eye(n_cls), np.zeros((n_types, n_cls))])
    slack_cost = np.full(n_cls, float(hosts.sum()) + 1)
    b_ub = np.concatenate([-demand, hosts]).astype(np.float64)
    best = 0.0
    for _ in range(ROUNDS):
        a = np.array([col for _, col in columns], dtype=np.float64).T        # (C, P)
        of_type = np.array([t for t, _ in columns])
        per_type = (of_type[None, :] == np.arange(n_types)[:, None]).astype(np.float64)
        result = linprog(np.concatenate([np.ones(len(columns)), slack_cost]),
                         A_ub=np.hstack([np.vstack([-a, per_type]), slack]), b_ub=b_ub, method="highs")
        if result.status != 0:
            return best
        u = np.maximum(-result.ineqlin.marginals[:n_cls], 0.0)
        w = np.maximum(-result.ineqlin.marginals[n_cls:], 0.0)
        priced = [_price(u, need, room[t], most[:, t]) for t in range(n_types)]
        v = np.array([p[0] for p in priced])
        best = max(best, _dual_bound(u @ demand, v, hosts))
        if hosts_for(float(result.fun)) <= hosts_for(max(best, known)):
            return best   # no pattern can raise the rounded bound any more
        entering = [t for t in range(n_types) if float(u @ priced[t][1]) > 1 + w[t] + TOLERANCE]
        if not entering or time.perf_counter() - started > seconds:
            return best   # (at convergence the dual above is the LP's optimum: nothing is lost)
        columns += [(t, priced[t][1]) for t in entering]
    return best


def _dual_bound(covered: float, v: np.ndarray, hosts: np.ndarray) -> float:
    """max over theta of covered / theta - sum N_t max(0, v_t / theta - 1): the dual value of
    (u / theta, w) made feasible; concave pieces between the breakpoints theta = v_t, so the
    largest is at one of them (or at theta = 1 when every v_t <= 1)."""
    out = 0.0
    for theta in {1.0, *v.tolist()}:
        if theta > 0:
            out = max(out, covered / theta - float(hosts @ np.maximum(0.0, v / theta - 1.0)))
    return out
