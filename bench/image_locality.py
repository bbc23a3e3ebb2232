"""Image locality (issue 16) against packing density: `packyard-bench pack` on a trace as it is, then
on the same trace with registry images added (each workload runs one of K images; each node holds
each image with probability P, at a random size), so that most asks carry an image locality
tie-break. Prints both JSON summaries and what changed: hosts used, unplaced, stranded GPUs (the
density figures, expected equal), how many workloads landed elsewhere, and how many landed on a
host holding their image.

    python bench/image_locality.py --nodes NODES.csv --workloads WORKLOADS.csv [--images 20] [--hold 0.3]
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import tempfile
from pathlib import Path

from bench.pack_compare import run


def with_images(nodes: Path, workloads: Path, into: Path, images: int, hold: float, seed: int) -> tuple[Path, Path]:
    rng = random.Random(seed)
    names = [f"img{k}" for k in range(images)]
    sizes = {n: rng.randint(5, 500) << 20 for n in names}
    out_nodes, out_work = into / "nodes.images.csv", into / "workloads.images.csv"
    for src, dst, column, value in (
            (nodes, out_nodes, "images",
             lambda: "|".join(f"{n}:{sizes[n]}" for n in names if rng.random() < hold)),
            (workloads, out_work, "image", lambda: rng.choice(names))):
        with src.open(newline="") as f:
            rows = list(csv.DictReader(f))
        with dst.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=[*rows[0].keys(), column])
            w.writeheader()
            for row in rows:
                w.writerow({**row, column: value()})
    return out_nodes, out_work


def placements(out: Path) -> list[str]:
    with out.open(newline="") as f:
        return [row.get("node", "") for row in csv.DictReader(f)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=Path, required=True)
    ap.add_argument("--workloads", type=Path, required=True)
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--hold", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--policy", default="packyard")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        nodes, work = with_images(args.nodes, args.workloads, tmp, args.images, args.hold, args.seed)
        plain = run(args.nodes, args.workloads, args.policy, tmp / "plain.out.csv")
        local = run(nodes, work, args.policy, tmp / "images.out.csv")
        print(json.dumps({"without_images": plain}))
        print(json.dumps({"with_images": local}))
        before, after = placements(tmp / "plain.out.csv"), placements(tmp / "images.out.csv")
        held = {}
        with nodes.open(newline="") as f:
            for i, row in enumerate(csv.DictReader(f)):
                held[row.get("name") or row.get("sn") or f"node-{i}"] = {
                    item.rpartition(":")[0] for item in (row["images"] or "").split("|") if item}
        with work.open(newline="") as f:
            wanted = [row["image"] for row in csv.DictReader(f)]

        def on_holder(where: list[str]) -> int:
            return sum(1 for node, image in zip(where, wanted, strict=True) if node and image in held.get(node, ()))
        print(json.dumps({
            "hosts_used": [plain["hosts_used"], local["hosts_used"]],
            "unplaced": [plain["unplaced"], local["unplaced"]],
            "gpu_stranded_on_used_hosts": [plain["gpu_stranded_on_used_hosts"], local["gpu_stranded_on_used_hosts"]],
            "moved": sum(1 for a, b in zip(before, after, strict=True) if a != b),
            "on_a_host_holding_the_image": [on_holder(before), on_holder(after)],
            "placements_per_s": [plain["placements_per_s"], local["placements_per_s"]],
        }))


if __name__ == "__main__":
    main()
