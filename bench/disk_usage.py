"""What measuring an instance's disk costs (issue 15 point 5): agent/drivers/diskusage.py's
os.scandir walk in the agent's process against a `du -s -B1` subprocess per instance, over writable
layers of a few sizes (files of 4 KiB in directories of 50), each measured `--rounds` times.

    .venv/bin/python bench/disk_usage.py [--rounds 50]

Figures (2 cores shared with other work, ext4, warm cache, 2026-12-06), milliseconds per layer:

    files in the layer     walk     du -s    (medians of 30)
    0 (a fresh upper)      0.006    0.56
    100                    0.16     0.61
    1,000                  1.6      1.4
    10,000                 19.5     9.0

Most writable layers hold a few files (logs, a pid file, a cache): there the walk costs a hundredth
of a `du`, which pays a fork and exec each time. From about a thousand files `du` (C) is faster,
at most twice; the walk runs in a thread, off the event loop, so it was kept for all sizes.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from agent.drivers.diskusage import measure  # noqa: E402


def layer(root: Path, files: int) -> Path:
    upper = root / f"upper-{files}"
    upper.mkdir()
    for i in range(files):
        d = upper / f"d{i // 50}"
        d.mkdir(exist_ok=True)
        (d / f"f{i}").write_bytes(b"x" * 4096)
    return upper


def timed(fn, rounds: int) -> tuple[float, int]:
    out, times = 0, []
    for _ in range(rounds):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=50)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="packyard-disk-bench-"))
    try:
        print(f"{'files':>7} {'walk ms':>9} {'du ms':>9}  bytes (walk / du)")
        for files in (0, 100, 1000, 10000):
            upper = layer(root, files)
            walk_ms, walked = timed(lambda u=upper: measure([u]), args.rounds)
            du_ms, du_out = timed(lambda u=upper: int(subprocess.run(
                ["du", "-s", "-B1", str(u)], capture_output=True, text=True, check=True).stdout.split()[0]),
                args.rounds)
            print(f"{files:>7} {walk_ms:>9.3f} {du_ms:>9.3f}  {walked} / {du_out}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("(not root: fine, nothing here needs it)", file=sys.stderr)
    main()
