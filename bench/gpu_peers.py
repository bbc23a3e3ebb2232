"""GPU-as-devices peers for the packing bench: FGD and the baselines of its paper, and offline FFD.

    python bench/gpu_peers.py --nodes N.csv --workloads W.csv --policy fgd --out OUT.csv

Standalone numpy, not the engine, so that the engine is compared with an independent placer. The
same CSV formats and OUT as `packyard-bench pack` (gpus `INDEX:MILLI;...`, gpu_spec against the
node `model`), the same overhead profiles (packyard.profiles.DEFAULTS), workloads in file order
(except `ffd`). Every policy places a share on the fullest device that holds it and whole GPUs on
the lowest wholly free devices; they differ in the host they pick among the feasible ones:

- `fgd`: fragmentation gradient descent (Weng et al., "Beware of Fragmentation", USENIX ATC '23;
  re-derived from the paper and the logic of hkust-adsl/kubernetes-scheduler-simulator, no code
  copied). A host's fragmentation for a task type is the free GPU milli that task could not use
  there: all of it when the task does not fit the host's cpu/memory or asks no GPU, the free milli
  of devices too small for its share, or of partly used devices for whole-GPU tasks (all when too
  few whole devices are free). Expected fragmentation weighs the types by their share of the
  workload (the target workload, known ahead as in the paper). Pick the host where it grows least.
- `bestfit`: the host left with the least free cpu + GPU (each as a share of the host).
- `gpupacking`: a share onto a partly used device first, then a host whose GPUs are in use, then
  an idle one; best fit among equals.
- `dotprod`: Tetris alignment: the largest dot product of the ask and the host's free amounts
  (each normalised by the host's capacity).
- `ffd`: offline first-fit decreasing (not online: sees all workloads, sorts by their largest
  share of the largest host) — the reference the lower bound is compared with.
Ties go to the lowest host index. Prints a JSON summary last, as `packyard-bench pack`.
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np

from packyard.profiles import DEFAULTS
from packyard.records import ResourceAmounts

MIB = 1 << 20
ONE = 1000
POLICIES = ("fgd", "bestfit", "gpupacking", "dotprod", "ffd")
TYPES = 64   # the most common task types FGD weighs (the rest are rare; covers most of the mass)


def _int(row: dict, key: str) -> int:
    v = (row.get(key) or "").strip()
    return int(float(v)) if v else 0


def load(nodes_csv: Path, workloads_csv: Path):
    with nodes_csv.open(newline="") as f:
        nodes = list(csv.DictReader(f))
    with workloads_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    names = [n.get("name") or n.get("sn") for n in nodes]
    cap = np.array([[_int(n, "cpu_milli"), _int(n, "memory_mib")] for n in nodes], dtype=np.int64)
    ngpu = np.array([_int(n, "gpu") for n in nodes], dtype=np.int64)
    g = max(1, int(ngpu.max()) if len(ngpu) else 1)
    free = np.where(np.arange(g)[None, :] < ngpu[:, None], ONE, -1).astype(np.int64)  # -1: no device
    models = np.array([(n.get("model") or "").strip() for n in nodes])
    work = []
    for i, r in enumerate(rows):
        num, milli = _int(r, "num_gpu"), _int(r, "gpu_milli")
        request = ResourceAmounts(cpu_milli=_int(r, "cpu_milli"), memory_bytes=_int(r, "memory_mib") * MIB,
                                  gpu_milli=num * milli if num else 0)
        res = DEFAULTS[(r.get("kind") or "container").strip()].reserve(request)
        spec = tuple(m for m in (r.get("gpu_spec") or "").split("|") if m)
        work.append((r.get("name") or f"w{i}", res.cpu_milli, res.memory_bytes // MIB, res.gpu_milli, spec))
    return names, cap, free, models, work


def gpu_fits(free: np.ndarray, gpu: int) -> np.ndarray:
    if gpu == 0:
        return np.ones(len(free), dtype=bool)
    if gpu < ONE:
        return free.max(axis=1) >= gpu
    return (free == ONE).sum(axis=1) >= gpu // ONE


def fragmentation(free: np.ndarray, left: np.ndarray, types: list, weights: np.ndarray) -> np.ndarray:
    """Expected free GPU milli unusable by the task types, per row (FGD's measure)."""
    usable = np.where(free > 0, free, 0)
    total = usable.sum(axis=1)
    out = np.zeros(len(free))
    for (cpu, mem, gpu), w in zip(types, weights, strict=True):
        fits = (left[:, 0] >= cpu) & (left[:, 1] >= mem)
        if gpu == 0:
            frag = total
        elif gpu < ONE:
            frag = np.where(fits, np.where(usable < gpu, usable, 0).sum(axis=1), total)
        else:
            whole = (free == ONE).sum(axis=1) >= gpu // ONE
            partial = np.where(usable < ONE, usable, 0).sum(axis=1)
            frag = np.where(fits & whole, partial, total)
        out += w * frag
    return out


def place(names, cap, free, models, work, policy: str):
    used = np.zeros_like(cap)
    gcap = np.maximum(free, 0).sum(axis=1)
    types, weights = [], np.zeros(0)
    if policy == "fgd":
        counts = Counter((c, m, g) for _, c, m, g, _ in work).most_common(TYPES)
        types = [t for t, _ in counts]
        weights = np.array([n for _, n in counts], dtype=float)
        weights /= weights.sum()
    order = range(len(work))
    if policy == "ffd":
        top = np.array([cap[:, 0].max() or 1, cap[:, 1].max() or 1, max(gcap.max(), 1)], dtype=float)
        order = sorted(order, key=lambda i: -max(work[i][1] / top[0], work[i][2] / top[1], work[i][3] / top[2]))
    out = [("", "")] * len(work)
    for i in order:
        _, cpu, mem, gpu, spec = work[i]
        left = cap - used
        ok = (left[:, 0] >= cpu) & (left[:, 1] >= mem) & gpu_fits(free, gpu)
        if spec:
            ok &= np.isin(models, spec)
        rows = np.flatnonzero(ok)
        if not len(rows):
            continue
        if policy == "ffd":
            h = rows[0]
        else:
            h = rows[np.argmin(_cost(policy, rows, cap, left, free, gcap, cpu, mem, gpu, types, weights))]
        used[h] += (cpu, mem)
        if gpu and gpu < ONE:
            d = int(np.argmin(np.where(free[h] >= gpu, free[h], 10 * ONE)))   # fullest that holds it
            free[h, d] -= gpu
            devs = f"{d}:{gpu}"
        elif gpu:
            ds = np.flatnonzero(free[h] == ONE)[: gpu // ONE]
            free[h, ds] = 0
            devs = ";".join(f"{d}:{ONE}" for d in ds)
        else:
            devs = ""
        out[i] = (names[h], devs)
    return out, used, free


def _cost(policy, rows, cap, left, free, gcap, cpu, mem, gpu, types, weights) -> np.ndarray:
    """Lower is better, for the feasible `rows`."""
    c = cap[rows].astype(float)
    after = left[rows] - (cpu, mem)
    g = np.maximum(gcap[rows], 1).astype(float)
    gfree = np.maximum(free[rows], 0).sum(axis=1)
    bestfit = after[:, 0] / c[:, 0] + (gfree - gpu) / g * (gcap[rows] > 0)
    if policy == "bestfit":
        return bestfit
    if policy == "gpupacking":
        partly = ((free[rows] > 0) & (free[rows] < ONE) & (free[rows] >= gpu)).any(axis=1) if 0 < gpu < ONE \
            else np.zeros(len(rows), dtype=bool)
        busy = gfree < gcap[rows]
        return -(2.0 * partly + 1.0 * busy) * 10 + bestfit
    if policy == "dotprod":
        ask = np.array([cpu, mem, gpu], dtype=float)
        have = np.column_stack([left[rows, 0] / c[:, 0], left[rows, 1] / c[:, 1], gfree / g])
        need = np.column_stack([ask[0] / c[:, 0], ask[1] / c[:, 1], ask[2] / g])
        return -(have * need).sum(axis=1)
    # fgd: the growth of expected fragmentation if the task goes there
    f = free[rows].copy()
    before = fragmentation(f, left[rows], types, weights)
    if gpu and gpu < ONE:
        d = np.argmin(np.where(f >= gpu, f, 10 * ONE), axis=1)
        f[np.arange(len(rows)), d] -= gpu
    elif gpu:
        k = gpu // ONE
        take = np.cumsum(f == ONE, axis=1) <= k
        f[(f == ONE) & take] = 0
    return fragmentation(f, after, types, weights) - before


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=Path, required=True)
    p.add_argument("--workloads", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--policy", choices=POLICIES, default="fgd")
    a = p.parse_args()
    t = time.perf_counter()
    names, cap, free, models, work = load(a.nodes, a.workloads)
    gpus_total = int(np.maximum(free, 0).sum())
    out, used, free = place(names, cap, free, models, work, a.policy)
    with a.out.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "node", "cpu_milli", "memory_mib", "gpu_milli", "gpus"])
        for (name, cpu, mem, gpu, _), (node, devs) in zip(work, out, strict=True):
            w.writerow([name, node, cpu, mem, gpu, devs])
    unplaced = [wk for wk, (node, _) in zip(work, out, strict=True) if not node]
    print(json.dumps({
        "policy": a.policy, "workloads": len(work), "placed": len(work) - len(unplaced),
        "unplaced": len(unplaced), "unplaced_gpus": round(sum(wk[3] for wk in unplaced) / ONE, 2),
        "unallocated_gpus": round(int(np.maximum(free, 0).sum()) / ONE, 2), "gpus": gpus_total / ONE,
        "hosts_used": int((used.sum(axis=1) > 0).sum()), "seconds": round(time.perf_counter() - t, 2)}))


if __name__ == "__main__":
    main()
