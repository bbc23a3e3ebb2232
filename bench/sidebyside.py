"""Runs an in-process benchmark against several checkouts, alternated round by round, and prints
the medians side by side (bench/look.py, bench/agent_start.py).

Each checkout runs with its own venv (`<tree>/.venv/bin/python`) and imports its own code: the
benchmark script is this checkout's, given `--tree <checkout> --json`, and prints one JSON object
{case: {figure: number}}. A round runs every tree once, in the order given, so that each sees the
same load; the first tree is the one the ratios are to.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--rounds", type=int, default=3, help="with --trees: rounds, each tree once a round")
    ap.add_argument("--tree", type=Path, help="import the project from this checkout (default: this one)")
    ap.add_argument("--trees", nargs="+", metavar="NAME=DIR", help="compare checkouts, alternated")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")


def import_from(args: argparse.Namespace) -> None:
    """The checkout `--tree` (or this one) first on sys.path."""
    sys.path.insert(0, str((args.tree or ROOT).resolve()))


def compare(script: str, args: argparse.Namespace, passed: list[str], title: str, figure: str,
            extra: str = "") -> None:
    """Runs `script` in each of `--trees` for `--rounds` rounds with the options named in `passed`
    (argparse dests) as given here, then prints `title` and the table of `figure`."""
    trees = parse_trees(args.trees)
    options = [x for name in passed for x in (f"--{name.replace('_', '-')}", str(getattr(args, name)))]
    runs = run_rounds(Path(script).resolve(), trees, args.rounds, options)
    print(f"{title} (median of {args.rounds} rounds; ratio to {trees[0][0]}):")
    print("\n".join(table(runs, figure, extra)))


def parse_trees(specs: list[str]) -> list[tuple[str, Path]]:
    """`NAME=DIR` each."""
    return [(s.split("=", 1)[0], Path(s.split("=", 1)[1]).resolve()) for s in specs]


def run_rounds(script: Path, trees: list[tuple[str, Path]], rounds: int, args: list[str]) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {name: [] for name, _ in trees}
    for r in range(rounds):
        for name, tree in trees:
            cmd = [str(tree / ".venv" / "bin" / "python"), str(script), "--tree", str(tree), "--json", *args]
            done = subprocess.run(cmd, check=True, capture_output=True, text=True)
            runs[name].append(json.loads(done.stdout))
            print(f"round {r + 1} {name}: {done.stdout.strip()}", file=sys.stderr)
    return runs


def table(runs: dict[str, list[dict]], figure: str, extra: str = "", fmt: str = "{:.1f}") -> list[str]:
    """Markdown rows: per case, each tree's median of `figure` over its rounds (ratio to the first
    tree), with the median of `extra` in brackets when given."""
    names = list(runs)
    base = names[0]
    cases = list(dict.fromkeys(case for run in runs[base] for case in run))
    rows = [f"| case | {' | '.join(names)} |", f"| --- |{' ---: |' * len(names)}"]
    for case in cases:
        b = [run[case][figure] for run in runs[base] if case in run]
        cells = []
        for name in names:
            have = [run[case] for run in runs[name] if case in run]
            if not have:
                cells.append("n/a")
                continue
            value = statistics.median(v[figure] for v in have)
            cell = fmt.format(value)
            if name != base and b:
                cell += f" ({value / statistics.median(b):.2f})"
            if extra:
                cell += f" [{extra} {fmt.format(statistics.median(v[extra] for v in have))}]"
            cells.append(cell)
        rows.append(f"| {case} | {' | '.join(cells)} |")
    return rows
