"""Chaos on the local cluster (issue 6): a stream of submissions while agents, the leading
scheduler and etcd members are killed, and a host's network is cut off, then everything restarted.

The cluster: 3 hosts (real agents, runc containers, each host its own network namespace), 2
scheduler replicas, a 3-member etcd. Faults, in rounds, one at a time:

  agent-kill   SIGKILL a host's agent and keep it down past its lease: node loss. Recovery = until
               every instance that was on it runs elsewhere. Then it restarts and must stop
               (fence) the old copies it still runs.
  net-cut      the host's link to the bridge goes down (agent alive but cut off): node loss as
               seen from outside. Recovery as above; then the link comes back, fencing again.
  leader-kill  SIGKILL the leading scheduler. Recovery = until a job submitted right after the
               kill runs (ctl fails over to the other replica, which must take over leadership).
  etcd-kill    SIGKILL one etcd member. Recovery = until a job submitted right after runs.

At the end it waits for the cluster to settle and prints: faults injected, jobs submitted,
jobs lost (accepted but not all running: must be 0), instances running twice (a job slot with
two live containers, counted from runc on every host: must be 0), worst recovery per fault.

    sudo .venv/bin/python bench/chaos.py [--rounds 2] [--hosts 3]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

from ctl.client import Client
from ctl.local import LocalCluster, LocalHost, sh
from packyard.v1 import scheduler_pb2


def job_yaml(name: str, count: int) -> str:
    return (f"name: {name}\ngroups:\n  - name: c\n    count: {count}\n"
            f"    resources: {{cpu: 50m, memory: 16Mi}}\n"
            f"    container: {{command: [/bin/sleep, '3600']}}\n")


class Chaos:
    def __init__(self, cluster: LocalCluster, workdir: Path):
        self.c = cluster
        self.workdir = workdir
        self.client = Client(cluster.scheduler_address, timeout=5)
        self.accepted: dict[str, int] = {}         # job -> count, once ctl said yes
        self.refused: Counter = Counter()
        self.recoveries: dict[str, list[float]] = {}
        self.faults: Counter = Counter()
        self._stop = threading.Event()
        self._n = 0

    # --- the stream of submissions -----------------------------------------------------------
    def submit(self, name: str, count: int, *args: str) -> bool:
        path = self.workdir / f"{name}.yaml"
        path.write_text(job_yaml(name, count))
        r = self.c.ctl("submit", str(path), *args, timeout=120)
        if r.returncode == 0:
            self.accepted[name] = count
        else:
            self.refused[r.stderr.strip().splitlines()[-1][:80] if r.stderr.strip() else f"rc {r.returncode}"] += 1
        return r.returncode == 0

    def stream(self, every: float) -> None:
        while not self._stop.wait(every):
            self._n += 1
            self.submit(f"s{self._n}", 2)

    # --- what the scheduler says -------------------------------------------------------------
    def instances(self, job: str) -> list:
        try:
            st = self.client.call("Status", scheduler_pb2.StatusRequest(name=job))
        except Exception:
            return []
        return [i for i in st.instances if i.desired == "run"]

    def all_running(self, jobs, avoid: str = "") -> bool:
        for job in jobs:
            insts = self.instances(job)
            if len(insts) != self.accepted[job] or any(i.state != "running" or i.node == avoid for i in insts):
                return False
        return True

    def busiest(self) -> LocalHost:
        """The host running the most of our instances (bin-packing fills one host first)."""
        count = Counter(i.node for j in list(self.accepted) for i in self.instances(j))
        return max(self.c.hosts, key=lambda h: count.get(h.name, 0))

    def jobs_on(self, node: str) -> list[str]:
        return [j for j in list(self.accepted) if any(i.node == node for i in self.instances(j))]

    def leader(self) -> int | None:
        for k in range(self.c.replicas):
            proc = self.c.schedulers[k]
            if proc is None or proc.poll() is not None:
                continue
            try:
                with urllib.request.urlopen(f"http://{self.c.replica_metrics(k)}/metrics", timeout=2) as r:
                    if "packyard_scheduler_leader 1.0" in r.read().decode():
                        return k
            except OSError:
                pass
        return None

    # --- faults ------------------------------------------------------------------------------
    def wait(self, predicate, timeout: float) -> float | None:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if predicate():
                return time.monotonic() - start
            time.sleep(0.1)
        return None

    def record(self, kind: str, seconds: float | None) -> None:
        self.faults[kind] += 1
        self.recoveries.setdefault(kind, []).append(seconds if seconds is not None else float("inf"))
        shown = f"{seconds:.2f} s" if seconds is not None else "NOT RECOVERED"
        print(f"  {kind:12s} recovered in {shown}", flush=True)

    def node_loss(self, kind: str, h: LocalHost, cut, restore) -> None:
        self.wait(lambda: self.jobs_on(h.name), 30)
        affected = self.jobs_on(h.name)
        t0 = time.monotonic()
        cut()
        took = self.wait(lambda: self.all_running(affected, avoid=h.name), 60)
        self.record(kind, None if took is None else time.monotonic() - t0)
        restore()

    def agent_kill(self, h: LocalHost) -> None:
        self.node_loss("agent-kill", h, lambda: LocalCluster.kill(h.proc, signal.SIGKILL),
                       lambda: self.c.start_agent(h))

    def net_cut(self, h: LocalHost) -> None:
        outside = self.c._veths(self.c.hosts.index(h) + 1)[0]
        self.node_loss("net-cut", h, lambda: sh("ip", "link", "set", outside, "down"),
                       lambda: sh("ip", "link", "set", outside, "up"))

    def probe(self, kind: str, fault, restore) -> None:
        self._n += 1
        name = f"p{self._n}"
        t0 = time.monotonic()
        fault()
        ok = self.submit(name, 1, "--wait", "--timeout", "60")
        self.record(kind, time.monotonic() - t0 if ok else None)
        restore()

    def leader_kill(self) -> None:
        k = self.leader()
        if k is None:
            print("  no leader found; skipping", flush=True)
            return
        self.probe("leader-kill", lambda: LocalCluster.kill(self.c.schedulers[k], signal.SIGKILL),
                   lambda: self.c.start_scheduler(k=k))

    def etcd_kill(self, i: int) -> None:
        member = self.c.etcd_cluster.members[i]

        def restart():
            member.launch()
            member.wait_healthy(30)
        self.probe("etcd-kill", member.kill, restart)

    # --- the end -------------------------------------------------------------------------------
    def live(self) -> dict[str, list[str]]:
        """Job slot (`job.group.index`) -> `host:container` of each live container, from runc on
        every host: the truth, whatever etcd says."""
        slots: dict[str, list[str]] = {}
        for h in self.c.hosts:
            root = h.state_dir / "runc"
            if not root.exists():
                continue
            out = sh("runc", "--root", str(root), "list", "-f", "json", check=False).stdout or "[]"
            for ctr in json.loads(out) or []:
                if ctr.get("status") == "running":
                    slots.setdefault(ctr["id"].rsplit("-", 1)[0], []).append(f"{h.name}:{ctr['id']}")
        return slots

    def live_slots(self) -> Counter:
        return Counter({slot: len(where) for slot, where in self.live().items()})

    def summary(self, settle: float) -> dict:
        self.wait(lambda: self.all_running(list(self.accepted)), settle)
        # a job counts as lost only if it stays short of running through several looks (one
        # Status call failing, or answered by a replica a moment behind, proves nothing)
        lost = [j for j in self.accepted if self.wait(lambda j=j: self.all_running([j]), 10) is None]
        for job in lost:
            try:
                st = self.client.call("Status", scheduler_pb2.StatusRequest(name=job))
                print(f"  lost {job}: " + ", ".join(f"{i.id} {i.node} {i.state} {i.desired}" for i in st.instances))
            except Exception as e:
                print(f"  lost {job}: status failed: {e}")
        # a fenced copy is stopped within a few seconds of its node coming back: let that happen
        twice = {}
        self.wait(lambda: not {s: n for s, n in self.live_slots().items() if n > 1}, 30)
        twice = {s: where for s, where in self.live().items() if len(where) > 1}
        if twice:   # what the scheduler thinks of them, for the diagnosis
            for slot in twice:
                for i in self.client.call("Status", scheduler_pb2.StatusRequest(name=slot.split(".")[0])).instances:
                    print(f"  {i.id}: node {i.node} state {i.state} desired {i.desired} reason {i.reason}")
        worst = {k: max(v) for k, v in self.recoveries.items()}
        return {"faults_injected": sum(self.faults.values()), "faults": dict(self.faults),
                "jobs_submitted": len(self.accepted) + sum(self.refused.values()),
                "jobs_accepted": len(self.accepted), "submissions_refused": dict(self.refused),
                "jobs_lost": len(lost), "lost": lost, "instances_running_twice": len(twice),
                "twice": twice, "worst_recovery_s": worst,
                "median_recovery_s": {k: statistics.median(v) for k, v in self.recoveries.items()}}


def run(workdir: Path, rounds: int = 2, hosts: int = 3, lease_ttl: int = 5, leader_ttl: int = 3,
        every: float = 1.5, prefix: str = "px", net: str = "10.213.224.0/24", etcd_port: int = 23860,
        scheduler_port: int = 17860) -> dict:
    """Bring a cluster up, inject `rounds` rounds of the four faults under a stream of
    submissions, settle, take it down; the summary as a dict."""
    cluster = LocalCluster(workdir, hosts=hosts, prefix=prefix, net=net, etcd_port=etcd_port,
                           scheduler_port=scheduler_port, capacity="cpu=2,memory=1Gi", lease_ttl=lease_ttl,
                           confirm_timeout=15, schedulers=2, etcd_members=3,
                           scheduler_args=("--leader-ttl", str(leader_ttl)))
    cluster.up()
    chaos = Chaos(cluster, workdir)
    stream = threading.Thread(target=chaos.stream, args=(every,), daemon=True)
    try:
        for i in range(4):
            chaos.submit(f"base{i}", 3, "--wait", "--timeout", "60")
        stream.start()
        for r in range(rounds):
            print(f"round {r + 1}", flush=True)
            chaos.agent_kill(chaos.busiest())
            time.sleep(3)
            chaos.leader_kill()
            time.sleep(3)
            chaos.net_cut(chaos.busiest())
            time.sleep(3)
            chaos.etcd_kill(r % 3)
            time.sleep(3)
        chaos._stop.set()
        stream.join(60)
        return chaos.summary(settle=60)
    finally:
        chaos._stop.set()
        cluster.down()
        print(f"logs: {workdir}/logs", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--lease-ttl", type=int, default=5,
                    help="agents' lease, seconds (node loss detection; packyard-agent's default)")
    ap.add_argument("--leader-ttl", type=int, default=3, help="packyard-scheduler's default")
    ap.add_argument("--every", type=float, default=1.5, help="seconds between submissions")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("chaos needs root (network namespaces, cgroups)")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="packyard-chaos-"))
    result = run(workdir, args.rounds, args.hosts, args.lease_ttl, args.leader_ttl, args.every)
    print(json.dumps(result, indent=2))
    if result["jobs_lost"] or result["instances_running_twice"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
