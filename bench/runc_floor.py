"""The floor under the container burst (issue 12): the same 20 confined starts made with runc alone.

The container driver starts one container to write the bundle it would write (Docker's seccomp
filter, the user namespace, its own network namespace, the agent's capabilities and masks); that
config.json is then given to `count` bundles, each with its own overlay rootfs on the same image
and its own cgroup, all prepared before the clock starts. Timed, from one t0, with no packyard in
the loop (asyncio subprocesses of runc, stdio to /dev/null):
  create_start: `runc create` under a slot (`--parallel`, default 2 per CPU, at least 4, as the
                driver), then `runc start` outside it, as the driver does (no network attach);
  run_d:        `runc run -d` under the same slots;
  alone:        the same starts one at a time (create + start): what one costs with nothing beside it.
Each start's time is from t0 to its `runc start` (or `run -d`) returning; p50/p99 over the count;
and the CPU one start cost (the runc processes, and runc init's time in the container's cgroup).
Every container, mount, cgroup and bundle is removed after each round.

    sudo .venv/bin/python bench/runc_floor.py [--count 20] [--rounds 3] [--parallel N]
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from agent.drivers.base import InstanceSpec
from agent.drivers.container import ContainerDriver
from agent.drivers.container import cgroups as cg
from agent.drivers.container import rootfs as rootfs_mod

NODE = "pfl"


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[max(0, min(len(xs) - 1, round(p / 100 * (len(xs) - 1))))]


def lowerdir(rootfs: Path) -> str:
    """The overlay's lower directory under the template container's rootfs (from mountinfo)."""
    target = os.path.realpath(rootfs)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == target:
                opts = fields[fields.index("-") + 3]
                return next(o.split("=", 1)[1] for o in opts.split(",") if o.startswith("lowerdir="))
    raise SystemExit(f"no overlay at {target}")


class Floor:
    def __init__(self, work: Path, template: dict, lower: str, owner: tuple[int, int], count: int):
        self.work, self.template, self.lower, self.owner, self.count = work, template, lower, owner, count
        self.cgroups = cg.detect()
        self.root = work / "runc"
        self.made: list[str] = []

    def prepare(self, tag: str) -> list[tuple[str, Path]]:
        out = []
        for i in range(self.count):
            cid = f"floor-{tag}-{i}"
            bundle = self.work / cid
            self.made.append(cid)        # cleaned up even if this round fails half way
            rootfs = rootfs_mod.mount_overlay([Path(p) for p in self.lower.split(":")], bundle,
                                              owner=self.owner)
            rel = cg.instance_path(NODE, cid)
            self.cgroups.create(rel, cg.Limits(100, 32 << 20, 4096))
            cfg = json.loads(json.dumps(self.template))
            cfg["root"]["path"] = str(rootfs)
            cfg["linux"]["cgroupsPath"] = "/" + rel.strip("/")
            cfg["hostname"] = cid
            (bundle / "config.json").write_text(json.dumps(cfg))
            out.append((cid, bundle))
        return out

    async def runc(self, *args: str) -> None:
        # stdio to /dev/null: the container inherits it, so a pipe would never see its EOF;
        # runc's own errors go to its log
        log = self.work / f"runc-{args[-1]}.log"
        proc = await asyncio.create_subprocess_exec(
            "runc", "--root", str(self.root), "--log", str(log), *args, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        if await proc.wait() != 0:
            raise RuntimeError(f"runc {' '.join(args)}: {log.read_text(errors='replace').strip()[-500:]}")

    async def burst(self, mode: str, parallel: int) -> list[float]:
        bundles = self.prepare(mode)
        slots = asyncio.Semaphore(parallel)
        t0 = time.perf_counter()

        async def one(cid: str, bundle: Path) -> float:
            if mode == "run_d":
                async with slots:
                    await self.runc("run", "-d", "--bundle", str(bundle), cid)
            else:
                async with slots:
                    await self.runc("create", "--bundle", str(bundle), cid)
                await self.runc("start", cid)
            return (time.perf_counter() - t0) * 1000

        if mode == "alone":     # one at a time: each start's own duration
            xs = []
            for cid, bundle in bundles:
                t = time.perf_counter()
                await self.runc("create", "--bundle", str(bundle), cid)
                await self.runc("start", cid)
                xs.append((time.perf_counter() - t) * 1000)
            return xs
        return list(await asyncio.gather(*(one(c, b) for c, b in bundles)))

    def cpu_ms(self, before: float) -> float:
        """CPU per start of the round just made: the runc processes (this process's reaped
        children, since `before`) plus what each container's cgroup used (runc init, which
        compiles the seccomp filter, then exec's a sleep)."""
        runc = resource.getrusage(resource.RUSAGE_CHILDREN)
        runc_s = runc.ru_utime + runc.ru_stime - before
        inits = sum(self.cgroups.usage(cg.instance_path(NODE, cid)).cpu_seconds for cid in self.made)
        return (runc_s + inits) * 1000 / len(self.made)

    async def clean(self) -> None:
        for cid in self.made:
            proc = await asyncio.create_subprocess_exec("runc", "--root", str(self.root), "delete", "-f", cid,
                                                        stderr=asyncio.subprocess.DEVNULL)
            await proc.wait()
            bundle = self.work / cid
            rootfs_mod.unmount(bundle / "rootfs")
            with contextlib.suppress(cg.CgroupError):     # not made if its round failed before it
                self.cgroups.remove(cg.instance_path(NODE, cid))
            shutil.rmtree(bundle, ignore_errors=True)
        self.made = []


def summary(xs: list[float]) -> dict:
    return {"p50_ms": round(statistics.median(xs), 1), "p99_ms": round(pct(xs, 99), 1),
            "first_ms": round(min(xs), 1)}


async def main_async(args) -> None:
    with tempfile.TemporaryDirectory(prefix="packyard-floor-") as d:
        work = Path(d)
        work.chmod(0o711)        # the user namespace's root must reach the rootfs below it
        driver = ContainerDriver(NODE, work / "agent", "10.213.67.0/24")
        spec = InstanceSpec(id="floor.c.t", job="floor", group="c", kind="container", cpu_milli=100,
                            memory_bytes=32 << 20, config={"command": ["/bin/sleep", "3600"]})
        handle = await driver.start(spec)
        floor = None
        try:
            bundle = Path(handle.data["bundle"])
            template = json.loads((bundle / "config.json").read_text())
            if not template["linux"].get("seccomp") or not template["linux"].get("uidMappings"):
                raise SystemExit("the driver's bundle is not confined (no seccomp or no user namespace)")
            st = os.stat(bundle / "upper")
            floor = Floor(work / "floor", template, lowerdir(bundle / "rootfs"), (st.st_uid, st.st_gid),
                          args.count)
            floor.root.mkdir(parents=True)
            for r in range(args.rounds):
                for mode in ("create_start", "run_d", "alone"):
                    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
                    try:
                        xs = await floor.burst(mode, args.parallel)
                        cpu = floor.cpu_ms(ru.ru_utime + ru.ru_stime)
                    finally:
                        await floor.clean()
                    print(json.dumps({"round": r + 1, "mode": mode, "parallel": args.parallel,
                                      "load": os.getloadavg()[0], **summary(xs),
                                      "cpu_ms_per_start": round(cpu, 1)}), flush=True)
        finally:
            if floor is not None:
                await floor.clean()
            await driver.destroy(handle)
            await driver.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--parallel", type=int, default=max(4, 2 * (os.cpu_count() or 2)))
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
