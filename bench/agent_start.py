"""The simulated agent's Start path (issue 12), in process: no etcd, no scheduler, no gRPC wire.

    python bench/agent_start.py [--hosts 1000] [--instances 20000] [--per-call 20]
    python bench/agent_start.py --trees main=/path/to/main branch=. 1cab3bd=/path/to/1cab3bd [--rounds 3]

`packyard-agent --simulate` as bench/scale.py runs it (agent/simulate.py's Fleet: the real
AgentService and InstanceManager per node over the fake driver, instant starts), its etcd writes
dropped: the instances of one job, spread over the hosts, are handed to FleetService.Start
`--per-call` at a time per node, as the scheduler's StartRequests carry them (the specs made as
scheduler/dispatch.py makes them: one group's spec with its own id each). Prints, CPU:
- `start`: the whole Start path, seconds for all instances (and µs per instance);
- `to_spec`: agent/boundary.py's check and conversion of each spec alone, µs per instance, and
  the bytes each spec made holds (tracemalloc, its id string and config included).
With `--trees`, each checkout's own venv runs this file against its code (bench/sidebyside.py).
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import tempfile
import time
import tracemalloc
from pathlib import Path

import sidebyside

JOB = "big"


class DroppedWrites:
    """Stands in for etcd under the fleet's writer: every write succeeds at once."""

    async def put_many(self, items) -> None:
        return None

    async def get_prefix(self, prefix: str):
        return 0, []


class Context:
    async def abort(self, code, details):
        raise RuntimeError(f"{code}: {details}")


def specs(instances: int) -> list:
    """The specs of one group's instances, as the scheduler sends them (fields this tree has)."""
    from packyard.v1 import agent_pb2, common_pb2
    fields = agent_pb2.InstanceSpec.DESCRIPTOR.fields_by_name
    shared = agent_pb2.InstanceSpec(
        job=JOB, group="g", kind="container",
        request=common_pb2.Resources(cpu_milli=250, memory_bytes=64 << 20),
        limit=common_pb2.Resources(cpu_milli=260, memory_bytes=80 << 20),
        driver_json=json.dumps({"command": ["/bin/sleep", "3600"]}))
    if "job_type" in fields:
        shared.job_type = "service"
    if "restart" in fields:           # lifecycle.restart_policy's default for a service
        shared.restart.CopyFrom(agent_pb2.RestartPolicy(attempts=2, interval_seconds=1800.0,
                                                        delay_seconds=15.0, mode="fail"))
    out = []
    for i in range(instances):
        p = agent_pb2.InstanceSpec()
        p.CopyFrom(shared)
        p.id = f"{JOB}.g.{i}-1"
        out.append(p)
    return out


async def start_all(hosts: int, instances: int, per_call: int) -> dict:
    from agent import simulate
    from packyard.v1 import agent_pb2
    all_specs = specs(instances)
    names = simulate.node_names("sim", hosts)
    fleet = simulate.Fleet(DroppedWrites(), names, Path(tempfile.mkdtemp(prefix="packyard-bench-")))
    fleet.writer.start()
    by_node: dict[str, list] = {n: [] for n in names}
    for i, p in enumerate(all_specs):
        by_node[names[i % hosts]].append(p)
    requests = [agent_pb2.StartRequest(node=n, instances=ps[k:k + per_call])
                for n, ps in by_node.items() for k in range(0, len(ps), per_call)]
    gc.collect()
    t = time.process_time()
    for req in requests:               # each returns once its states are written (dropped here)
        await fleet.service.Start(req, Context())
    cpu = time.process_time() - t
    running = fleet.running()
    assert running == instances, (running, instances)
    return {"cpu_s": cpu, "us_per_instance": cpu / instances * 1e6}


def to_spec_alone(instances: int) -> dict:
    from agent import boundary
    all_specs = specs(instances)
    gc.collect()
    t = time.process_time()
    for i, p in enumerate(all_specs):
        boundary.to_spec(p, f"instances[{i % 20}]")
    cpu = time.process_time() - t
    # what the specs kept hold (the agent keeps one per instance), measured apart from the timing
    tracemalloc.start()
    kept = [boundary.to_spec(p, "instances[0]") for p in all_specs]
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(kept) == instances
    return {"cpu_s": cpu, "us_per_instance": cpu / instances * 1e6, "bytes_per_spec": held / instances}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=1_000)
    ap.add_argument("--instances", type=int, default=20_000)
    ap.add_argument("--per-call", type=int, default=20)
    sidebyside.add_arguments(ap)
    args = ap.parse_args()
    if args.trees:
        sidebyside.compare(__file__, args, ["hosts", "instances", "per_call"],
                           f"{args.instances:,} instances on {args.hosts:,} simulated hosts, {args.per_call} a "
                           "Start call; CPU µs per instance", "us_per_instance")
        return
    sidebyside.import_from(args)
    out = {"start": asyncio.run(start_all(args.hosts, args.instances, args.per_call)),
           "to_spec": to_spec_alone(args.instances)}
    if args.json:
        print(json.dumps(out))
        return
    for case, v in out.items():
        held = f", {v['bytes_per_spec']:.0f} bytes a spec" if "bytes_per_spec" in v else ""
        print(f"  {case:8s} {v['cpu_s']:.3f} s CPU, {v['us_per_instance']:.1f} µs an instance{held}")


if __name__ == "__main__":
    main()
