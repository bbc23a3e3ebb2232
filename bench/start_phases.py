"""Where the time of a container start goes: a burst of starts straight through a ContainerDriver
(as submit_latency.py's burst_driver_only), each phase of each start timed with perf_counter by
wrapping the driver's collaborators (runc calls, network attach, cgroup create, overlay mount, config
write). Prints per phase: how many calls, their median and total wall time, and the burst's p50/p99.

    sudo .venv/bin/python bench/start_phases.py [--count 20] [--runs 1] [--parallel N]

Run from any checkout (PYTHONPATH=<tree> to measure another tree's driver with this script).
"""
from __future__ import annotations

import argparse
import asyncio
import functools
import json
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from agent.drivers.base import InstanceSpec
from agent.drivers.container import ContainerDriver
from agent.drivers.container import cgroups as cg
from agent.drivers.container import rootfs as rootfs_mod
from agent.drivers.container import runc as runc_mod
from agent.network import HostNetwork

PHASES: dict[str, list[float]] = defaultdict(list)


def _timed(name: str, fn):
    if asyncio.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def wrapper(*a, **kw):
            t = time.perf_counter()
            try:
                return await fn(*a, **kw)
            finally:
                PHASES[name].append((time.perf_counter() - t) * 1000)
    else:
        @functools.wraps(fn)
        def wrapper(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                PHASES[name].append((time.perf_counter() - t) * 1000)
    return wrapper


def instrument() -> None:
    for name in ("create", "start", "run_detached"):
        if hasattr(runc_mod.Runc, name):
            setattr(runc_mod.Runc, name, _timed(f"runc {name}", getattr(runc_mod.Runc, name)))
    runc_mod.write_config = _timed("write config.json", runc_mod.write_config)
    runc_mod.config = _timed("build config", runc_mod.config)
    rootfs_mod.mount_overlay = _timed("mount overlay", rootfs_mod.mount_overlay)
    HostNetwork.attach = _timed("network attach", HostNetwork.attach)
    for cls in {type(c) for c in _cgroup_classes()}:
        cls.create = _timed("cgroup create", cls.create)


def _cgroup_classes():
    try:
        yield cg.detect()
    except cg.CgroupError:
        return


async def burst(state_dir: Path, count: int, parallel: int = 0) -> list[float]:
    driver = ContainerDriver("pbp", state_dir, "10.213.66.0/24", parallel_starts=parallel)
    specs = [InstanceSpec(id=f"ph.c.{i}", job="ph", group="c", kind="container", cpu_milli=100,
                          memory_bytes=32 << 20, config={"command": ["/bin/sleep", "3600"]})
             for i in range(count + 1)]
    handles = [await driver.start(specs[-1])]        # the bridge and the built-in image made first
    PHASES.clear()
    t0 = time.perf_counter()

    async def one(spec) -> float:
        handles.append(await driver.start(spec))
        return (time.perf_counter() - t0) * 1000

    try:
        return list(await asyncio.gather(*(one(s) for s in specs[:-1])))
    finally:
        for h in handles:
            await driver.destroy(h)
        await driver.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--parallel", type=int, default=0, help="the driver's parallel_starts (0: its default)")
    args = ap.parse_args()
    instrument()
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="packyard-phases-") as d:
            xs = asyncio.run(burst(Path(d), args.count, args.parallel))
        xs.sort()
        print(json.dumps({
            "p50_ms": round(statistics.median(xs), 1), "p99_ms": round(xs[-1], 1),
            "first_ms": round(xs[0], 1),
            "phases": {k: {"n": len(v), "median_ms": round(statistics.median(v), 2), "total_ms": round(sum(v), 1)}
                       for k, v in PHASES.items()}}, indent=1))


if __name__ == "__main__":
    main()
