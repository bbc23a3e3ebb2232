"""bench/pack_families.py --heldout: rows merged by case into their own section, the standing of
packyard against the best online peer, and the counts under the table."""
from __future__ import annotations

import random

from bench import pack_families as pf

HEADER = ["| family | variant | seed | LB | LP | packyard | k8s-default | fgd | best online peer | packyard vs best |",
          "| --- | --- | ---: | ---: | ---: | --- | --- | --- | --- | --- |"]
BEGIN, END = pf.HELDOUT[False]


def _row(family: str, variant: str, seed: int, ours: tuple, peer: tuple, fgd: tuple) -> str:
    best = min((("k8s-default", peer), ("fgd", fgd)), key=lambda x: x[1][:2])
    cells = " | ".join(f"{c[0]} / {c[1]} / {c[2]:g}" for c in (ours, peer, fgd))
    return f"| {family} | {variant} | {seed} | 1 | 1 (0.50) | **{cells.replace(' | ', '** | ', 1)} | {best[0]} | " \
           f"{pf.standing(ours, best[1])} |"


def test_standing_puts_unplaced_before_hosts():
    assert pf.standing((3, 100, 0.0), (3, 100, 5.0)) == "ahead or equal"
    assert pf.standing((2, 120, 0.0), (3, 100, 0.0)) == "behind on hosts only (+20)"
    assert pf.standing((4, 90, 0.0), (3, 100, 0.0)) == "behind on unplaced (+1)"


def test_merge_replaces_a_case_keeps_the_others_and_orders_them_as_the_variants():
    rng = random.Random(18)
    cases = [(f, v) for f, v, _ in pf.VARIANTS + pf.EXTRA]
    picked = rng.sample(cases, 5)
    text = "# Packing\n\n<!-- families: begin (bench/pack_families.py) -->\nuntouched\n<!-- families: end -->\n"
    first = [_row(f, v, s, (5, 50, 1.5), (6, 60, 2.0), (7, 40, 1.0)) for f, v in picked for s in (4, 3)]
    text = pf.merge_heldout(text, BEGIN, END, HEADER, first)
    assert text.count(pf.HEADING) == 1 and "untouched" in text
    # the same case measured again replaces its row; a new seed is added
    again = _row(*picked[0], 3, (9, 50, 1.5), (6, 60, 2.0), (7, 40, 1.0))
    text = pf.merge_heldout(text, BEGIN, END, HEADER, [again, _row(*picked[0], 5, (1, 30, 0.5), (6, 60, 2.0),
                                                                    (7, 40, 1.0))])
    assert text.count(pf.HEADING) == 1
    rows = pf.table_rows(text, BEGIN, END)
    assert len(rows) == 11
    keys = [(r["family"], r["variant"], int(r["seed"])) for r in rows]
    assert keys == sorted(keys, key=lambda k: (cases.index(k[:2]), k[2]))
    mine = {int(r["seed"]): r for r in rows if (r["family"], r["variant"]) == picked[0]}
    assert mine[3]["packyard"] == "9 / 50 / 1.5" and mine[3]["packyard vs best"] == "behind on unplaced (+3)"
    assert mine[5]["packyard vs best"] == "ahead or equal"


def test_counts_sum_to_the_rows_and_name_the_trace_rows_above_fgd():
    rng = random.Random(7)
    rows = []
    for seed in range(1, 30):
        ours, peer, fgd = ((rng.randint(0, 5), rng.randint(90, 110), round(rng.uniform(0, 9), 2)) for _ in range(3))
        rows.append(_row(rng.choice(["trace", "vmmix"]), "cpu-only 2x", seed, ours, peer, fgd))
    text = pf.merge_heldout("", BEGIN, END, HEADER, rows)
    parsed = pf.table_rows(text, BEGIN, END)
    line = text.split(END)[0].strip().splitlines()[-1]
    want = {s: sum(r["packyard vs best"].startswith(s) for r in parsed) for s in pf.STANDING}
    assert line.startswith(f"29 rows: packyard ahead or equal {want['ahead or equal']}, "
                           f"behind on unplaced {want['behind on unplaced']}, "
                           f"behind on hosts only {want['behind on hosts only']}.")
    assert sum(want.values()) == 29
    above = [r for r in parsed if r["family"] == "trace"
             and pf.parse_cell(r["packyard"])[2] > pf.parse_cell(r["fgd"])[2]]
    trace = sum(r["family"] == "trace" for r in parsed)
    assert f"Unallocated GPUs above FGD's on {len(above)} of {trace} trace rows" in line
    for r in above:
        assert f"{r['variant']} seed {r['seed']}" in line


def test_the_extra_variants_are_new_cases_within_the_families_ranges():
    table = {(f, v) for f, v, _ in pf.VARIANTS}
    assert all((f, v) not in table for f, v, _ in pf.EXTRA)
    assert len({v for _, v, _ in pf.EXTRA}) == len(pf.EXTRA)


def test_vmsizes_draws_size_distributions_that_fit_and_vary():
    """families.vmsizes: the same case for a seed; identical hosts; every VM at most half a host
    in cores and memory; and the host size and the VM sizes asked differ between seeds."""
    from bench import families
    assert families.vmsizes(3) == families.vmsizes(3)
    shapes = set()
    for seed in range(1, 7):
        nodes, rows = families.vmsizes(seed)
        assert len({n[1:] for n in nodes}) == 1 and rows
        cpu, mem = nodes[0][1], nodes[0][2]
        vms = {(r[1], r[2]) for r in rows if r[3] == "vm"}
        assert all(c <= cpu // 2 and m <= mem // 2 for c, m in vms)
        shapes.add((cpu, mem, frozenset(vms)))
    assert len(shapes) == 6


def test_smallshapes_draws_hosts_of_several_proportions():
    """families.smallshapes: the same case for a seed; containers of at most 2 cores and 4 GiB;
    hosts of at least two types, and over seeds of more than one GiB-per-core ratio."""
    from bench import families
    assert families.smallshapes(2) == families.smallshapes(2)
    ratios = set()
    for seed in range(1, 6):
        nodes, rows = families.smallshapes(seed)
        assert len({n[1:3] for n in nodes}) >= 2 and rows
        assert all(r[1] <= 2000 and r[2] <= 4096 for r in rows)
        ratios |= {n[2] // 1024 * 1000 // n[1] for n in nodes}
    assert len(ratios) >= 3
