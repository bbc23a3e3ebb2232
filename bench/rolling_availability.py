"""Availability during a rolling update (issue 14's benchmark).

On the local 3-host cluster with real runc containers: a 10-instance service (`update:
{max_parallel: P, min_healthy_time: 1s}`) is deployed, then changed (a new command); the job's
status is sampled every 100 ms until the deployment ends, counting instances meant to run that are
running. Then the same with a version whose command exits at once and `auto_revert: true`, sampled
until it is rolled back. Target (issue 14): never below count - max_parallel.

    sudo .venv/bin/python bench/rolling_availability.py [--count 10] [--max-parallel 2]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import grpc

from ctl.local import LocalCluster
from packyard.spec import validate
from packyard.v1 import scheduler_pb2, scheduler_pb2_grpc

SAMPLE_EVERY = 0.1


def spec(count: int, max_parallel: int, command: list[str], auto_revert: bool = False):
    return validate({"name": "avail", "groups": [{
        "name": "web", "count": count, "resources": {"cpu": "50m", "memory": "16Mi"},
        "container": {"command": command}, "restart": {"attempts": 1, "delay": "100ms"},
        "update": {"max_parallel": max_parallel, "min_healthy_time": "1s", "healthy_deadline": "30s",
                   "progress_deadline": "2m", "auto_revert": auto_revert}}]})


async def sample_until(stub, done, timeout: float = 300.0) -> dict:
    """Sample every 100 ms until done(status); the running counts seen."""
    counts, started = [], time.monotonic()
    while time.monotonic() - started < timeout:
        s = await stub.Status(scheduler_pb2.StatusRequest(name="avail"))
        counts.append(sum(1 for i in s.instances if i.desired == "run" and i.state == "running"))
        if done(s):
            return {"samples": len(counts), "min_running": min(counts), "seconds": round(time.monotonic() - started, 1),
                    "deployment": s.deployment.state, "description": s.deployment.description}
        await asyncio.sleep(SAMPLE_EVERY)
    raise TimeoutError("the deployment did not end")


def serving(version: int) -> list[str]:
    # ends on SIGTERM, as a service should (a bare `sleep` as PID 1 ignores it: 10 s per stop)
    return ["/bin/sh", "-c", f"trap 'exit 0' TERM; sleep {3600 + version} & wait"]


def deployed(version: int, *states: str):
    return lambda s: s.HasField("deployment") and s.deployment.version == version and s.deployment.state in states


async def measure(cluster: LocalCluster, count: int, max_parallel: int) -> dict:
    channel = grpc.aio.insecure_channel(cluster.scheduler_address)
    stub = scheduler_pb2_grpc.SchedulerStub(channel)

    async def submit(s) -> None:
        await stub.Submit(scheduler_pb2.SubmitRequest(spec_json=s.to_json()))
    await submit(spec(count, max_parallel, serving(1)))
    await sample_until(stub, deployed(1, "successful"))
    await submit(spec(count, max_parallel, serving(2)))
    good = await sample_until(stub, deployed(2, "successful", "failed"))
    await submit(spec(count, max_parallel, ["/bin/sh", "-c", "exit 3"], auto_revert=True))
    bad = await sample_until(stub, lambda s: deployed(3, "reverted", "failed")(s)
                             and "rolled back" in s.deployment.description or deployed(3, "failed")(s))
    await stub.Stop(scheduler_pb2.StopRequest(name="avail"))
    await channel.close()
    return {"count": count, "max_parallel": max_parallel, "target_min_running": count - max_parallel,
            "good_update": good, "bad_update_auto_reverted": bad}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--max-parallel", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="packyard-bench-") as d:
        cluster = LocalCluster(Path(d), hosts=3, prefix="pa", net="10.213.67.0/24", etcd_port=23781,
                               scheduler_port=17781, capacity="cpu=2,memory=2Gi", log_level="warning")
        cluster.up()
        try:
            result = asyncio.run(measure(cluster, args.count, args.max_parallel))
        finally:
            cluster.down()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
