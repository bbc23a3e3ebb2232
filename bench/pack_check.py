"""Check an OUT file of `packyard-bench pack` against its NODES and WORKLOADS, independently of
the engine: every workload once, in order; what each reserved at least what it asked; no node
over its cpu/memory capacity; GPU devices within the node (indices 0..gpu-1), at most 1000 milli
on one device, a share on one device, whole GPUs as whole devices, as many as asked; the node's
`model` one of the workload's `gpu_spec`.

    python bench/pack_check.py NODES.csv WORKLOADS.csv OUT.csv    # exit 1 and the faults if any

Reads only the CSV files, so it checks any placer's OUT in this format (not the `pooled` model,
whose OUT has no devices).
"""
from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path

ONE_GPU = 1000


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _int(row: dict[str, str], key: str) -> int:
    value = (row.get(key) or "").strip()
    return int(float(value)) if value else 0


def _devices(cell: str) -> list[tuple[int, int]]:
    out = []
    for part in filter(None, cell.split(";")):
        index, milli = part.split(":")
        out.append((int(index), int(milli)))
    return out


def check(nodes_csv: Path, workloads_csv: Path, out_csv: Path) -> list[str]:
    nodes = {(r.get("name") or r.get("sn")): r for r in _rows(nodes_csv)}
    workloads, out = _rows(workloads_csv), _rows(out_csv)
    faults: list[str] = []
    if len(out) != len(workloads):
        return [f"OUT has {len(out)} rows for {len(workloads)} workloads"]
    used: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    device_use: dict[tuple[str, int], int] = defaultdict(int)
    for i, (w, o) in enumerate(zip(workloads, out, strict=True)):
        name = w.get("name") or f"w{i}"
        if o["name"] != name:
            faults.append(f"row {i}: OUT names {o['name']!r}, workload is {name!r}")
            continue
        node = o["node"]
        num_gpu, gpu_milli = _int(w, "num_gpu"), _int(w, "gpu_milli")
        asked_gpu = num_gpu * gpu_milli if num_gpu else 0
        devices = _devices(o.get("gpus") or "")
        if not node:
            if devices:
                faults.append(f"{name}: unplaced but holds GPUs {o['gpus']}")
            continue
        if node not in nodes:
            faults.append(f"{name}: unknown node {node!r}")
            continue
        n = nodes[node]
        if _int(o, "cpu_milli") < _int(w, "cpu_milli") or _int(o, "memory_mib") < _int(w, "memory_mib"):
            faults.append(f"{name}: reserved less cpu/memory than asked")
        used[node][0] += _int(o, "cpu_milli")
        used[node][1] += _int(o, "memory_mib")
        allowed = [m for m in (w.get("gpu_spec") or "").split("|") if m]
        if allowed and (n.get("model") or "") not in allowed:
            faults.append(f"{name}: gpu_spec {w['gpu_spec']} but node {node} has model {n.get('model')!r}")
        if sum(m for _, m in devices) != asked_gpu:
            faults.append(f"{name}: devices {o.get('gpus')!r} hold {sum(m for _, m in devices)}, asked {asked_gpu}")
        if asked_gpu > ONE_GPU or (asked_gpu == ONE_GPU and num_gpu >= 1):
            if any(m != ONE_GPU for _, m in devices):
                faults.append(f"{name}: whole GPUs on part devices {o.get('gpus')!r}")
        elif asked_gpu and len(devices) != 1:
            faults.append(f"{name}: a share split over {len(devices)} devices")
        if len({d for d, _ in devices}) != len(devices):
            faults.append(f"{name}: a device twice in {o.get('gpus')!r}")
        for d, m in devices:
            if not 0 <= d < _int(n, "gpu"):
                faults.append(f"{name}: device {d} not on {node} ({_int(n, 'gpu')} GPUs)")
            device_use[(node, d)] += m
    for node, (cpu, mem) in used.items():
        if cpu > _int(nodes[node], "cpu_milli") or mem > _int(nodes[node], "memory_mib"):
            faults.append(f"{node}: over capacity (cpu {cpu}, memory {mem} MiB)")
    faults += [f"{node} GPU {d}: {m} milli on one device" for (node, d), m in device_use.items() if m > ONE_GPU]
    return faults


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__.strip().splitlines()[-5], file=sys.stderr)
        return 2
    faults = check(*(Path(a) for a in sys.argv[1:]))
    for f in faults[:50]:
        print(f)
    print(f"{len(faults)} faults")
    return 1 if faults else 0


if __name__ == "__main__":
    sys.exit(main())
