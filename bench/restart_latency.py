"""Exit → running again, restarted in place by the agent (issue 13's benchmark).

On the local 3-host cluster with real runc containers: a service whose container exits 0.3 s
after it starts, with `restart: {attempts: N, interval: 1h, delay: D}`. For each restart, the
time from the exit (the agent's event, which it writes before it waits) to the `running` report
that follows it in etcd (seen through a watch from this process), next to the delay configured for
that attempt (D, 2D, 4D... capped by the interval). Target (issue 13): delay + 150 ms at the median.

    sudo .venv/bin/python bench/restart_latency.py [--restarts 10] [--delay 200ms]
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
from packyard.durations import format_duration, parse_duration
from packyard.etcd import Etcd
from packyard.records import StateRecord
from packyard.spec import validate
from packyard.v1 import scheduler_pb2, scheduler_pb2_grpc


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[max(0, min(len(values) - 1, round(p / 100 * (len(values) - 1))))]


async def measure(cluster: LocalCluster, restarts: int, delay: float) -> dict:
    spec = validate({"name": "crashy", "groups": [{
        "name": "c", "resources": {"cpu": "100m", "memory": "32Mi"},
        "container": {"command": ["/bin/sh", "-c", "sleep 0.3; exit 1"]},
        "restart": {"attempts": restarts, "interval": "1h", "delay": format_duration(delay)}}]})
    etcd = Etcd(cluster.etcd_endpoint)
    await etcd.connect()
    overheads: list[float] = []          # ms beyond the configured delay, per restart
    waits: dict[int, float] = {}         # restart number -> configured delay (s)
    exited_at: dict[int, float] = {}
    done = asyncio.Event()

    async def on_state(batch):
        for ev in batch:
            if ev.kind != "put":
                continue
            s = records.loads(StateRecord, ev.value)
            if s.state == "starting" and s.events:
                n = s.restarts + 1                       # the restart this wait leads to
                exited_at.setdefault(n, s.events[-1]["at"])
                waits.setdefault(n, min(delay * 2 ** (n - 1), 3600.0))
            elif s.state == "running" and s.restarts in exited_at and len(overheads) < s.restarts:
                seen = time.time()
                overheads.append((seen - exited_at[s.restarts] - waits[s.restarts]) * 1000)
                if len(overheads) >= restarts:
                    done.set()

    rev, _ = await etcd.get_prefix(keys.STATE)
    watch = await etcd.watch_prefix(keys.STATE, rev + 1, on_state)
    channel = grpc.aio.insecure_channel(cluster.scheduler_address)
    stub = scheduler_pb2_grpc.SchedulerStub(channel)
    await stub.Submit(scheduler_pb2.SubmitRequest(spec_json=spec.to_json()))
    total = sum(min(delay * 2 ** i, 3600.0) + 0.5 for i in range(restarts))
    await asyncio.wait_for(done.wait(), total + 60)
    await stub.Stop(scheduler_pb2.StopRequest(name="crashy"))
    watch.cancel()
    await channel.close()
    await etcd.close()
    return {"restarts": len(overheads), "delays_s": [waits[n] for n in sorted(waits)][:restarts],
            "beyond_delay_p50_ms": round(statistics.median(overheads), 1),
            "beyond_delay_p99_ms": round(pct(overheads, 99), 1),
            "beyond_delay_max_ms": round(max(overheads), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--restarts", type=int, default=8)
    ap.add_argument("--delay", default="100ms", help="the first restart's delay (doubles each time)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="packyard-bench-") as d:
        cluster = LocalCluster(Path(d), hosts=3, prefix="pr", net="10.213.66.0/24", etcd_port=23780,
                               scheduler_port=17780, capacity="cpu=2,memory=2Gi", log_level="warning")
        cluster.up()
        try:
            result = asyncio.run(measure(cluster, args.restarts, parse_duration(args.delay)))
        finally:
            cluster.down()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
