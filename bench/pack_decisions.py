"""A digest of the engine's decisions on generated cases, to check that a speed change decides
exactly as before (every host and GPU device of every instance, every reason).

    python bench/pack_decisions.py > after.txt                 # the work tree
    (cd OLD_TREE && PYTHONPATH=. python $HERE/bench/pack_decisions.py) > before.txt
    diff before.txt after.txt                                   # empty: the same decisions

Cases: bench/families.py (trace, vmmix, mixedhosts, small) and gen_mix with and without GPU
hosts, several seeds; policies packyard (both GPU models on the trace), nomad-binpack and
k8s-default. One line per case and policy: its name, totals, and a sha256 of the full output.
"""
from __future__ import annotations

import argparse
import hashlib
import tempfile
from pathlib import Path

from bench import families, gen_mix
from scheduler.placement.benchcli import read_nodes, read_workloads
from scheduler.placement.config import EngineConfig
from scheduler.placement.engine import place


def cases(quick: bool):
    seeds = (1, 2) if quick else (1, 2, 3)
    for s in seeds:
        yield f"trace-{s}", families.trace(s, cpu_x=1.0 + s / 2, shared=(0.2, 0.5, 1.0)[s - 1]), ("devices", "pooled")
        yield f"vmmix-{s}", families.vmmix(s, hosts=300, workloads=4000), ("devices",)
        yield f"mixedhosts-{s}", families.mixedhosts(s, hosts=400, workloads=5000), ("devices",)
        yield f"small-{s}", families.small(s, hosts=500, workloads=6000), ("devices",)
        for gpu in (0.0, 0.25):
            nodes, rows = gen_mix.generate(1000, 10000, s, gpu_hosts=gpu)
            yield (f"genmix-gpu{gpu}-{s}", ([(*n, "") for n in nodes], [(*r, "") for r in rows]),
                   ("devices",))


def digest(results) -> tuple[int, int, str]:
    h = hashlib.sha256()
    unplaced = placed = 0
    for r in results:
        placed += len(r.hosts)
        unplaced += r.unplaced
        h.update(repr((r.hosts, r.gpus, sorted(r.reasons.items()), r.status.value)).encode())
    return placed, unplaced, h.hexdigest()[:16]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="two seeds instead of three")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        n_csv, w_csv = Path(tmp) / "n.csv", Path(tmp) / "w.csv"
        for name, (nodes, rows), models in cases(a.quick):
            families.write(nodes, rows, n_csv, w_csv)
            asks = read_workloads(w_csv)
            for model in models:
                table = read_nodes(n_csv, gpu_model=model)
                policies = ("packyard", "nomad-binpack", "k8s-default") if model == "devices" else ("packyard",)
                for policy in policies:
                    config = EngineConfig.for_policy(policy, gpu_model=model)
                    print(name, model, policy, *digest(place(table, asks, config)), flush=True)


if __name__ == "__main__":
    main()
