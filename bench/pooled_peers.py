"""The peers' policies on the Alibaba trace with GPUs *pooled* per host (one number, no devices),
to compare with the figures quoted in issue 3. Standalone numpy, not the engine: the engine models
devices. Prints unplaced and hosts used per policy, without and with the 1 MiB container overhead.

    python bench/pooled_peers.py [TRACE_DIR]
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np


def load(trace: Path) -> tuple[np.ndarray, np.ndarray]:
    with (trace / "openb_node_list_all_node.csv").open() as f:
        cap = [[int(r["cpu_milli"]), int(r["memory_mib"]), int(r["gpu"]) * 1000] for r in csv.DictReader(f)]
    with (trace / "openb_pod_list_default.csv").open() as f:
        dem = [[int(r["cpu_milli"]), int(r["memory_mib"]), int(r["num_gpu"]) * int(r["gpu_milli"])]
               for r in csv.DictReader(f)]
    return np.array(cap, dtype=float), np.array(dem, dtype=float)


def score(policy: str, frac: np.ndarray) -> np.ndarray:
    if policy == "k8s-default":         # LeastAllocated + BalancedAllocation
        return (1 - frac).mean(axis=1) + (1 - np.abs(frac[:, 0] - frac[:, 1]) / 2)
    if policy == "k8s-mostallocated":
        return frac.mean(axis=1)
    return 20 - (10 ** (1 - frac[:, 0]) + 10 ** (1 - frac[:, 1]))   # nomad-binpack


def run(cap: np.ndarray, dem: np.ndarray, policy: str) -> tuple[int, int]:
    alloc = np.zeros_like(cap)
    unplaced = 0
    for w in dem:
        after = alloc + w
        s = score(policy, after[:, :2] / cap[:, :2])
        s[~np.all(after <= cap, axis=1)] = -np.inf
        h = int(np.argmax(s))
        if s[h] == -np.inf:
            unplaced += 1
        else:
            alloc[h] = after[h]
    return unplaced, int((alloc.sum(axis=1) > 0).sum())


def main() -> None:
    trace = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/traces/alibaba-gpu-v2023")
    cap, dem = load(trace)
    for overhead_mib in (0, 1):
        d = dem + np.array([0, overhead_mib, 0])
        for policy in ("k8s-default", "k8s-mostallocated", "nomad-binpack"):
            unplaced, hosts = run(cap, d, policy)
            print(f"overhead {overhead_mib} MiB  {policy:18s} unplaced {unplaced:4d}  hosts {hosts}")


if __name__ == "__main__":
    main()
