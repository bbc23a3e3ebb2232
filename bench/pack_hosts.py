"""Where the hosts went: per host type, how many each placer opened and how full it left them.

    python bench/pack_hosts.py NODES.csv LABEL=OUT.csv [LABEL=OUT.csv ...]

A host type is a node CSV's (cpu_milli, memory_mib, gpu, model). For each type and each OUT
(`packyard-bench pack`'s, or bench/gpu_peers.py's, same columns) it prints the hosts used and,
over those, the mean share of cpu, memory and GPUs reserved: two placers that open different
numbers of hosts differ in which type they open, or in how full they leave a type. Used to find
why packyard opens more hosts than a peer on one family (bench/PACKING.md, "The open gaps").
"""
from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path


def read_types(nodes_csv: Path) -> dict[str, tuple]:
    """Node name -> its type (cpu_milli, memory_mib, gpus, model)."""
    with nodes_csv.open(newline="") as f:
        return {r["name"]: (int(r["cpu_milli"]), int(r["memory_mib"]), int(r.get("gpu") or 0),
                            (r.get("model") or "").strip())
                for r in csv.DictReader(f)}


def fill(types: dict[str, tuple], out_csv: Path) -> dict[tuple, tuple[int, float, float, float]]:
    """Type -> (hosts used, mean cpu share, mean memory share, mean GPU share) over used hosts."""
    used: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    with out_csv.open(newline="") as f:
        for r in csv.DictReader(f):
            if r["node"]:
                row = used[r["node"]]
                row[0] += int(r["cpu_milli"] or 0)
                row[1] += int(r["memory_mib"] or 0)
                row[2] += int(r["gpu_milli"] or 0)
    per_type: dict[tuple, list[tuple[float, float, float]]] = defaultdict(list)
    for node, (cpu, mem, gpu) in used.items():
        t = types[node]
        per_type[t].append((cpu / t[0], mem / t[1], gpu / (t[2] * 1000) if t[2] else 0.0))
    return {t: (len(v), *(sum(x[i] for x in v) / len(v) for i in range(3))) for t, v in per_type.items()}


def main(argv: list[str]) -> int:
    if len(argv) < 2 or any("=" not in a for a in argv[1:]):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    types = read_types(Path(argv[0]))
    count: dict[tuple, int] = defaultdict(int)
    for t in types.values():
        count[t] += 1
    runs = [(label, fill(types, Path(path))) for label, path in (a.split("=", 1) for a in argv[1:])]
    print("| host type (cores, GiB, GPUs model) | hosts | "
          + " | ".join(f"{label}: used, cpu / mem / gpu %" for label, _ in runs) + " |")
    print("| --- | ---: |" + " --- |" * len(runs))
    for t in sorted(count, key=lambda t: (-t[2], -t[0], -t[1], t[3])):
        cells = []
        for _, by_type in runs:
            n, cpu, mem, gpu = by_type.get(t, (0, 0.0, 0.0, 0.0))
            cells.append(f"{n}, {cpu:.0%} / {mem:.0%} / {gpu:.0%}" if n else "0")
        name = f"{t[0] / 1000:g}, {t[1] / 1024:g}, {t[2]} {t[3]}".rstrip()
        print(f"| {name} | {count[t]} | " + " | ".join(cells) + " |")
    totals = [sum(n for n, *_ in by_type.values()) for _, by_type in runs]
    print(f"| all | {len(types)} | " + " | ".join(str(n) for n in totals) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
