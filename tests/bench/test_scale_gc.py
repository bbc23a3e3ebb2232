"""bench/scale.py --gc-log: the collections log a child process writes (bench/gclog/), and the
figures scale.py makes of it."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from bench.scale import gc_figures

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("seed", range(5))
def test_gc_figures_keep_to_the_window_and_split_off_the_exit(seed):
    rnd = random.Random(seed)
    start, probes_start, end = 10.0, 10.0 + rnd.uniform(5, 30), 0.0
    end = probes_start + rnd.uniform(1, 3)
    log, inside = [], []
    t = rnd.uniform(0, start)
    while t < end + 5:
        c = [t, rnd.choice([0, 0, 0, 1, 2]), rnd.uniform(0.01, 200), rnd.randrange(0, 50)]
        log.append(c)
        if start <= t <= end:
            inside.append(c)
        t += rnd.uniform(0.05, 2)
    exit_ms, exit_objects = rnd.uniform(100, 2000), rnd.randrange(10**5, 10**6)
    log += [[t, "unfreeze", 0.0, 0], [t + 0.1, 0, 0.1, 3], [t + 0.5, 2, exit_ms, exit_objects]]
    full = [c for c in inside if c[1] == 2]
    assert gc_figures(log, start, probes_start, end) == {
        "gc2_n": len(full), "gc2_max_ms": max((c[2] for c in full), default=0.0),
        "gc2_ms": sum(c[2] for c in full),
        "gc2_probes_max_ms": max((c[2] for c in full if c[0] >= probes_start), default=0.0),
        "gc_collected": sum(c[3] for c in inside),
        "gc_exit_ms": exit_ms, "gc_exit_collected": exit_objects}


@pytest.mark.parametrize("size", [300, 3000])
def test_a_child_logs_its_collections_and_the_unfreeze(tmp_path, size):
    """A child with bench/gclog on its PYTHONPATH: a cycle of `size` lists collected, then an
    unfreeze and a collection after it (and the interpreter's own at exit), in that order."""
    path = tmp_path / "gc.json"
    code = (f"import gc\nring = [[] for _ in range({size})]\n"
            "for a, b in zip(ring, ring[1:] + ring[:1]):\n    a.append(b)\n"
            "del ring, a, b\ngc.collect()\ngc.unfreeze()\ngc.collect()\n")
    env = {**os.environ, "PACKYARD_GC_LOG": str(path), "PYTHONPATH": str(ROOT / "bench" / "gclog")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=tmp_path)
    log = json.loads(path.read_text())
    marks = [i for i, c in enumerate(log) if c[1] == "unfreeze"]
    assert len(marks) == 1
    before, after = log[:marks[0]], log[marks[0] + 1:]
    assert before[-1][1] == 2 and before[-1][3] >= size          # the ring, found by the collector
    assert after[0][1] == 2 and after[0][3] < size                # nothing of it left
    assert [c[0] for c in log] == sorted(c[0] for c in log)
