"""Generate a VM + container mix on identical hosts for `packyard-bench pack`.

    python bench/gen_mix.py --hosts 500 --workloads 6000 --seed 1 --nodes N.csv --out W.csv

VMs take Azure-like sizes (B, D, E and F series: 1-16 vCPUs, 0.5-8 GiB per vCPU), weighted towards
the small ones as in Azure's public VM traces, where most VMs have 1-4 cores; containers are
microservices (50m-2 cores, 32Mi-4Gi, a few memory-heavy caches). One in three workloads is a VM.
The scheduler's VM profile adds its overhead when placing, so hosts fill with the reserved amounts.
With --gpu-hosts F, a fraction F of the hosts carry 8 GPUs, and about 0.8 F of the container
workloads ask for GPUs instead, in about the Alibaba trace's proportions (half one whole GPU, 40%
a share of one, the rest 2, 4 or 8 GPUs), so that GPU packing is exercised at scale.
Deterministic for a seed.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

HOST = (64_000, 256 * 1024)   # milli-cores, MiB: a common two-socket server

# (vCPUs, GiB, weight): B/F (compute), D (general, 4 GiB/vCPU), E (memory, 8 GiB/vCPU)
VM_SIZES = [
    (1, 0.5, 4), (1, 1, 8), (1, 2, 8), (2, 4, 14), (2, 8, 16), (2, 16, 5), (4, 8, 8), (4, 16, 12),
    (4, 32, 4), (8, 16, 4), (8, 32, 6), (8, 64, 2), (16, 32, 1), (16, 64, 2), (16, 128, 1),
]
# (milli-cores, MiB, weight)
CONTAINER_SIZES = [
    (50, 32, 6), (100, 64, 14), (100, 128, 10), (250, 256, 16), (250, 512, 8), (500, 512, 12),
    (500, 1024, 10), (1000, 1024, 8), (1000, 2048, 6), (2000, 2048, 4), (2000, 4096, 3),
    (500, 4096, 2), (250, 2048, 2),   # caches: memory-heavy
]


# (milli-GPUs per GPU, GPUs, weight)
GPU_ASKS = [(1000, 1, 50), (250, 1, 12), (500, 1, 16), (750, 1, 12), (1000, 2, 5), (1000, 4, 3),
            (1000, 8, 2)]


def generate(hosts: int, workloads: int, seed: int, vm_share: float = 1 / 3, gpu_hosts: float = 0.0):
    rng = np.random.default_rng(seed)
    gpu_rng = np.random.default_rng([seed, 1])   # its own stream: --gpu-hosts 0 changes nothing else
    gpus = gpu_rng.random(hosts) < gpu_hosts
    nodes = [(f"host-{i:05d}", HOST[0], HOST[1], 8 if gpus[i] else 0) for i in range(hosts)]
    gpu_w = np.array([w for *_, w in GPU_ASKS], dtype=float)
    wants_gpu = gpu_rng.random(workloads) < 0.8 * gpu_hosts
    gpu_pick = gpu_rng.choice(len(GPU_ASKS), size=workloads, p=gpu_w / gpu_w.sum())
    vm_w = np.array([w for *_, w in VM_SIZES], dtype=float)
    ct_w = np.array([w for *_, w in CONTAINER_SIZES], dtype=float)
    is_vm = rng.random(workloads) < vm_share
    vm_pick = rng.choice(len(VM_SIZES), size=workloads, p=vm_w / vm_w.sum())
    ct_pick = rng.choice(len(CONTAINER_SIZES), size=workloads, p=ct_w / ct_w.sum())
    rows = []
    for i in range(workloads):
        if is_vm[i]:
            cpu, gib, _ = VM_SIZES[vm_pick[i]]
            rows.append((f"vm-{i:06d}", cpu * 1000, int(gib * 1024), "vm", 0, 0))
        elif wants_gpu[i]:
            milli, n, _ = GPU_ASKS[gpu_pick[i]]
            rows.append((f"gpu-{i:06d}", 4000 * n, 16384 * n, "container", n, milli))
        else:
            cpu, mib, _ = CONTAINER_SIZES[ct_pick[i]]
            rows.append((f"ct-{i:06d}", cpu, mib, "container", 0, 0))
    return nodes, rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hosts", type=int, default=500)
    p.add_argument("--workloads", type=int, default=6000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--vm-share", type=float, default=1 / 3)
    p.add_argument("--gpu-hosts", type=float, default=0.0, help="fraction of hosts with 8 GPUs")
    p.add_argument("--nodes", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    nodes, rows = generate(a.hosts, a.workloads, a.seed, a.vm_share, a.gpu_hosts)
    with a.nodes.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "cpu_milli", "memory_mib", "gpu"])
        w.writerows(nodes)
    with a.out.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "cpu_milli", "memory_mib", "kind", "num_gpu", "gpu_milli"])
        w.writerows(rows)


if __name__ == "__main__":
    main()
