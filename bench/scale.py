"""Scale benchmark (issue 7): one job of N instances on H simulated hosts, end to end.

    python bench/scale.py --hosts 1000 --instances 20000 [--profile-scheduler DIR] [--profile-agent DIR]
    python bench/scale.py --table          # 1k/2k/5k hosts x 20k/50k/100k instances

Starts its own etcd (client port 23840), a `packyard-agent --simulate H` process and a scheduler
process, then measures, each as read from etcd (persisted, not what a process believes):
- submit → Submit returned (job and instances written), → every instance placed (node committed),
  → every instance `running` (reported by its agent): instances/s end to end;
- the raw etcd write rate in the same run (128-op transactions of small keys), so the end-to-end
  rate reads as a fraction of what etcd itself allows here;
- peak RSS (VmHWM) and CPU seconds of the scheduler, the simulated agent and etcd over the run: on a
  2-core machine the process that used the CPU is where the time went;
- then the latency of one small job (count 1) submitted while the cluster holds the N instances:
  submit → placed in etcd (the placement latency) and submit → reported running, p50 / p99 over
  --probes submissions.
- what etcd wrote: its WAL's bytes (etcd's own metric), and the job's deployment record, how often
  and how many bytes (a first deployment's progress: issue 12), over the run.
`--tree DIR` runs another checkout's scheduler and agent (its own .venv's python) under this
harness, for side-by-side figures measured the same way.
`--py-spy DIR` samples the scheduler and the simulated agent (py-spy on PATH) and prints where
their time went. `--gc-log` logs their garbage collections (bench/gclog/) and prints the full
(generation 2) ones from the submit to the last probe, and the one at their exit.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import os
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aetcd
import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from packyard import keys, records  # noqa: E402
from packyard.etcd import Etcd, parse_endpoint  # noqa: E402
from packyard.records import InstanceRecord, StateRecord  # noqa: E402
from packyard.spec import load_yaml  # noqa: E402
from packyard.v1 import scheduler_pb2, scheduler_pb2_grpc  # noqa: E402
from scheduler.embedded_etcd import EtcdServer  # noqa: E402

CPU_PER_INSTANCE = 0.25
TICKS = os.sysconf("SC_CLK_TCK")


def job_yaml(name: str, count: int) -> str:
    return (f"name: {name}\ngroups:\n  - name: g\n    count: {count}\n    kind: container\n"
            f"    resources: {{cpu: {CPU_PER_INSTANCE}, memory: 64Mi}}\n")


def host_capacity(hosts: int, instances: int) -> str:
    """Room for 1.25x the instances plus the probes, so placement must spread and search, not
    drop everything on the first host."""
    slots = math.ceil(1.25 * instances / hosts) + 2
    return f"cpu={slots * CPU_PER_INSTANCE:g},memory={slots * 128}Mi"


def proc_status(pid: int) -> dict[str, float]:
    """Peak RSS (MiB) and CPU seconds (user + system) of a live process."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                out["peak_rss_mib"] = int(line.split()[1]) / 1024
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    out["cpu_s"] = (int(fields[11]) + int(fields[12])) / TICKS
    return out


class Progress:
    """Follows instance records and states in etcd: when each instance was placed and running."""

    def __init__(self):
        self.placed: dict[str, float] = {}
        self.running: dict[str, float] = {}

    # The values are looked at as bytes, not parsed: this process shares the machine's two cores
    # with what it measures. records.dumps leaves out empty fields, so a placed record is one
    # with a node (extra_running parses every record at the end).
    async def on_instances(self, events) -> None:
        now = time.monotonic()
        for ev in events:
            if ev.kind == "put" and b'"node":' in ev.value:
                iid = keys.last(ev.key)
                if iid not in self.placed:
                    self.placed[iid] = now

    async def on_states(self, events) -> None:
        now = time.monotonic()
        for ev in events:
            if ev.kind == "put" and b'"state":"running"' in ev.value:
                iid = keys.last(ev.key)
                if iid not in self.running:
                    self.running[iid] = now

    async def wait_running(self, ids: list[str], timeout: float, stall: float = 120.0) -> None:
        """Until every id runs; fails after timeout, or sooner when nothing was placed nor started
        for `stall` seconds (a scheduler that livelocks must not hold the run for half an hour)."""
        deadline = time.monotonic() + timeout
        missing = set(ids)
        seen, moved = (-1, -1), time.monotonic()
        while missing:
            await asyncio.sleep(0.05 if len(ids) < 100 else 0.5)
            missing = {i for i in missing if i not in self.running}
            now = time.monotonic()
            if (len(self.placed), len(self.running)) != seen:
                seen, moved = (len(self.placed), len(self.running)), now
            if now > deadline or now - moved > stall:
                raise TimeoutError(f"{len(missing)} of {len(ids)} instances not running after "
                                   f"{now - deadline + timeout:.0f}s ({len(self.placed)} placed, "
                                   f"{len(self.running)} running so far, no change for {now - moved:.0f}s)")


async def etcd_write_rate(etcd: Etcd, n: int) -> float:
    """Keys/s of put_many (128 per transaction) of n state-sized values: the ceiling for a run
    that must persist every instance at least twice (placement, state)."""
    value = b"x" * 150
    items = [(f"/bench/{i:07d}", value) for i in range(n)]
    t0 = time.monotonic()
    await etcd.put_many(items)
    rate = n / (time.monotonic() - t0)
    await etcd.delete_prefix("/bench/")
    return rate


class Written:
    """The deployment records etcd was given (watched): how many puts, how many bytes."""

    def __init__(self):
        self.puts = 0
        self.bytes = 0

    async def on_events(self, events) -> None:
        for ev in events:
            if ev.kind == "put":
                self.puts += 1
                self.bytes += len(ev.value)


ETCD_METRICS = {"etcd_disk_wal_write_bytes_total": "etcd_wal_bytes", "etcd_mvcc_put_total": "etcd_puts",
                "etcd_mvcc_txn_total": "etcd_txns"}


def etcd_metrics(endpoint: str) -> dict[str, float]:
    """etcd's own counters (its /metrics), from its start: the WAL's bytes, puts, transactions."""
    out = {}
    with urllib.request.urlopen(f"{endpoint}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            name, _, value = line.partition(" ")
            if name in ETCD_METRICS:
                out[ETCD_METRICS[name]] = float(value)
    return out


def spawn(args: list[str], log: Path, gc_log: Path | None = None, tree: Path = ROOT) -> subprocess.Popen:
    python = sys.executable if tree == ROOT else str(tree / ".venv" / "bin" / "python")
    env = None
    if gc_log:      # bench/gclog/sitecustomize.py logs the process's collections to gc_log
        env = {**os.environ, "PACKYARD_GC_LOG": str(gc_log),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "bench" / "gclog"),
                                                           os.environ.get("PYTHONPATH")]))}
    with log.open("w") as out:
        return subprocess.Popen([python, *args], cwd=tree, stdout=out, stderr=subprocess.STDOUT,
                                env=env)


def gc_figures(log: list, start: float, probes_start: float, end: float) -> dict[str, float]:
    """A process's full (generation 2) collections from `start` (the submit) to `end` (the last
    probe placed): how many, the longest, all their time, the longest while the probes ran, and
    the objects all collections found unreachable meanwhile (cyclic garbage); then the full
    collection after HeapKeeper unfroze the heap at its exit, and what that one found."""
    unfreeze = next((i for i, c in enumerate(log) if c[1] == "unfreeze"), len(log))
    run = [c for c in log[:unfreeze] if start <= c[0] <= end]
    full = [c for c in run if c[1] == 2]
    at_exit = [c for c in log[unfreeze:] if c[1] == 2]
    return {"gc2_n": len(full), "gc2_max_ms": max((c[2] for c in full), default=0.0),
            "gc2_ms": sum(c[2] for c in full),
            "gc2_probes_max_ms": max((c[2] for c in full if c[0] >= probes_start), default=0.0),
            "gc_collected": sum(c[3] for c in run),
            "gc_exit_ms": max((c[2] for c in at_exit), default=0.0),
            "gc_exit_collected": sum(c[3] for c in at_exit)}


def end(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def wait_file(path: Path, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start (see its log in {path.parent})")
        await asyncio.sleep(0.05)


async def wait_nodes(stub, hosts: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        reply = await stub.Nodes(scheduler_pb2.NodesRequest(), timeout=30)
        if sum(n.state == "ready" for n in reply.nodes) >= hosts:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the scheduler sees {len(reply.nodes)} of {hosts} nodes")
        await asyncio.sleep(0.2)


async def big_job(stub, progress: Progress, n: int, timeout: float) -> dict[str, float]:
    spec = load_yaml(job_yaml("big", n)).to_json()
    t0 = time.monotonic()
    reply = await stub.Submit(scheduler_pb2.SubmitRequest(spec_json=spec), timeout=timeout)
    submitted = time.monotonic() - t0
    ids = list(reply.instance_ids)
    await progress.wait_running(ids, timeout)
    placed = sorted(progress.placed[i] - t0 for i in ids)
    running = sorted(progress.running[i] - t0 for i in ids)
    return {"submit_s": submitted, "placed_s": placed[-1], "running_s": running[-1], "per_s": n / running[-1],
            "placed_half_s": placed[n // 2], "running_half_s": running[n // 2]}


async def caught_up(stub, n: int, timeout: float) -> float:
    """Seconds until the scheduler lists the big job with all n instances running."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        jobs = (await stub.List(scheduler_pb2.ListRequest(), timeout=60)).jobs
        if any(j.instances_by_state.get("running", 0) >= n for j in jobs):
            break
        await asyncio.sleep(0.2)
    return time.monotonic() - t0


async def probes(stub, progress: Progress, count: int) -> list[tuple[float, float]]:
    """(submit → placed in etcd, submit → reported running) of a one-instance job, one at a time,
    next to the big job: the issue's placement latency, and the whole round trip through an agent."""
    out = []
    for k in range(count):
        spec = load_yaml(job_yaml(f"probe-{k:02d}", 1)).to_json()
        t0 = time.monotonic()
        reply = await stub.Submit(scheduler_pb2.SubmitRequest(spec_json=spec), timeout=60)
        ids = list(reply.instance_ids)
        await progress.wait_running(ids, 60)
        out.append((progress.placed[ids[0]] - t0, progress.running[ids[0]] - t0))
    return out


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)]


async def run_case(args, hosts: int, n: int, work: Path) -> dict:
    server = EtcdServer(work / "etcd", client_port=args.etcd_port, tie_to_parent=True).start()
    procs: dict[str, subprocess.Popen] = {}
    etcd = Etcd(server.endpoint)
    try:
        await etcd.connect()
        result = {"hosts": hosts, "instances": n,
                  "etcd_keys_per_s": await etcd_write_rate(etcd, min(n, 20000))}
        aprof = ["-m", "cProfile", "-o", str(args.profile_agent / "agent.prof")] \
            if args.profile_agent else []
        gc_log = {name: work / f"{name}.gc.json" if args.gc_log else None for name in ("agent", "scheduler")}
        procs["agent"] = spawn([*aprof, "-m", "agent.main", "--etcd", server.endpoint, "--simulate", str(hosts),
                                "--node", "sim", "--listen", args.agent_listen,
                                "--capacity", host_capacity(hosts, n + args.probes),
                                "--ready-file", str(work / "agent.ready")],
                               work / "agent.log", gc_log["agent"], args.tree)
        prof = ["-m", "cProfile", "-o", str(args.profile_scheduler / "scheduler.prof")] \
            if args.profile_scheduler else []
        procs["scheduler"] = spawn([*prof, "-m", "scheduler.main", "--etcd", server.endpoint,
                                    "--listen", args.scheduler_listen, "--ready-file",
                                    str(work / "scheduler.ready"), "--log-level", "warning"],
                                   work / "scheduler.log", gc_log["scheduler"], args.tree)
        await wait_file(work / "agent.ready", procs["agent"], "the simulated agent")
        await wait_file(work / "scheduler.ready", procs["scheduler"], "the scheduler")
        watched = {**procs, "etcd": server.proc}
        result.update(await measure(args, etcd, hosts, n, watched))
        for name, proc in watched.items():
            for k, v in proc_status(proc.pid).items():
                result[f"{name}_{k}"] = v
        result.update(etcd_metrics(server.endpoint))
    finally:
        for proc in procs.values():
            end(proc)
        agent_log = work / "agent.log"
        said = [ln for ln in agent_log.read_text().splitlines() if "stopping:" in ln] if agent_log.exists() else []
        await etcd.close()
        server.stop()
    result["agent_says"] = said[-1].split("stopping: ", 1)[1] if said else "?"
    window = result.pop("window")
    for name, path in gc_log.items():
        if path and path.exists():
            for k, v in gc_figures(json.loads(path.read_text()), *window).items():
                result[f"{name}_{k}"] = v
    return result


async def measure(args, etcd: Etcd, hosts: int, n: int, procs) -> dict:
    progress = Progress()
    revision, _ = await etcd.get_prefix(keys.JOBS)
    written = Written()
    watches = [await etcd.watch_prefix(keys.INSTANCES, revision + 1, progress.on_instances),
               await etcd.watch_prefix(keys.STATE, revision + 1, progress.on_states),
               await etcd.watch_prefix(keys.DEPLOYMENTS, revision + 1, written.on_events)]
    async with grpc.aio.insecure_channel(args.scheduler_listen, options=[
            ("grpc.max_receive_message_length", 256 << 20)]) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        await wait_nodes(stub, hosts)
        cpu0 = {name: proc_status(p.pid)["cpu_s"] for name, p in procs.items()}
        start = time.monotonic()
        sampler = Sampler(args.py_spy, procs["scheduler"].pid, f"big-{hosts}x{n}")
        agent_sampler = Sampler(args.py_spy, procs["agent"].pid, f"agent-big-{hosts}x{n}")
        out = await big_job(stub, progress, n, args.timeout)
        sampler.stop()
        agent_sampler.stop()
        for name, p in procs.items():
            out[f"{name}_cpu_big_s"] = proc_status(p.pid)["cpu_s"] - cpu0[name]
        out["deployment_puts_big"], out["deployment_bytes_big"] = written.puts, written.bytes
        # the probes measure a cluster that holds the instances, not one still digesting them:
        # wait until the scheduler's own view has every instance running (a figure too)
        out["scheduler_caught_up_s"] = out["running_s"] + await caught_up(stub, n, args.timeout)
        sampler = Sampler(args.py_spy, procs["scheduler"].pid, f"probes-{hosts}x{n}")
        probes_start = time.monotonic()
        lat = await probes(stub, progress, args.probes)
        out["window"] = (start, probes_start, time.monotonic())
        sampler.stop()
        placed, running = [p for p, _ in lat], [r for _, r in lat]
        out["placed_p50_ms"] = statistics.median(placed) * 1000
        out["placed_p99_ms"] = percentile(placed, 99) * 1000
        out["probe_p50_ms"] = statistics.median(running) * 1000
        out["probe_p99_ms"] = percentile(running, 99) * 1000
        out["probes_ms"] = [(round(p * 1000), round(r * 1000)) for p, r in lat]
        out["deployment_puts"], out["deployment_bytes"] = written.puts, written.bytes
    for w in watches:
        w.cancel()
    out.update(await extra_running(etcd.endpoints))
    return out


async def extra_running(endpoint: str) -> dict[str, int]:
    """Instances reported running on a node other than the one their record names (or with no
    record): started twice, e.g. after a confirm timeout placed them again. Should be 0.
    Its own client: 20,000 instance records are more than gRPC's default 4 MiB per reply."""
    host, port = parse_endpoint(endpoint)
    client = aetcd.Client(host=host, port=port, options={"grpc.max_receive_message_length": 1 << 30})
    try:
        inst = await client.get_prefix(keys.INSTANCES.encode())
        placed = {keys.last(kv.key): records.loads(InstanceRecord, kv.value).node for kv in inst}
        states = await client.get_prefix(keys.STATE.encode())
    finally:
        await client.close()
    extra = 0
    for kv in states:
        node, iid = kv.key.decode()[len(keys.STATE):].split("/", 1)
        if records.loads(StateRecord, kv.value).state == "running" and placed.get(iid) != node:
            extra += 1
    return {"extra_running": extra}


def report(r: dict) -> str:
    return "\n".join([
        f"{r['hosts']} hosts x {r['instances']} instances",
        f"  submit returned {r['submit_s']:.2f} s, all placed {r['placed_s']:.2f} s, "
        f"all running {r['running_s']:.2f} s: {r['per_s']:,.0f} instances/s end to end",
        f"  half placed {r['placed_half_s']:.2f} s, half running {r['running_half_s']:.2f} s",
        f"  simulated agent: {r.get('agent_says', '?')}",
        f"  running where the scheduler did not place them (started twice): {r['extra_running']}",
        f"  etcd raw put_many in this run: {r['etcd_keys_per_s']:,.0f} keys/s "
        f"(end to end writes 3 keys per instance: pending, placed, running: "
        f"{3 * r['per_s'] / r['etcd_keys_per_s']:.0%} of it)",
        f"  CPU during the big job: scheduler {r['scheduler_cpu_big_s']:.1f} s, "
        f"simulated agent {r['agent_cpu_big_s']:.1f} s, etcd {r['etcd_cpu_big_s']:.1f} s",
        f"  peak RSS: scheduler {r['scheduler_peak_rss_mib']:.0f} MiB, agent {r['agent_peak_rss_mib']:.0f} MiB, "
        f"etcd {r['etcd_peak_rss_mib']:.0f} MiB; CPU whole run: scheduler {r['scheduler_cpu_s']:.1f} s, "
        f"agent {r['agent_cpu_s']:.1f} s, etcd {r['etcd_cpu_s']:.1f} s",
        f"  etcd wrote {r['etcd_wal_bytes'] / 2**20:.1f} MiB of WAL ({r['etcd_puts']:,.0f} puts, "
        f"{r['etcd_txns']:,.0f} transactions); the deployment record {r['deployment_puts']} times, "
        f"{r['deployment_bytes'] / 1000:,.0f} kB ({r['deployment_puts_big']} times, "
        f"{r['deployment_bytes_big'] / 1000:,.0f} kB during the big job)",
        f"  scheduler's own view all running at {r['scheduler_caught_up_s']:.2f} s",
        f"  one-instance job next to them: placed p50 {r['placed_p50_ms']:.0f} ms, p99 {r['placed_p99_ms']:.0f} ms; "
        f"running p50 {r['probe_p50_ms']:.0f} ms, p99 {r['probe_p99_ms']:.0f} ms",
        f"    each, in order (placed, running ms): {r['probes_ms']}",
        *[f"  full collections ({name}), submit to last probe: {r[f'{name}_gc2_n']} (longest "
          f"{r[f'{name}_gc2_max_ms']:.0f} ms, {r[f'{name}_gc2_ms']:.0f} ms in all, longest during the probes "
          f"{r[f'{name}_gc2_probes_max_ms']:.0f} ms), {r[f'{name}_gc_collected']:,} objects collected; "
          f"at exit {r[f'{name}_gc_exit_ms']:.0f} ms, {r[f'{name}_gc_exit_collected']:,} objects"
          for name in ("scheduler", "agent") if f"{name}_gc2_n" in r]])


def table_row(r: dict) -> str:
    return (f"| {r['hosts']:,} | {r['instances']:,} | {r['submit_s']:.1f} | {r['placed_s']:.1f} | "
            f"{r['running_s']:.1f} | {r['per_s']:,.0f} | {r['etcd_keys_per_s']:,.0f} | "
            f"{r['scheduler_peak_rss_mib']:.0f} | {r['placed_p50_ms']:.0f} / {r['placed_p99_ms']:.0f} | "
            f"{r['probe_p50_ms']:.0f} / {r['probe_p99_ms']:.0f} |")


TABLE_HEAD = ("| hosts | instances | submit s | placed s | running s | inst/s | etcd keys/s | "
              "sched RSS MiB | probe placed p50/p99 ms | probe running p50/p99 ms |\n"
              "|---|---|---|---|---|---|---|---|---|---|")


class Sampler:
    """py-spy recording one phase of a process (the scheduler or the simulated agent) (collapsed stacks), if py-spy is installed."""

    def __init__(self, out_dir: Path | None, pid: int, phase: str):
        self.path = out_dir / f"{phase}.txt" if out_dir else None
        self.proc = None
        if self.path and shutil.which("py-spy"):
            self.proc = subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--rate", "200",
                                          "--format", "raw", "--nonblocking", "-o", str(self.path)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc:
            self.proc.send_signal(signal.SIGINT)   # py-spy writes its file on SIGINT
            self.proc.wait(30)


def summarise_stacks(path: Path, top: int = 25) -> str:
    """Share of samples in each function (inclusive) and at the top of the stack (self), busiest
    first; frames present in nearly every sample (the event loop, click) are left out."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = [f.split(":")[0] + ")" for f in stack.split(";")]   # drop line numbers
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    rows = [f"  {100 * c / total:5.1f}% {100 * own[f] / total:5.1f}%  {f}"
            for f, c in inclusive.most_common() if c < 0.9 * total][:top]
    return f"{path.stem}: {total} samples; inclusive, self, function\n" + "\n".join(rows)


def print_profile(path: Path, top: int = 30) -> None:
    stats = pstats.Stats(str(path))
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)


async def main_async(args) -> None:
    cases = [(h, n) for h in (1000, 2000, 5000) for n in (20000, 50000, 100000)] if args.table \
        else [(args.hosts, args.instances)]
    if args.table:
        print(TABLE_HEAD, flush=True)
    for hosts, n in cases:
        try:
            r = await one_case(args, hosts, n)
        except TimeoutError as e:   # a stalled case is a result too; the table goes on
            print(f"| {hosts:,} | {n:,} | stalled: {e} |" if args.table else f"{hosts} x {n}: stalled: {e}",
                  flush=True)
            continue
        print(table_row(r) if args.table else report(r), flush=True)
    if args.profile_scheduler:
        print_profile(args.profile_scheduler / "scheduler.prof")
    if args.profile_agent:
        print_profile(args.profile_agent / "agent.prof")
    for path in sorted(args.py_spy.glob("*.txt")) if args.py_spy else []:
        print(summarise_stacks(path))


async def one_case(args, hosts: int, n: int) -> dict:
    if args.keep:   # logs of the agent and scheduler kept for a look afterwards
        work = args.keep / f"{hosts}x{n}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        return await run_case(args, hosts, n, work)
    with tempfile.TemporaryDirectory(prefix="packyard-scale-") as tmp:
        return await run_case(args, hosts, n, Path(tmp))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hosts", type=int, default=1000)
    p.add_argument("--instances", type=int, default=20000)
    p.add_argument("--table", action="store_true", help="1k/2k/5k hosts x 20k/50k/100k instances")
    p.add_argument("--probes", type=int, default=20, help="one-instance jobs for the latency figure")
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--etcd-port", type=int, default=23840)
    p.add_argument("--scheduler-listen", default="127.0.0.1:17830")
    p.add_argument("--agent-listen", default="127.0.0.1:17831")
    p.add_argument("--profile-agent", type=Path, default=None,
                   help="DIR: run the simulated agent under cProfile, print where its time went")
    p.add_argument("--profile-scheduler", type=Path, default=None,
                   help="DIR: run the scheduler under cProfile, print where its time went")
    p.add_argument("--keep", type=Path, default=None, help="DIR: keep each run's logs under DIR/HxN")
    p.add_argument("--gc-log", action="store_true",
                   help="log the scheduler's and the simulated agent's garbage collections; print the full ones")
    p.add_argument("--tree", type=Path, default=ROOT,
                   help="DIR: run the scheduler and the agent of the checkout in DIR (with DIR/.venv/bin/python)")
    p.add_argument("--py-spy", type=Path, default=None,
                   help="DIR: sample the scheduler with py-spy during the big job and the probes")
    args = p.parse_args()
    args.tree = args.tree.resolve()
    for d in (args.profile_scheduler, args.py_spy):
        if d:
            d.mkdir(parents=True, exist_ok=True)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
