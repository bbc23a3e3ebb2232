"""Registry images: cold pull + start vs warm start (issue 16's benchmark), next to `skopeo copy` alone.

A real docker-registry on 127.0.0.1 holding a ~50 MiB image (busybox + 50 MiB of random bytes,
which gzip cannot shrink); the real container driver (runc, user namespace, overlay of the layers).
Each round: `skopeo copy` of the image into a fresh OCI directory (the client alone); a start with
an empty image store (resolve, copy, verify, unpack, mount, runc: ready to run); a second start of
the same image on the same host (nothing pulled nor unpacked). Medians over the rounds.

    sudo .venv/bin/python bench/image_pull.py [--rounds 5] [--mib 50]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # the tests' registry helpers

from agent.drivers.base import InstanceSpec  # noqa: E402
from agent.drivers.container import ContainerDriver  # noqa: E402
from agent.images.store import ImageStore  # noqa: E402
from tests.agent.conftest import RUNC  # noqa: E402
from tests.agent.images.registry import Registry, busybox_layer, write_layout  # noqa: E402


def spec(i: str, image: str) -> InstanceSpec:
    return InstanceSpec(id=i, job="bench", group="g", kind="container", cpu_milli=500, memory_bytes=64 << 20,
                        config={"image": image, "command": ["/bin/sleep", "30"], "env": {}})


async def main(rounds: int, mib: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="packyard-bench-images-", dir="/var/tmp"))
    work.chmod(0o711)
    registry = Registry(work / "registry").start()
    driver = None
    try:
        layout = write_layout(work / "layout", "1", [busybox_layer(), busybox_layer(
            [("data", "dir", None), ("data/blob", "file", os.urandom(mib << 20))])],
            {"Cmd": ["/bin/sleep", "30"]})
        registry.push(layout, "bench/big", "1")
        ref = f"{registry.address}/bench/big:1"
        state = work / "state"
        state.mkdir()
        driver = ContainerDriver(f"b-{uuid.uuid4().hex[:8]}", state, f"10.213.{random.randint(100, 250)}.0/24", runc=RUNC)
        copy, cold, warm = [], [], []
        for r in range(rounds):
            dest = work / f"copy-{r}"
            t = time.perf_counter()
            subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}",
                            f"oci:{dest}:x"], check=True)
            copy.append(time.perf_counter() - t)
            shutil.rmtree(dest)
            driver.images = ImageStore(work / f"store-{r}")          # empty: a cold host
            handles = []
            for kind, out in (("cold", cold), ("warm", warm)):
                t = time.perf_counter()
                handles.append(await driver.start(spec(f"{kind}-{r}", ref)))
                out.append(time.perf_counter() - t)
            for h in handles:
                await driver.stop(h, 1)
                await driver.destroy(h)
            print(f"round {r + 1}: skopeo copy {copy[-1]:.2f}s  cold {cold[-1]:.2f}s  warm {warm[-1] * 1000:.0f}ms")
        print(f"\n{mib} MiB image, {rounds} rounds, medians:")
        print(f"  skopeo copy alone          {statistics.median(copy):6.2f} s")
        print(f"  cold: pull + start         {statistics.median(cold):6.2f} s")
        print(f"  warm: start (cached)       {statistics.median(warm) * 1000:6.0f} ms")
    finally:
        if driver is not None:
            await driver.shutdown()
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--mib", type=int, default=50)
    args = ap.parse_args()
    asyncio.run(main(args.rounds, args.mib))
