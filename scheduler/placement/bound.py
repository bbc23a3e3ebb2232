"""A lower bound on the hosts any placement of a workload list needs: the LP relaxation of bin
packing over host types and workload classes (issue 18). `packyard-bench pack` prints it as
`lower_bound_lp`, next to the capacity bound `lower_bound`.

The capacity bound (benchcli.lower_bound) adds every reservation up and fills the largest hosts
first. It ignores which hosts a workload may run on and how amounts split, so it is loose on mixed
hosts: GPU work that only fits the few GPU hosts, or `gpu_spec` restricted to one GPU model, is
counted as if any host's capacity could take it. Here:

- Hosts are grouped into *types*: the same room (capacity x overcommit - host reserve - what is
  already allocated, per resource), the same GPU devices, and the same verdict of every static
  filter (ready, driver, constraints) the workloads ask.
- Workloads are grouped into *classes*: the same reserved amounts (overhead included, as the engine
  reserved them) and the same kind and constraints; a class may use a type when one instance fits
  on an empty host of it (the engine's fit: cpu, memory, disk, a share on one device, whole GPUs
  as whole devices).
- Variables: x[c, t] >= 0 instances of class c on hosts of type t, y[t] in [0, N_t] hosts of type
  t used. Minimise sum y subject to: every class placed (sum_t x[c, t] = n_c), and per type, each
  a property of every single host that the fractional relaxation would otherwise lose:
  * capacity: sum_c r_c x[c, t] <= cap_t y[t], per resource;
  * big items: at most j instances larger than cap/(j+1) of one resource per host (j = 1..3; j+1
    of them would exceed it);
  * per class: at most m[c, t] instances on one host (the fewest of floor(cap / r) per resource
    and of what its GPU devices hold), where that is below what the capacity rows allow;
  * GPU devices (gpumodel.py): whole-GPU instances take whole free devices (sum k x <= whole y);
    shares larger than D/(j+1) of a device of D milli: at most j per device, and a device a
    whole-GPU instance holds takes none (sum over such shares x + j sum k x <= j devices y).
    Under the pooled model a host has one device of all its GPUs, so the same rows hold there.
- Where no workload asks for GPUs, the configuration LP over whole-host patterns (patterns.py)
  too, and the larger optimum: the rows above see one resource at a time, patterns see which
  instances can share a host in all of them.
- bound = ceil(optimum - 1e-6 x max(1, optimum)): the slack absorbs the solver's tolerances
  (it can only lower the bound).

Workloads that fit on no host (or the engine refused: an error) are left out of the LP and counted
in `excluded`: no placement places them, so the bound is on the hosts needed by the rest. If the
rest cannot be placed even fractionally (the LP is infeasible), no placement places them all, and
the bound is reported as every host, as the capacity bound does ("at most all hosts"); two more
LPs, with a slack z >= 0 per class (x + z = n), then give the fewest workloads and the fewest GPUs
every placement leaves unplaced (`unplaced`, `unplaced_gpus`; the excluded ones included).

Relaxations, each keeping it a lower bound: distinct hosts, spread and affinities are ignored;
instances of a class may be split fractionally over types and hosts.

The LP is built and solved once, after placement (scipy.optimize.linprog, HiGHS); classes and
types are few (tens to a few thousand), so it is seconds at most even at 10,000 hosts.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.optimize import linprog

from scheduler.placement import filters
from scheduler.placement.asks import GroupAsk
from scheduler.placement.gpumodel import ONE_GPU
from scheduler.placement.patterns import SLACK, hosts_for, pattern_bound
from scheduler.placement.table import CPU, DISK, GPU, MEMORY, HostTable

PLAIN = (CPU, MEMORY, DISK)   # amounts that add up on a host; GPUs are devices
DEPTH = 3                     # the big-item rows: at most j items above cap/(j+1), j = 1..DEPTH
CUTS = 32                     # dual-feasible rows per type and resource, at most


@dataclass(frozen=True)
class LPBound:
    hosts: int              # the lower bound on hosts (every host when infeasible)
    excluded: int           # instances that fit on no host (or were refused), left out
    optimum: float | None   # the LP's optimum; None when infeasible or nothing to place
    classes: int            # workload classes in the LP
    types: int              # host types
    seconds: float          # building and solving
    # the fewest instances, and GPUs (in whole GPUs), that every placement leaves unplaced: the
    # excluded ones, and when the LP is infeasible what the LP with a slack per class must leave
    unplaced: int
    unplaced_gpus: float


def _constraint_key(ask: GroupAsk) -> tuple:
    return ask.kind, tuple((c.attribute, c.operator, tuple(c.value) if isinstance(c.value, list) else c.value)
                           for c in ask.constraints)


def _static_masks(table: HostTable, asks: Sequence[GroupAsk], keys: list[tuple]) -> np.ndarray:
    """(K, N): the hosts each distinct (kind, constraints) passes the static filters on."""
    first = {}
    for ask, key in zip(asks, keys, strict=True):
        first.setdefault(key, ask)
    out = np.ones((len(first), len(table)), dtype=bool)
    for i, ask in enumerate(first.values()):
        for mask, _ in filters.static(table, ask.kind, ask.constraints):
            out[i] &= mask
    return out


def _per_host(need: np.ndarray, room: np.ndarray, devices: np.ndarray, device_milli: int) -> np.ndarray:
    """(C, T): how many instances of each class one empty host of each type holds (0: none fits);
    a class that needs nothing is unlimited (int64 max)."""
    big = np.iinfo(np.int64).max
    most = np.full((len(need), len(room)), big, dtype=np.int64)
    for r in PLAIN:
        asks = need[:, r] > 0
        most[asks] = np.minimum(most[asks], room[None, :, r] // need[asks, r][:, None])
    g = need[:, GPU]
    share = (g > 0) & (g < device_milli)
    if share.any():   # each device holds floor(its free milli / share)
        per_device = devices[None, :, :] // g[share][:, None, None]
        most[share] = np.minimum(most[share], per_device.sum(axis=2))
    whole = g >= device_milli
    if whole.any():
        free = (devices == device_milli).sum(axis=1)
        most[whole] = np.minimum(most[whole], free[None, :] // (g[whole] // device_milli)[:, None])
    return most


class _Rows:
    """The LP's inequality rows, each `sum coef x[c, t] - k y[t] <= 0` over the pairs of one type
    t (columns: the (class, type) pairs that fit, then one y per type)."""

    def __init__(self, pair_t: np.ndarray, n_types: int):
        self.pair_t, self.n_types, self.n_x = pair_t, n_types, len(pair_t)
        self.rows: list[np.ndarray] = []
        self.cols: list[np.ndarray] = []
        self.vals: list[np.ndarray] = []
        self.count = 0

    def add(self, in_row: np.ndarray, coef: np.ndarray, per_type: np.ndarray, types: np.ndarray | None = None) -> None:
        """One row per type in `types` (a bool mask; None: every type) with y's coefficient
        `per_type[t]`, over the pairs of that type where `in_row`."""
        types = np.ones(self.n_types, dtype=bool) if types is None else types
        if not types.any():
            return
        row_of_type = np.full(self.n_types, -1)
        row_of_type[types] = self.count + np.arange(int(types.sum()))
        row = row_of_type[self.pair_t]
        inside = in_row & (row >= 0)
        self.rows += [row[inside], row_of_type[types]]
        self.cols += [np.flatnonzero(inside), self.n_x + np.flatnonzero(types)]
        self.vals += [np.broadcast_to(coef, (self.n_x,))[inside].astype(np.float64),
                      -np.broadcast_to(per_type, (self.n_types,))[types].astype(np.float64)]
        self.count += int(types.sum())

    def plain(self, amount: np.ndarray, cap: np.ndarray) -> None:
        """An amount that adds up (cpu, memory, disk) on hosts of room `cap` per type."""
        if not (amount > 0).any():
            return
        c = cap[self.pair_t].astype(np.float64)
        scaled = amount / np.maximum(c, 1)   # every coefficient at most 1: the LP stays well scaled
        self.add(amount > 0, scaled, np.ones(self.n_types), cap > 0)
        for j in range(1, DEPTH + 1):        # j + 1 items above cap/(j+1) exceed it
            self.add(amount * (j + 1) > c, 1.0, float(j))
        self.dual_feasible(amount, c, cap.astype(np.float64), np.zeros(self.n_x), np.ones(self.n_types))

    def dual_feasible(self, amount: np.ndarray, size: np.ndarray, type_size: np.ndarray,
                      other: np.ndarray, per_type: np.ndarray) -> None:
        """Martello and Toth's bound L2 as rows, one per threshold a <= size/2 (a dual-feasible
        function): in one bin of `size`, an item above size - a leaves less than a, so it shares
        the bin with no item of a or more (nor with one above half); the bin's items count 1 if
        above size - a, their share of the bin if at least a, nothing below a, and add up to at
        most 1. `other`: what each pair counts besides (whole GPUs: a device each); `per_type`:
        bins per host. The thresholds are the item sizes (at most CUTS of them, spread)."""
        sizes = np.unique(amount[amount > 0])
        if len(sizes) > CUTS:
            sizes = sizes[np.linspace(0, len(sizes) - 1, CUTS).round().astype(int)]
        for a in sizes.tolist():
            big = amount > size - a
            valid = 2 * a <= type_size
            # a row is new only where some item is above size - a (else it is the capacity row)
            types = valid & (np.bincount(self.pair_t[big & (amount > 0)], minlength=self.n_types) > 0)
            weight = np.where(big, 1.0, np.where(amount >= a, amount / np.maximum(size, 1), 0.0)) + other
            self.add((weight > 0) & (amount > 0) | (other > 0), weight, per_type, types)

    def gpus(self, gpu: np.ndarray, devices: np.ndarray, device_milli: int) -> None:
        """GPUs as devices (gpumodel.py): whole GPUs take whole free devices, a share one device."""
        if not (gpu > 0).any():
            return
        d = self.pair_t
        total = devices.sum(axis=1)
        self.add(gpu > 0, gpu / np.maximum(total[d], 1), np.ones(self.n_types), total > 0)
        whole = np.where(gpu >= device_milli, gpu // device_milli, 0).astype(np.float64)
        if whole.any():
            self.add(whole > 0, whole, (devices == device_milli).sum(axis=1))
        share = (gpu > 0) & (gpu < device_milli)
        if not share.any():
            return
        n_devices = (devices > 0).sum(axis=1)
        largest = devices.max(axis=1, initial=0).astype(np.float64)
        for j in range(1, DEPTH + 1):   # j + 1 shares above D/(j+1) exceed a device of D; a whole GPU takes all j
            above = share & (gpu * (j + 1) > largest[d])
            self.add(above | (whole > 0), np.where(above, 1.0, j * whole), j * n_devices)
        self.dual_feasible(np.where(share, gpu, 0), largest[d], largest, whole, n_devices)

    def per_class(self, need: np.ndarray, room: np.ndarray, devices: np.ndarray, most: np.ndarray) -> None:
        """x[c, t] <= m y[t] (m: instances of c one host of t holds), a row per pair where the
        capacity rows allow more than m."""
        d = self.pair_t
        ratio = np.full(self.n_x, np.inf)
        for r in PLAIN:
            ratio = np.minimum(ratio, np.where(need[:, r] > 0, room[d, r] / np.maximum(need[:, r], 1), np.inf))
        ratio = np.minimum(ratio, np.where(need[:, GPU] > 0, devices.sum(axis=1)[d] / np.maximum(need[:, GPU], 1),
                                           np.inf))
        pairs = np.flatnonzero(most < ratio - 1e-9)
        rows = self.count + np.arange(len(pairs))
        self.rows += [rows, rows]
        self.cols += [pairs, self.n_x + d[pairs]]
        self.vals += [np.ones(len(pairs)), -most[pairs].astype(np.float64)]
        self.count += len(pairs)

    def matrix(self) -> sparse.csr_matrix:
        return sparse.csr_matrix((np.concatenate(self.vals), (np.concatenate(self.rows), np.concatenate(self.cols))),
                                 shape=(self.count, self.n_x + self.n_types))


def lp_lower_bound(table: HostTable, room: np.ndarray, asks: Sequence[GroupAsk], reserved: np.ndarray,
                   refused: np.ndarray | None = None) -> LPBound:
    """The LP bound on the hosts of `table` that placing `asks` needs. `room`: (N, 4) what each
    host can still take (effective capacity - allocated); `reserved`: (A, 4) each ask's reserved
    amounts per instance (RESOURCES order); `refused`: (A,) asks the engine refused (errors)."""
    started = time.perf_counter()
    n_hosts = len(table)
    refused = np.zeros(len(asks), dtype=bool) if refused is None else np.asarray(refused, dtype=bool)
    counts = np.array([a.count for a in asks], dtype=np.int64)
    if not len(asks):
        return LPBound(0, 0, None, 0, 0, time.perf_counter() - started, 0, 0.0)
    keys = [_constraint_key(a) for a in asks]
    key_index = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    static = _static_masks(table, asks, keys)                              # (K, N)
    # host types: room, devices and every static verdict alike
    signature = np.concatenate([room, table.gpu_free, static.T.astype(np.int64)], axis=1)
    host_rows, host_type, per_type = np.unique(signature, axis=0, return_inverse=True, return_counts=True)
    host_type = host_type.reshape(-1)
    n_types = len(host_rows)
    type_room = host_rows[:, :4]
    type_devices = host_rows[:, 4:4 + table.gpu_free.shape[1]]
    type_static = host_rows[:, 4 + table.gpu_free.shape[1]:].astype(bool)   # (T, K)
    # workload classes: reserved amounts and (kind, constraints) alike
    ask_key = np.array([key_index[k] for k in keys], dtype=np.int64)
    cls_rows, ask_class = np.unique(np.concatenate([reserved.astype(np.int64), ask_key[:, None]], axis=1),
                                    axis=0, return_inverse=True)
    ask_class = ask_class.reshape(-1)
    need, cls_key = cls_rows[:, :4], cls_rows[:, 4]
    demand = np.bincount(ask_class[~refused], weights=counts[~refused], minlength=len(cls_rows))
    device = table.device_milli
    bad_gpu = (need[:, GPU] > device) & (need[:, GPU] % device != 0)   # the engine refuses these
    most = _per_host(need, type_room, type_devices, device)             # (C, T)
    fits = (most > 0) & type_static[:, cls_key].T & ~bad_gpu[:, None]
    placeable = fits.any(axis=1)
    excluded = int(counts[refused].sum() + demand[~placeable].sum())
    excluded_gpus = (float(reserved[refused, GPU] @ counts[refused]) +
                     float(need[~placeable, GPU] @ demand[~placeable])) / ONE_GPU
    keep = placeable & (demand > 0)
    need, demand, most, fits = need[keep], demand[keep], most[keep], fits[keep]
    n_cls = len(need)
    if n_cls == 0:
        return LPBound(0, excluded, None, 0, n_types, time.perf_counter() - started, excluded, excluded_gpus)

    # variables: x for every (class, type) that fits, then y per type
    pair_c, pair_t = np.nonzero(fits)
    rows = _Rows(pair_t, n_types)
    need_of = need[pair_c]
    for r in PLAIN:
        rows.plain(need_of[:, r], type_room[:, r])
    rows.gpus(need_of[:, GPU], type_devices, device)
    rows.per_class(need_of, type_room, type_devices, most[pair_c, pair_t])

    n_x = len(pair_c)
    a_ub = rows.matrix()
    a_eq = sparse.csr_matrix((np.ones(n_x), (pair_c, np.arange(n_x))), shape=(n_cls, n_x + n_types))
    cost = np.concatenate([np.zeros(n_x), np.ones(n_types)])
    bounds = np.concatenate([np.column_stack([np.zeros(n_x), np.full(n_x, np.inf)]),
                             np.column_stack([np.zeros(n_types), per_type.astype(np.float64)])])
    result = linprog(cost, A_ub=a_ub, b_ub=np.zeros(a_ub.shape[0]), A_eq=a_eq, b_eq=demand, bounds=bounds,
                     method="highs")
    if result.status == 2:   # infeasible: the rest cannot all be placed, even fractionally
        # what every placement leaves out: x + z = n with z >= 0 the instances left out, z's
        # least sum (instances) and least GPUs
        a_eq_z = sparse.hstack([a_eq, sparse.identity(n_cls)], format="csr")
        a_ub_z = sparse.hstack([a_ub, sparse.csr_matrix((a_ub.shape[0], n_cls))], format="csr")
        bounds_z = np.concatenate([bounds, np.column_stack([np.zeros(n_cls), demand])])
        left = []
        for weight in (np.ones(n_cls), need[:, GPU] / ONE_GPU):
            r = linprog(np.concatenate([np.zeros(n_x + n_types), weight]), A_ub=a_ub_z,
                        b_ub=np.zeros(a_ub.shape[0]), A_eq=a_eq_z, b_eq=demand, bounds=bounds_z, method="highs")
            if r.status != 0:
                raise RuntimeError(f"the LP bound's solver stopped: {r.message}")
            left.append(max(0.0, float(r.fun) - SLACK * max(1.0, float(r.fun))))
        return LPBound(n_hosts, excluded, None, n_cls, n_types, time.perf_counter() - started,
                       excluded + math.ceil(left[0]), excluded_gpus + math.floor(left[1] * 100) / 100)
    if result.status != 0:
        raise RuntimeError(f"the LP bound's solver stopped: {result.message}")
    optimum = float(result.fun)
    if not need[:, GPU].any():   # whole-host patterns (patterns.py): tighter where instances are large
        optimum = max(optimum, pattern_bound(need[:, list(PLAIN)], demand, type_room[:, list(PLAIN)],
                                             per_type.astype(np.float64), np.where(fits, most, 0),
                                             known=optimum))
    hosts = max(0, hosts_for(optimum))
    return LPBound(min(hosts, n_hosts), excluded, optimum, n_cls, n_types, time.perf_counter() - started,
                   excluded, excluded_gpus)
