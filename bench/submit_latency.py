"""Submit → running latency of containers on the local 3-host cluster (issue 2's benchmark).

Two patterns, measured in one run on real agents (runc, cgroups, network namespaces):
  sequential: 20 one-instance jobs, each submitted after the previous one runs
  burst:      one job of 20 instances
Latency per instance = from just before the Submit call to the moment the agent's `running` report
reaches etcd (seen through a watch from this process); `accepted_p50_ms`: to its `starting` report,
which the agent writes once it has the Start and before the driver starts anything.
Target (issue 2): p50 ≤ 150 ms, p99 ≤ 500 ms.
With the container driver, a third pattern gives the floor under the burst on this machine:
  burst_driver_only: the same 20 starts made straight through a ContainerDriver in this process
                     (no etcd, scheduler, gRPC or reports): what the host's start path costs

    sudo .venv/bin/python bench/submit_latency.py [--count 20] [--driver container]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import grpc

from ctl.local import LocalCluster
from packyard import keys, records
from packyard.etcd import Etcd
from packyard.records import StateRecord
from packyard.spec import validate
from packyard.v1 import scheduler_pb2, scheduler_pb2_grpc


def job(name: str, count: int):
    return validate({"name": name, "groups": [{
        "name": "c", "count": count, "resources": {"cpu": "100m", "memory": "32Mi"},
        "container": {"command": ["/bin/sleep", "3600"]}}]})


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    k = max(0, min(len(values) - 1, round(p / 100 * (len(values) - 1))))
    return values[k]


async def measure(cluster: LocalCluster, count: int) -> dict:
    etcd = Etcd(cluster.etcd_endpoint)
    await etcd.connect()
    running: dict[str, float] = {}
    starting: dict[str, float] = {}     # the agent has the Start: `starting` in etcd, before any create
    seen = asyncio.Event()

    async def on_state(batch):
        for ev in batch:
            if ev.kind == "put":
                state = records.loads(StateRecord, ev.value).state
                if state in ("running", "starting"):
                    (running if state == "running" else starting).setdefault(keys.last(ev.key), time.perf_counter())
        seen.set()

    rev, _ = await etcd.get_prefix(keys.STATE)
    watch = await etcd.watch_prefix(keys.STATE, rev + 1, on_state)
    channel = grpc.aio.insecure_channel(cluster.scheduler_address)
    stub = scheduler_pb2_grpc.SchedulerStub(channel)

    async def submit_and_wait(spec) -> tuple[list[float], list[float]]:
        t0 = time.perf_counter()
        reply = await stub.Submit(scheduler_pb2.SubmitRequest(spec_json=spec.to_json()))
        ids = list(reply.instance_ids)
        while not all(i in running for i in ids):
            seen.clear()
            await asyncio.wait_for(seen.wait(), 30)
        return ([(running[i] - t0) * 1000 for i in ids],
                [(starting[i] - t0) * 1000 for i in ids if i in starting])

    sequential, sequential_accepted = [], []
    for n in range(count):
        run, accepted = await submit_and_wait(job(f"seq{n}", 1))
        sequential += run
        sequential_accepted += accepted
    burst, burst_accepted = await submit_and_wait(job("burst", count))
    for n in range(count):
        await stub.Stop(scheduler_pb2.StopRequest(name=f"seq{n}"))
    await stub.Stop(scheduler_pb2.StopRequest(name="burst"))
    watch.cancel()
    await channel.close()
    await etcd.close()
    return {"sequential": summary(sequential) | accepted_summary(sequential_accepted),
            "burst": summary(burst) | accepted_summary(burst_accepted)}


def accepted_summary(xs: list[float]) -> dict:
    """Submit → the agent's `starting` in etcd (the control plane's share: placed, committed, told,
    accepted), p50 over the instances whose `starting` was seen (a fast start may overwrite it)."""
    return {"accepted_p50_ms": round(statistics.median(xs), 1)} if xs else {}


async def driver_only(state_dir: Path, count: int) -> dict:
    """`count` starts at once through a ContainerDriver: each one's time from the call to its end."""
    from agent.drivers.base import InstanceSpec
    from agent.drivers.container import ContainerDriver
    driver = ContainerDriver("pbd", state_dir, "10.213.65.0/24")
    specs = [InstanceSpec(id=f"floor.c.{i}", job="floor", group="c", kind="container", cpu_milli=100,
                          memory_bytes=32 << 20, config={"command": ["/bin/sleep", "3600"]})
             for i in range(count + 1)]
    handles = [await driver.start(specs[-1])]        # the bridge and the built-in image made first
    t0 = time.perf_counter()

    async def one(spec) -> float:
        handles.append(await driver.start(spec))
        return (time.perf_counter() - t0) * 1000

    try:
        xs = await asyncio.gather(*(one(s) for s in specs[:-1]))
    finally:
        for h in handles:
            await driver.destroy(h)
        await driver.shutdown()
    return summary(xs)


def summary(xs: list[float]) -> dict:
    return {"instances": len(xs), "p50_ms": round(statistics.median(xs), 1),
            "p99_ms": round(pct(xs, 99), 1), "max_ms": round(max(xs), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--driver", default="container", help="container (real) or fake (control plane only)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="packyard-bench-") as d:
        cluster = LocalCluster(Path(d), hosts=3, prefix="pb", net="10.213.64.0/24", drivers=args.driver,
                               etcd_port=23760, scheduler_port=17760, capacity="cpu=2,memory=2Gi",
                               log_level="warning")
        cluster.up()
        try:
            result = asyncio.run(measure(cluster, args.count))
        finally:
            cluster.down()
        if args.driver == "container":
            result["burst_driver_only"] = asyncio.run(driver_only(Path(d) / "floor", args.count))
    print(json.dumps({"driver": args.driver, **result}, indent=2))


if __name__ == "__main__":
    main()
