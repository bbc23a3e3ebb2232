"""What a container's log process (s6-log, agent/drivers/container/logger.py) costs per instance.

Starts N log processes the way the container driver does (logger.start, timed until each is ready; the default cap 10Mi × 5,
each on its own pipe), then prints their resident memory (RSS: what each would show in `ps`; PSS:
its share of the pages they share, i.e. what N of them add up to), idle and while one of them is fed
by lines as fast as it can read (as a `yes` would), with that throughput and the largest log file seen.

    .venv/bin/python bench/log_process.py [--processes 20] [--seconds 3]
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.drivers.container import logger  # noqa: E402


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in KiB."""
    rss = int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1))
    pss = int(re.search(r"^Pss:\s+(\d+)", Path(f"/proc/{pid}/smaps_rollup").read_text(), re.M).group(1))
    return rss, pss


def feed(fd: int, seconds: float, fed: list[int]) -> None:
    """Lines as `yes` writes them, as fast as the log process takes them; the bytes counted."""
    chunk = b"packyard benchmark line\n" * 2731          # ~64 KiB, a pipe's worth
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        fed[0] += os.write(fd, chunk)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    cap = logger.LogCap()
    with tempfile.TemporaryDirectory(prefix="packyard-logbench-") as tmp:
        root = Path(tmp)
        started, writers, took = [], [], []
        for i in range(args.processes):
            r, w = os.pipe()
            t0 = time.perf_counter()
            started.append(logger.start(cap, root / f"c{i}", r, root / f"c{i}.err"))
            took.append(time.perf_counter() - t0)
            os.close(r)
            writers.append(w)
        idle = [memory_kib(p.pid) for p in started]
        print(f"{args.processes} log processes (s6-log, cap {cap.max_size >> 20} MiB × {cap.max_files}); "
              f"start until ready: median {statistics.median(took) * 1000:.1f} ms; idle:")
        print(f"  RSS median {statistics.median(r for r, _ in idle):.0f} KiB, "
              f"PSS median {statistics.median(p for _, p in idle):.0f} KiB (sum {sum(p for _, p in idle)} KiB)")
        fed = [0]
        feeder = threading.Thread(target=feed, args=(writers[0], args.seconds, fed))
        feeder.start()
        deadline, largest = time.monotonic() + args.seconds, 0
        while time.monotonic() < deadline:
            files = [p for p in (root / "c0").iterdir() if p.name == "current" or p.name.startswith("@")]
            largest = max([largest, *(p.stat().st_size for p in files)])
            time.sleep(0.05)
        busy = memory_kib(started[0].pid)
        feeder.join()
        written = sum(p.stat().st_size for p in (root / "c0").iterdir() if p.is_file())
        rotated = len(list((root / "c0").glob("@*.s")))
        for w in writers:
            os.close(w)                                  # EOF: each ends by itself
        for p in started:
            os.waitpid(p.pid, 0)
        print(f"  fed as fast as it reads for {args.seconds:g} s: {fed[0] / args.seconds / 2**20:.0f} MiB/s of "
              f"24-byte lines; RSS {busy[0]} KiB, PSS {busy[1]} KiB; "
              f"{rotated} rotated files kept (at most {cap.max_files - 1}), largest file {largest} B "
              f"(cap {cap.max_size}), {written / 2**20:.1f} MiB on disk at the end")


if __name__ == "__main__":
    main()
