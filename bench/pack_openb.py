"""Every peer on the real pod lists of the Alibaba GPU trace family ("openb"), into bench/PACKING.md.

    python -m bench.pack_openb DIR [--gpu-model devices|pooled] [--only cpu050,gpushare40] [--cache F.json]

DIR holds `openb_node_list_all_node.csv` and the `openb_pod_list_*.csv` of alibaba/clusterdata's
`cluster-trace-gpu-v2023/csv/` (24 pod lists on the same 1,523 hosts: the default list, CPU-only
pods at 0 to 3x, GPU sharing at 20-100%, GPU-model constraints (`gpu_spec`) on 5-33% of the GPU
pods, multi-GPU pods 20-50% more); `git clone https://github.com/alibaba/clusterdata` gives them,
they are not copied here. They are the FGD paper's own workload variants: issue 18 is judged on
cases like them, none of which the engine was tuned on (`bench/families.py` resamples the default
list instead). Each list is placed in its file order, every OUT is checked by
`bench/pack_check.py`; a cell is `unplaced / hosts used / unallocated GPUs` as in
`bench/pack_families.py`, whose peers and rules this shares.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from bench.pack_families import ENGINE, PEERS, lp_cell, run_peer, standing

BEGIN = {False: "<!-- openb: begin (bench/pack_openb.py) -->", True: "<!-- openb pooled: begin (bench/pack_openb.py) -->"}
END = {False: "<!-- openb: end -->", True: "<!-- openb pooled: end -->"}
NODES = "openb_node_list_all_node.csv"
KINDS = ("default", "cpu", "gpushare", "gpuspec", "multigpu")


def variants(root: Path) -> list[tuple[str, Path]]:
    """(variant, pod list) in the paper's order: default, then each kind by its number."""
    found = []
    for path in root.glob("openb_pod_list_*.csv"):
        name = path.stem.removeprefix("openb_pod_list_")
        m = re.fullmatch(r"([a-z]+)(\d*)", name)
        if m and m.group(1) in KINDS:
            found.append(((KINDS.index(m.group(1)), int(m.group(2) or 0)), name, path))
    return [(name, path) for _, name, path in sorted(found)]


def cells_of(nodes: Path, works: Path, peers: list[str], gpu_model: str, cached: dict, tmp: Path):
    cells = {p: tuple(c) for p, c in cached.items() if p in peers and p != "packyard"}
    bounds = {}
    for peer in peers:
        if peer in cells:
            continue
        s, cells[peer] = run_peer(peer, nodes, works, tmp / f"{peer}.csv", gpu_model, f"on {works.name}")
        if peer == "packyard":
            bounds = {"LB": s["lower_bound"], "LP": s["lower_bound_lp"], "LP optimum": s["lower_bound_lp_fractional"]}
    return cells, bounds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", type=Path, help="the folder of the openb CSVs")
    p.add_argument("--gpu-model", choices=["devices", "pooled"], default="devices")
    p.add_argument("--only", default="", help="comma-separated variants (cpu050, gpushare40, ...)")
    p.add_argument("--cache", type=Path, help="JSON file keeping the peers' cells between runs")
    p.add_argument("--peers", default="", help="comma-separated subset of the peers (packyard always)")
    p.add_argument("--md", type=Path, default=Path(__file__).with_name("PACKING.md"))
    a = p.parse_args()
    pooled = a.gpu_model == "pooled"
    peers = [q for q in (ENGINE if pooled else ENGINE + PEERS) if q != "ffd"]
    if a.peers:
        peers = ["packyard"] + [q for q in peers if q in a.peers.split(",") and q != "packyard"]
    cache = json.loads(a.cache.read_text()) if a.cache and a.cache.exists() else {}
    lines = ["| variant | LB | LP | " + " | ".join(peers) + " | best online peer | packyard vs best |",
             "| --- | ---: | ---: | " + " | ".join(["---"] * len(peers)) + " | --- | --- |"]
    print("\n".join(lines), flush=True)
    tmp = Path(a.cache.parent if a.cache else "/tmp") / "pack_openb.tmp"
    tmp.mkdir(exist_ok=True)
    behind = 0
    for name, works in variants(a.root):
        if a.only and name not in a.only.split(","):
            continue
        key = name + ("|pooled" if pooled else "")
        cells, bounds = cells_of(a.root / NODES, works, peers, a.gpu_model, cache.get(key, {}), tmp)
        if a.cache:
            cache[key] = {**cache.get(key, {}), **{q: list(c) for q, c in cells.items() if q != "packyard"}}
            a.cache.write_text(json.dumps(cache, indent=1))
        online = [q for q in peers if q != "packyard"]
        best = min(online, key=lambda q: cells[q][:2])
        mark = standing(cells["packyard"], cells[best])
        behind += not mark.startswith("ahead")
        row = (f"| {name} | {bounds['LB']} | {lp_cell(bounds)} | "
               + " | ".join(("**%d / %d / %g**" if q == "packyard" else "%d / %d / %g") % cells[q] for q in peers)
               + f" | {best} | {mark} |")
        lines.append(row)
        print(row, flush=True)
    print(f"\n{len(lines) - 2} lists: packyard behind the best online peer on {behind}.")
    if not a.only and not a.peers and a.md.exists():
        text = a.md.read_text()
        if BEGIN[pooled] in text and END[pooled] in text:
            head, rest = text.split(BEGIN[pooled], 1)
            table = "\n".join(lines) + f"\n\n{len(lines) - 2} lists: packyard behind the best online peer on {behind}."
            a.md.write_text(head + BEGIN[pooled] + "\n" + table + "\n" + END[pooled] + rest.split(END[pooled], 1)[1])


if __name__ == "__main__":
    main()
