"""Families of packing cases (issue 18), each deterministic for a seed, written as the CSVs
`packyard-bench pack` reads. No constant here is fitted to a result: each family is a range of
cases, and bench/pack_families.py runs several seeds of each.

- `trace`: the Alibaba trace's own hosts with its pod list resampled (with replacement, in
  creation order): `cpu_x` times the trace's share of CPU-only pods (0..3), `shared` the share of
  GPU pods that take a share of one GPU (0.2..1.0; a shared pod's milli drawn from the trace's
  shares), `multi` times the trace's share of multi-GPU pods among whole-GPU pods; `cpu_first`
  puts every CPU-only pod before the GPU pods (as the trace's own published variant lists order
  them, bench/pack_openb.py), and `models` restricts that share of the GPU pods to GPU models
  (`gpu_spec`: the model of a host drawn at random, with one or two more models drawn so for a
  third of them).
- `vmmix`: VM + container mixes on identical hosts (bench/gen_mix.py's sizes) with the VM share
  and the host size drawn per seed.
- `vmsizes`: VM + container mixes whose size distributions, host size and fill are drawn too.
- `mixedhosts`: the same mixes on hosts of four sizes (16 to 128 cores), some with 4 or 8 GPUs.
- `small`: many small containers (50m-2 cores) on hosts of mixed sizes.
- `smallshapes`: small containers on hosts of drawn sizes *and* proportions (1-8 GiB per core).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from bench import gen_mix

TRACE = Path(__file__).resolve().parents[2] / "shared" / "traces" / "alibaba-gpu-v2023"
NODE_HEADER = ["name", "cpu_milli", "memory_mib", "gpu", "model"]
WORK_HEADER = ["name", "cpu_milli", "memory_mib", "kind", "num_gpu", "gpu_milli", "gpu_spec"]


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def trace(seed: int, cpu_x: float = 1.0, shared: float | None = None, multi: float = 1.0,
          cpu_first: bool = False, models: float = 0.0):
    rng = np.random.default_rng(seed)
    nodes = [(n["sn"], n["cpu_milli"], n["memory_mib"], n["gpu"], n["model"])
             for n in _read(TRACE / "openb_node_list_all_node.csv")]
    pods = _read(TRACE / "openb_pod_list_default.csv")
    cpu_only = [p for p in pods if int(p["num_gpu"]) == 0]
    share = [p for p in pods if int(p["num_gpu"]) == 1 and int(p["gpu_milli"]) < 1000]
    whole1 = [p for p in pods if int(p["num_gpu"]) == 1 and int(p["gpu_milli"]) >= 1000]
    multis = [p for p in pods if int(p["num_gpu"]) > 1]
    gpu_pods = len(pods) - len(cpu_only)
    n_cpu = int(round(len(cpu_only) * cpu_x))
    p_share = len(share) / gpu_pods if shared is None else shared
    n_share = int(round(gpu_pods * p_share))
    whole = gpu_pods - n_share
    p_multi = min(1.0, multi * len(multis) / max(1, len(multis) + len(whole1)))
    n_multi = int(round(whole * p_multi))
    picks = ([dict(cpu_only[i]) for i in rng.integers(len(cpu_only), size=n_cpu)] +
             [dict(share[i]) for i in rng.integers(len(share), size=n_share)] +
             [dict(multis[i]) for i in rng.integers(len(multis), size=n_multi)] +
             [dict(whole1[i]) for i in rng.integers(len(whole1), size=whole - n_multi)])
    order = rng.permutation(len(picks))   # an arrival order drawn per seed
    if cpu_first:   # (a stable sort keeps the drawn order within each part)
        order = order[np.argsort([int(picks[i]["num_gpu"]) != 0 for i in order], kind="stable")]
    host_models = [n[4] for n in nodes if n[4]]
    kinds = sorted(set(host_models))
    for p in picks:
        p["gpu_spec"] = ""
        if models and int(p["num_gpu"]) and rng.random() < models:
            allowed = {host_models[rng.integers(len(host_models))]}
            if rng.random() < 1 / 3:
                allowed |= {kinds[i] for i in rng.integers(len(kinds), size=int(rng.integers(1, 3)))}
            p["gpu_spec"] = "|".join(sorted(allowed))
    rows = [(f"pod-{k:06d}", p["cpu_milli"], p["memory_mib"], "container", p["num_gpu"], p["gpu_milli"],
             p["gpu_spec"]) for k, p in enumerate(picks[i] for i in order)]
    return nodes, rows


def vmmix(seed: int, hosts: int = 600, workloads: int = 8000):
    rng = np.random.default_rng([seed, 18])
    nodes, rows = gen_mix.generate(hosts, workloads, seed, vm_share=float(rng.uniform(0.15, 0.6)))
    scale = float(rng.choice([0.5, 1.0, 1.5]))   # host size: 32, 64 or 96 cores
    nodes = [(n, int(c * scale), int(m * scale), g, "") for n, c, m, g in nodes]
    return nodes, [(*r, "") for r in rows]


def vmsizes(seed: int, hosts: int = 600):
    """VM + container mixes whose size distributions are drawn too: identical hosts of 16-128
    cores and 2, 4 or 8 GiB per core; VMs of 1-32 vCPUs (at most half the host's cores and
    memory) at one to four drawn GiB-per-vCPU ratios, weighted by vCPUs to a drawn power (small-
    to large-heavy) and by a drawn Dirichlet; containers of 50m-4 cores and 64 MiB-4 GiB with
    Dirichlet weights; a VM share from 0 to 1; as many workloads as would fill 50-90% of half the
    hosts in their tighter resource (VMs above half a host take one each: room to spare), in a
    random order."""
    rng = np.random.default_rng([seed, 21])
    cores = int(rng.choice([16, 32, 48, 64, 96, 128]))
    gib = float(rng.choice([2, 4, 8])) * cores
    nodes = [(f"host-{i:05d}", cores * 1000, int(gib * 1024), 0, "") for i in range(hosts)]
    ratios = rng.choice([0.5, 1, 2, 4, 8], size=int(rng.integers(1, 5)), replace=False)
    vms = [(v, float(v * r)) for v in (1, 2, 4, 8, 16, 32) for r in ratios
           if v <= cores // 2 and v * r <= gib / 2] or [(1, 1.0)]
    vm_w = np.array([v ** rng.uniform(-1.5, 1.5) for v, _ in vms]) * rng.dirichlet(np.full(len(vms), 2.0))
    cts = [(c, m) for c in (50, 100, 250, 500, 1000, 2000, 4000) for m in (64, 256, 1024, 4096)]
    ct_w = rng.dirichlet(np.full(len(cts), 0.5))
    vm_w, vm_share = vm_w / vm_w.sum(), float(rng.uniform(0, 1))
    mean = [vm_share * sum(w * v[k] for w, v in zip(vm_w, vms, strict=True)) * (1000, 1024)[k] +
            (1 - vm_share) * sum(w * c[k] for w, c in zip(ct_w, cts, strict=True)) for k in (0, 1)]
    n = int(rng.uniform(0.5, 0.9) * hosts / 2 / max(mean[0] / (cores * 1000), mean[1] / (gib * 1024)))
    is_vm = rng.random(n) < vm_share
    vm_pick, ct_pick = rng.choice(len(vms), size=n, p=vm_w), rng.choice(len(cts), size=n, p=ct_w)
    rows = []
    for i in range(n):
        if is_vm[i]:
            v, g = vms[vm_pick[i]]
            rows.append((f"vm-{i:06d}", v * 1000, int(g * 1024), "vm", 0, 0, ""))
        else:
            c, m = cts[ct_pick[i]]
            rows.append((f"ct-{i:06d}", c, m, "container", 0, 0, ""))
    return nodes, rows


SIZES = [(16_000, 64 * 1024, 0), (32_000, 128 * 1024, 4), (64_000, 256 * 1024, 8), (128_000, 512 * 1024, 0)]


def _mixed_nodes(rng, hosts: int, gpu_share: float):
    out = []
    sizes = rng.integers(len(SIZES), size=hosts)
    has_gpu = rng.random(hosts) < gpu_share
    for i in range(hosts):
        cpu, mem, gpu = SIZES[sizes[i]]
        g = gpu if has_gpu[i] else 0
        out.append((f"host-{i:05d}", cpu, mem, g, "T4" if g == 4 else ("A10" if g else "")))
    return out


def mixedhosts(seed: int, hosts: int = 800, workloads: int = 8000):
    rng = np.random.default_rng([seed, 19])
    _, rows = gen_mix.generate(hosts, workloads, seed, vm_share=float(rng.uniform(0.2, 0.5)),
                               gpu_hosts=0.25)
    nodes = _mixed_nodes(rng, hosts, 0.5)
    return nodes, [(*r, "") for r in rows]


def small(seed: int, hosts: int = 2000, workloads: int = 20000):
    rng = np.random.default_rng([seed, 20])
    nodes = _mixed_nodes(rng, hosts, 0.0)
    w = np.array([c[2] for c in gen_mix.CONTAINER_SIZES], dtype=float)
    pick = rng.choice(len(w), size=workloads, p=w / w.sum())
    rows = [(f"ct-{i:06d}", gen_mix.CONTAINER_SIZES[k][0], gen_mix.CONTAINER_SIZES[k][1], "container", 0, 0, "")
            for i, k in enumerate(pick)]
    return nodes, rows


def smallshapes(seed: int):
    """Small containers on hosts of drawn shapes: 2-6 host types of 4-128 cores and 1, 2, 4 or 8
    GiB per core in drawn shares of 500, 1,000 or 2,000 hosts; containers of 50m-2 cores and 32
    MiB-4 GiB with Dirichlet weights (concentration 0.1 to 2: a few shapes or many); as many as
    fill 5-80% of the cluster in its tighter resource (at most 20,000), in a random order."""
    rng = np.random.default_rng([seed, 22])
    types = [(int(rng.choice([4, 8, 16, 24, 32, 48, 64, 96, 128])), int(rng.choice([1, 2, 4, 8])))
             for _ in range(int(rng.integers(2, 7)))]
    hosts = int(rng.choice([500, 1000, 2000]))
    kind = rng.choice(len(types), size=hosts, p=rng.dirichlet(np.ones(len(types))))
    nodes = [(f"host-{i:05d}", types[k][0] * 1000, types[k][0] * types[k][1] * 1024, 0, "")
             for i, k in enumerate(kind)]
    shapes = [(c, m) for c in (50, 100, 200, 250, 500, 750, 1000, 1500, 2000)
              for m in (32, 64, 128, 256, 512, 1024, 2048, 4096)]
    w = rng.dirichlet(np.full(len(shapes), float(rng.choice([0.1, 0.5, 2.0]))))
    mean = [float(w @ np.array([s[k] for s in shapes])) for k in (0, 1)]
    fill = rng.uniform(0.05, 0.8)
    n = int(min(fill * sum(n[1] for n in nodes) / mean[0], fill * sum(n[2] for n in nodes) / mean[1], 20_000))
    pick = rng.choice(len(shapes), size=n, p=w)
    rows = [(f"ct-{i:06d}", shapes[k][0], shapes[k][1], "container", 0, 0, "") for i, k in enumerate(pick)]
    return nodes, rows


def write(nodes, rows, nodes_csv: Path, workloads_csv: Path) -> None:
    for path, header, body in ((nodes_csv, NODE_HEADER, nodes), (workloads_csv, WORK_HEADER, rows)):
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(body)
