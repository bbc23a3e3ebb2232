"""etcd faults on real processes (issue 6, item 4): a 3-member etcd cluster, a scheduler and an
agent (fake driver) as subprocesses given all three members. One member killed → service goes on;
the whole cluster gone for a while → scheduler and agent ride it out and recover by themselves,
with the instances started before still running."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scheduler.embedded_etcd import EtcdCluster
from tests.conftest import opt_in, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, opt_in("about 1.5 minutes of etcd outages")]

ROOT = Path(__file__).resolve().parents[2]
ETCD_PORTS = (23900, 23902, 23904)
SCHEDULER = "127.0.0.1:17900"
NODE = "ef-node"


class Stack:
    """etcd cluster + scheduler + agent, each process ours (ended by its Popen, never by name)."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.etcd = EtcdCluster(workdir / "etcd", ETCD_PORTS, tie_to_parent=True)
        self.procs: dict[str, subprocess.Popen] = {}

    def spawn(self, name: str, args: list[str]) -> None:
        ready = self.workdir / f"{name}.ready"
        with open(self.workdir / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", *args, "--ready-file", str(ready)], cwd=ROOT,
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for(lambda: ready.exists() or self.procs[name].poll() is not None, 60, f"{name} ready")
        assert self.procs[name].poll() is None, self.log(name)[-3000:]

    def up(self) -> "Stack":
        self.etcd.start()
        self.spawn("scheduler", ["scheduler.main", "--etcd", self.etcd.endpoints, "--listen", SCHEDULER,
                                 "--confirm-timeout", "60"])
        self.spawn("agent", ["agent.main", "--etcd", self.etcd.endpoints, "--drivers", "fake",
                             "--node", NODE, "--listen", "127.0.0.1:0", "--capacity", "cpu=4,memory=4Gi",
                             "--state-dir", str(self.workdir / "agent"), "--usage-interval", "1"])
        return self

    def down(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.etcd.stop()

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs.values())

    def ctl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ctl.main", "--scheduler", SCHEDULER, *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)

    def submit(self, name: str, count: int, *args: str) -> subprocess.CompletedProcess:
        path = self.workdir / f"{name}.yaml"
        path.write_text(f"name: {name}\ngroups:\n  - name: main\n    count: {count}\n"
                        f"    resources: {{cpu: 100m, memory: 32Mi}}\n")
        return self.ctl("submit", str(path), *args)

    def states(self, job: str) -> dict[str, str]:
        r = self.ctl("status", job, "-o", "json")
        assert r.returncode == 0, r.stderr
        return {i["id"]: i["state"] for i in json.loads(r.stdout)["instances"]}

    def node_state(self) -> str:
        r = self.ctl("nodes", "-o", "json")
        assert r.returncode == 0, r.stderr
        nodes = json.loads(r.stdout)
        nodes = nodes.get("nodes", nodes) if isinstance(nodes, dict) else nodes
        return next((n["state"] for n in nodes if n["name"] == NODE), "missing")

    def talks_to(self, port: int) -> set[str]:
        """Which of our processes hold an established connection to 127.0.0.1:port."""
        out = subprocess.run(["ss", "-tnpH", "state", "established", f"( dport = :{port} )"],
                             capture_output=True, text=True).stdout
        return {name for name, p in self.procs.items() if f"pid={p.pid}," in out}


def etcdctl(endpoints: str, *args: str) -> str:
    r = subprocess.run(["etcdctl", "--endpoints", endpoints, *args], capture_output=True, text=True,
                       env={**os.environ, "ETCDCTL_API": "3"}, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


def make_leader(cluster: EtcdCluster, index: int) -> None:
    """Move raft leadership to member `index`: killing it then also costs an election."""
    status = {s["Endpoint"]: s["Status"] for s in json.loads(
        etcdctl(cluster.endpoints, "endpoint", "status", "-w", "json"))}
    leader = next(ep for ep, s in status.items() if s["header"]["member_id"] == s["leader"])
    target = status[cluster.members[index].endpoint]["header"]["member_id"]
    if leader != cluster.members[index].endpoint:
        etcdctl(leader, "move-leader", format(target, "x"))


@pytest.fixture
def stack(tmp_path):
    s = Stack(tmp_path).up()
    yield s
    s.down()


def running(stack: Stack, job: str, count: int) -> dict[str, str]:
    r = stack.submit(job, count, "--wait", "--timeout", "60")
    assert r.returncode == 0, r.stdout + r.stderr + stack.log("scheduler")[-3000:]
    states = stack.states(job)
    assert len(states) == count and set(states.values()) == {"running"}, states
    return states


def test_killing_the_member_in_use_disturbs_nothing(stack):
    before = running(stack, "before", 2)
    assert stack.talks_to(ETCD_PORTS[0]) == {"scheduler", "agent"}   # both on the first member
    make_leader(stack.etcd, 0)
    killed = time.monotonic()
    stack.etcd.members[0].kill()

    after = running(stack, "after", 2)
    print(f"\nmember killed → new job running: {time.monotonic() - killed:.1f} s")
    assert stack.states("before") == before            # same instances, still running
    assert stack.node_state() == "ready"
    assert stack.alive()
    assert set(after.values()) == {"running"}
    assert "registering again" not in stack.log("agent")   # the node's lease was kept
    assert not stack.talks_to(ETCD_PORTS[0])
    assert "etcd answers again at 127.0.0.1:2390" in stack.log("scheduler")


def test_whole_cluster_gone_then_back(stack):
    before = running(stack, "before", 2)
    scheduler_pid, agent_pid = stack.procs["scheduler"].pid, stack.procs["agent"].pid
    stack.etcd.kill()
    gone = time.monotonic()
    time.sleep(3)
    # a submission while etcd is away fails clearly and promptly (ctl: exit 1, unreachable)
    tried = time.monotonic()
    during = stack.submit("during", 1)
    print(f"\nsubmit during the outage answered in {time.monotonic() - tried:.1f} s: {during.stderr.strip()}")
    assert during.returncode == 1, during.stdout + during.stderr
    assert "etcd unavailable" in during.stderr
    time.sleep(max(0.0, 6 - (time.monotonic() - gone)))

    stack.etcd.start()
    back = time.monotonic()
    print(f"etcd was down {back - gone:.1f} s")
    after = running(stack, "after", 1)
    print(f"etcd back → new job running: {time.monotonic() - back:.1f} s")
    assert stack.alive()                                 # no restart: the same processes
    assert (stack.procs["scheduler"].pid, stack.procs["agent"].pid) == (scheduler_pid, agent_pid)
    assert stack.states("before") == before              # still the same instances, still running
    assert stack.node_state() == "ready"
    assert set(after.values()) == {"running"}
    assert stack.ctl("status", "during").returncode == 2  # the refused submission left nothing
