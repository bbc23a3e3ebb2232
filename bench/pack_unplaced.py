"""Why workloads were left out: each placer's unplaced workloads by shape and by what stops them
at the end of the stream (issue 18's over-full trace variants).

    python bench/pack_unplaced.py NODES.csv WORKLOADS.csv LABEL=OUT.csv [LABEL=OUT.csv ...]

Reads only the CSV files (any placer's OUT in `packyard-bench pack`'s columns, GPUs as devices).
The hosts' state at the end is what the OUT reserved; an unplaced workload, asking the cpu and
memory of its row (plus the overhead the placer reserved for the others of its kind, the
largest seen), is stopped at the end by the first of:

- `no whole devices`: no host its `gpu_spec` admits has as many wholly free GPUs as it asks
  (`split` if the admitted hosts hold that many free devices in all, only spread over hosts);
- `slivers`: a share, and no admitted device has that much free;
- `stranded`: hosts with the GPU room exist, but every one lacks the cpu or memory (that room
  then explains this workload only: it is taken, so one free GPU beside exhausted cpu does not
  count every later 1-GPU workload as stranded);
- `cpu/memory`: a workload without GPUs that no host has the cpu and memory for;
- `fits`: it would fit at the end (a placer that left out something it could place later).

Last, the shares' forced loss: the devices the stream's shares need however they are packed
(Martello and Toth's bound L2, and Gilmore and Gomory's pattern LP, the tighter); if every share
is placed (an online placer places what fits when it comes, and the shares come all along the
stream) the whole GPUs left out are at least the whole GPUs asked minus the devices the shares
leave. The same for offline first fit decreasing and for an online best fit in arrival order
(each share on the fullest device that holds it, a new one only when none does; cpu and memory
ignored): what placing every share as it comes, that well, leaves.

A placer never frees what it reserved, so what stops a workload at the end stopped it when it
came, or something did then that is worse now.
"""
from __future__ import annotations

import csv
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from scipy.optimize import linprog

ONE_GPU = 1000
REASONS = ("no whole devices", "no whole devices (split)", "slivers", "stranded", "cpu/memory", "fits")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _devices(cell: str) -> list[tuple[int, int]]:
    return [(int(d), int(m)) for d, m in (p.split(":") for p in filter(None, cell.split(";")))]


def shape(w: dict[str, str]) -> tuple[str, str, str]:
    """(GPUs, share bucket, cpu bucket) of a workload."""
    k, m, cpu = int(w["num_gpu"] or 0), int(w["gpu_milli"] or 0), int(w["cpu_milli"])
    if k == 0:
        share = "-"
    elif m >= ONE_GPU:
        share = "whole"
    else:
        share = next((f"<= {b / 1000:g}" for b in (250, 500, 800) if m <= b), "> 0.8")
    cores = next((f"<= {c}" for c in (4, 8, 16, 32) if cpu <= c * 1000), "> 32")
    return (str(k), share, cores)


class EndState:
    """Every host's free cpu, memory and devices after the OUT's reservations."""

    def __init__(self, nodes: list[dict[str, str]], out: list[dict[str, str]]):
        self.names = [n["name"] for n in nodes]
        at = {name: i for i, name in enumerate(self.names)}
        self.model = np.array([(n.get("model") or "").strip() for n in nodes])
        self.cpu = np.array([int(n["cpu_milli"]) for n in nodes], dtype=np.int64)
        self.memory = np.array([int(n["memory_mib"]) for n in nodes], dtype=np.int64)
        gpus = np.array([int(n["gpu"] or 0) for n in nodes])
        self.devices = np.zeros((len(nodes), max(int(gpus.max(initial=0)), 1)), dtype=np.int64)
        for i, g in enumerate(gpus):
            self.devices[i, :g] = ONE_GPU
        self.gpus = gpus
        for r in out:
            if r["node"]:
                i = at[r["node"]]
                self.cpu[i] -= int(r["cpu_milli"] or 0)
                self.memory[i] -= int(r["memory_mib"] or 0)
                for d, m in _devices(r.get("gpus") or ""):
                    self.devices[i, d] -= m

    def why(self, w: dict[str, str], overhead: tuple[int, int]) -> str:
        k, m = int(w["num_gpu"] or 0), int(w["gpu_milli"] or 0)
        cpu, mem = int(w["cpu_milli"]) + overhead[0], int(w["memory_mib"]) + overhead[1]
        fits = (self.cpu >= cpu) & (self.memory >= mem)
        if k == 0:
            return "fits" if fits.any() else "cpu/memory"
        specs = [s for s in (w.get("gpu_spec") or "").split("|") if s]
        admitted = self.gpus > 0
        if specs:
            admitted &= np.isin(self.model, specs)
        if m >= ONE_GPU:
            whole = (self.devices == ONE_GPU).sum(axis=1)
            room = admitted & (whole >= k)
            if not room.any():
                return "no whole devices (split)" if whole[admitted].sum() >= k else "no whole devices"
        else:
            room = admitted & (self.devices >= m).any(axis=1)
            if not room.any():
                return "slivers"
        if (room & fits).any():
            return "fits"
        host = int(np.flatnonzero(room)[0])   # the room stranded there explains this workload only
        if m >= ONE_GPU:
            self.devices[host, np.flatnonzero(self.devices[host] == ONE_GPU)[:k]] = 0
        else:
            d = int(np.flatnonzero(self.devices[host] >= m)[0])
            self.devices[host, d] -= m
        return "stranded"

    def summary(self) -> dict[str, float]:
        """Free GPUs at the end (in GPUs): on wholly free devices, in part-used devices, and the
        wholly free ones on hosts with less than 4 cores or 16 GiB left (stranded-looking)."""
        whole = self.devices == ONE_GPU
        part = (self.devices > 0) & ~whole
        poor = (self.cpu < 4000) | (self.memory < 16 * 1024)
        return {"free whole": float(whole.sum()), "free in part-used": self.devices[part].sum() / ONE_GPU,
                "free whole, host < 4 cores or 16 GiB": float(whole[poor].sum())}


def l2_bins(sizes: np.ndarray, capacity: int = ONE_GPU) -> int:
    """Martello and Toth's lower bound L2 on the bins of `capacity` that items of `sizes` need."""
    sizes = np.sort(np.asarray(sizes, dtype=np.int64))
    best = 0
    for k in np.unique(np.concatenate(([0], sizes[2 * sizes <= capacity]))):
        big = sizes[sizes > capacity - k]
        mid = sizes[(sizes <= capacity - k) & (2 * sizes > capacity)]
        small = sizes[(2 * sizes <= capacity) & (sizes >= k)]
        spill = int(small.sum()) - (len(mid) * capacity - int(mid.sum()))
        best = max(best, len(big) + len(mid) + max(0, -(-spill // capacity)))
    return best


def best_fit_bins(sizes: np.ndarray, capacity: int = ONE_GPU) -> int:
    """The bins online best fit opens for `sizes` in their order."""
    gaps = Counter()   # open bins by room left (0 < room < capacity)
    opened = 0
    for s in (int(x) for x in sizes):
        room = min((g for g, n in gaps.items() if n and g >= s), default=capacity)
        if room == capacity:
            opened += 1
        else:
            gaps[room] -= 1
        if room > s:
            gaps[room - s] += 1
    return opened


def pattern_bins(sizes: np.ndarray, capacity: int = ONE_GPU, most: int = 200_000) -> int | None:
    """Gilmore and Gomory's LP bound on bins: the fewest bins, fractionally, over the ways to fill
    one bin (patterns, each no more than it can hold nor more of a size than there are), rounded
    up; far tighter than L2 where few sizes mix. None if there are more than `most` patterns."""
    values, counts = np.unique(np.asarray(sizes, dtype=np.int64), return_counts=True)
    values, counts = values[::-1], counts[::-1]
    patterns: list[tuple[int, ...]] = []

    def fill(i: int, room: int, taken: list[int]) -> None:
        if len(patterns) > most:
            return
        if i == len(values):   # only patterns that take every size still fitting (maximal)
            if all(v > room or taken[j] >= counts[j] for j, v in enumerate(values)):
                patterns.append(tuple(taken))
            return
        for k in range(min(room // int(values[i]), int(counts[i])), -1, -1):
            taken[i] = k
            fill(i + 1, room - k * int(values[i]), taken)
        taken[i] = 0

    if len(values) == 0:
        return 0
    fill(0, capacity, [0] * len(values))
    if len(patterns) > most:
        return None
    a = np.array(patterns, dtype=np.float64).T
    result = linprog(np.ones(a.shape[1]), A_ub=-a, b_ub=-counts.astype(np.float64), bounds=(0, None),
                     method="highs")
    return int(np.ceil(result.fun - 1e-6 * max(1.0, result.fun)))


def ffd_bins(sizes: np.ndarray, capacity: int = ONE_GPU) -> int:
    """The bins offline first fit decreasing opens (sorted, each in the first bin that holds it)."""
    rooms: list[int] = []
    for s in sorted((int(x) for x in sizes), reverse=True):
        at = next((i for i, r in enumerate(rooms) if r >= s), None)
        if at is None:
            rooms.append(capacity - s)
        else:
            rooms[at] -= s
    return len(rooms)


def forced(nodes_csv: Path, works_csv: Path) -> dict[str, float]:
    """The devices the shares need (bounds: L2, the pattern LP; offline first fit decreasing;
    online best fit in arrival order) and the whole GPUs left out when every share is placed on
    that many."""
    devices = sum(int(n["gpu"] or 0) for n in _rows(nodes_csv))
    works = _rows(works_csv)
    shares = np.array([int(w["gpu_milli"]) for w in works
                       if int(w["num_gpu"] or 0) == 1 and 0 < int(w["gpu_milli"] or 0) < ONE_GPU])
    whole = sum(int(w["num_gpu"] or 0) for w in works if int(w["gpu_milli"] or 0) >= ONE_GPU)
    out: dict[str, float] = {"devices": devices, "shares": len(shares), "share GPUs": shares.sum() / ONE_GPU,
                             "whole GPUs asked": whole}
    for label, bins in (("L2", l2_bins(shares)), ("pattern LP", pattern_bins(shares)),
                        ("offline FFD", ffd_bins(shares)), ("online best fit", best_fit_bins(shares))):
        if bins is not None:
            out[f"share devices ({label})"] = bins
            out[f"whole GPUs out ({label})"] = max(0, whole - (devices - bins))
    return out


def gpus_of(w: dict[str, str]) -> float:
    return int(w["num_gpu"] or 0) * int(w["gpu_milli"] or 0) / ONE_GPU


def overheads(works: list[dict[str, str]], out: list[dict[str, str]]) -> dict[str, tuple[int, int]]:
    """Per kind, the largest (cpu, memory) the placer reserved beyond the ask."""
    most: dict[str, tuple[int, int]] = defaultdict(lambda: (0, 0))
    for w, o in zip(works, out, strict=True):
        if o["node"]:
            c, m = most[w["kind"]]
            most[w["kind"]] = (max(c, int(o["cpu_milli"]) - int(w["cpu_milli"])),
                               max(m, int(o["memory_mib"]) - int(w["memory_mib"])))
    return most


def breakdown(nodes_csv: Path, works_csv: Path, out_csv: Path) -> tuple[Counter, Counter, dict]:
    """(by shape: count and GPUs, by reason: count and GPUs, the end state's free GPUs)."""
    works, out = _rows(works_csv), _rows(out_csv)
    end = EndState(_rows(nodes_csv), out)
    free = end.summary()   # before why() takes the stranded room
    extra = overheads(works, out)
    by_shape: Counter = Counter()
    by_reason: Counter = Counter()
    for w, o in zip(works, out, strict=True):
        if o["node"]:
            continue
        s, why = shape(w), end.why(w, extra[w["kind"]])
        by_shape[s, "n"] += 1
        by_shape[s, "gpus"] += gpus_of(w)
        by_reason[why, "n"] += 1
        by_reason[why, "gpus"] += gpus_of(w)
    return by_shape, by_reason, free


def main(argv: list[str]) -> int:
    if len(argv) < 3 or any("=" not in a for a in argv[2:]):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    nodes, works = Path(argv[0]), Path(argv[1])
    runs = [(label, breakdown(nodes, works, Path(p))) for label, p in (a.split("=", 1) for a in argv[2:])]
    shapes = sorted({s for _, (by_shape, _, _) in runs for s, _ in by_shape},
                    key=lambda s: (-int(s[0]), s[1], s[2]))
    print("| GPUs | share | cores | " + " | ".join(f"{label}: unplaced (GPUs)" for label, _ in runs) + " |")
    print("| ---: | --- | --- |" + " ---: |" * len(runs))
    for s in shapes:
        cells = [f"{r[0][s, 'n']} ({r[0][s, 'gpus']:.2f})" if r[0][s, "n"] else "" for _, r in runs]
        print(f"| {s[0]} | {s[1]} | {s[2]} | " + " | ".join(cells) + " |")
    print()
    print("| stopped at the end by | " + " | ".join(f"{label}: unplaced (GPUs)" for label, _ in runs) + " |")
    print("| --- |" + " ---: |" * len(runs))
    for why in REASONS:
        cells = [f"{r[1][why, 'n']} ({r[1][why, 'gpus']:.2f})" for _, r in runs]
        if any(r[1][why, "n"] for _, r in runs):
            print(f"| {why} | " + " | ".join(cells) + " |")
    for key in runs[0][1][2]:
        print(f"| end: {key} | " + " | ".join(f"{r[2][key]:g}" for _, r in runs) + " |")
    print()
    print("; ".join(f"{k} {v:g}" for k, v in forced(nodes, works).items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
