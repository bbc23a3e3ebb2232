"""Bytes the scheduler's cache holds per instance (issue 12: its RSS grows with the instances).

    python bench/cache_bytes.py [--instances 20000] [--hosts 1000] [--tree DIR]

Builds a scheduler.state.ClusterState of N instances of one job the way a scale run fills it, in
process and without etcd: each instance record as the reconciler makes it, written and read back
through records.dumps / records.loads (the watch's copy), then placed as placing.py does (one
reserved dict shared by a batch) and applied as the scheduler's own commit, then the agent's
report of it running read from JSON. Prints tracemalloc's bytes per instance for each step and for
the whole cache, the lines that allocated most, and the CPU of records.dumps / loads / evolve
for one placed record. `--tree` runs another checkout's code (e.g.
an older commit's worktree, with its own venv's python) for a side-by-side figure: the script
only uses names every tree since 1cab3bd has.
"""
from __future__ import annotations

import argparse
import gc
import sys
import timeit
import tracemalloc
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=20000)
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--tree", type=Path, default=Path(__file__).resolve().parent.parent)
    ap.add_argument("--top", type=int, default=12)
    opts = ap.parse_args()
    sys.path.insert(0, str(opts.tree))
    from packyard import keys, records
    from packyard.etcd import Event
    from packyard.records import InstanceRecord
    from scheduler.state import ClusterState

    n, job, now = opts.instances, "big", 1_765_000_000.123
    state = ClusterState()
    gc.collect()
    tracemalloc.start(4)
    steps: list[tuple[str, int]] = []
    base = tracemalloc.get_traced_memory()[0]

    def step(name: str) -> None:
        gc.collect()
        steps.append((name, tracemalloc.get_traced_memory()[0]))

    rev = 1
    for i in range(n):      # the reconciler's records, read back from the watch
        made = InstanceRecord(id=f"{job}.g.{i}-1", job=job, group="g", index=i, kind="container",
                              version=1, ghash="3f9a0c4e1b7d2a65")
        rev += 1
        state.apply(Event("put", keys.instance(job, made.id), records.dumps(made), rev))
    step("pending, read from etcd")
    batch = 128              # placing.py: one reserved dict per placement result
    for start in range(0, n, batch):
        reserved = {"cpu_milli": 250, "memory_bytes": 64 << 20, "disk_bytes": 0, "gpu_milli": 0}
        for i in range(start, min(n, start + batch)):
            r = state.instances[f"{job}.g.{i}-1"].record
            placed = records.evolve(r, node=f"sim-{i % opts.hosts:05d}", reserved=reserved,
                                    placed_at=now, attempts=r.attempts + 1, reason="")
            rev += 1
            state.put_own_write(placed, rev)
    step("placed (own commits)")
    for i in range(n):       # the agent's report, as its watch event brings it
        iid = f"{job}.g.{i}-1"
        raw = (b'{"id":"%s","started_at":%.3f,"state":"running","updated_at":%.3f}'
               % (iid.encode(), now + 2, now + 2))
        rev += 1
        state.apply(Event("put", keys.state(f"sim-{i % opts.hosts:05d}", iid), raw, rev))
    step("reported running")
    snap = tracemalloc.take_snapshot()
    tracemalloc.stop()

    last = base
    for name, size in steps:
        print(f"{name:28} {(size - last) / n:8.0f} bytes/instance")
        last = size
    print(f"{'whole cache':28} {(last - base) / n:8.0f} bytes/instance")
    entry = state.instances[f"{job}.g.0-1"]
    _times(records, InstanceRecord, entry.record)
    print("InstanceRecord", _shallow(entry.record), "StateRecord", _shallow(entry.state),
          "Entry", _shallow(entry), "bytes (object + its __dict__, shallow)")
    for stat in snap.statistics("lineno")[:opts.top]:
        frame = stat.traceback[0]
        print(f"  {stat.size / n:7.0f} B/inst  {Path(frame.filename).name}:{frame.lineno}")


def _times(records, cls, placed) -> None:
    """CPU a record costs: the fastest of 5 rounds of each (on a shared machine, the least
    disturbed)."""
    raw = records.dumps(placed)
    cases = {"dumps": lambda: records.dumps(placed), "loads": lambda: records.loads(cls, raw),
             "evolve": lambda: records.evolve(placed, node="sim-00002", attempts=2, reason="")}
    rounds = 20000
    print("µs a placed instance record:", ", ".join(
        f"{name} {min(timeit.repeat(f, number=rounds, repeat=5)) / rounds * 1e6:.2f}"
        for name, f in cases.items()))


def _shallow(obj: object) -> int:
    d = getattr(obj, "__dict__", None)
    return sys.getsizeof(obj) + (sys.getsizeof(d) if d is not None else 0)


if __name__ == "__main__":
    main()
