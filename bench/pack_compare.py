"""Run `packyard-bench pack` once per policy (and per arrival order) and print a markdown table.

    python bench/pack_compare.py --nodes NODES.csv --workloads WORKLOADS.csv [--orders 0,1,2]

Order 0 is the file's own order; order k > 0 is the file shuffled with seed k (the same shuffle for
every policy). Each cell runs the console script as its own process, so the rate includes start-up
and CSV, as issue 3 asks.
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

POLICIES = ["packyard", "nomad-binpack", "k8s-default", "k8s-mostallocated"]


def shuffled(workloads: Path, seed: int, into: Path) -> Path:
    with workloads.open(newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    random.Random(seed).shuffle(body)
    out = into / f"{workloads.stem}.order{seed}.csv"
    with out.open("w", newline="") as f:
        csv.writer(f).writerows([header, *body])
    return out


def run(nodes: Path, workloads: Path, policy: str, out: Path, gpu_model: str = "devices") -> dict:
    exe = shutil.which("packyard-bench") or str(Path(sys.executable).with_name("packyard-bench"))
    proc = subprocess.run([exe, "pack", "--nodes", str(nodes), "--workloads", str(workloads),
                           "--out", str(out), "--policy", policy, "--gpu-model", gpu_model],
                          check=True, capture_output=True, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=Path, required=True)
    p.add_argument("--workloads", type=Path, required=True)
    p.add_argument("--orders", default="0", help="comma-separated: 0 = file order, k = shuffled with seed k")
    p.add_argument("--policies", default=",".join(POLICIES))
    p.add_argument("--json", type=Path, help="also write every summary here")
    p.add_argument("--gpu-model", default="devices", choices=("devices", "pooled"),
                   help="how hosts' GPUs are counted (scheduler/placement/gpumodel.py)")
    a = p.parse_args()
    summaries = []
    print("| policy | order | placed | unplaced | unplaced GPUs | hosts used | lower bound | placements/s |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        for order in (int(x) for x in a.orders.split(",")):
            workloads = a.workloads if order == 0 else shuffled(a.workloads, order, tmpdir)
            for policy in a.policies.split(","):
                s = run(a.nodes, workloads, policy, tmpdir / "out.csv", a.gpu_model)
                s["order"] = order
                summaries.append(s)
                print(f"| {policy} | {'file' if order == 0 else f'shuffle {order}'} | {s['placed']} | "
                      f"{s['unplaced']} | {s['unplaced_gpus']:g} | {s['hosts_used']} | {s['lower_bound']} | "
                      f"{s['placements_per_s']} |", flush=True)
    if a.json:
        a.json.write_text(json.dumps(summaries, indent=1))


if __name__ == "__main__":
    main()
