"""A local multi-host cluster on one machine: `ctl local up`.

Each host is its own network namespace with its own address on a bridge (10.213.0.0/24 by
default), running a real packyard-agent; the scheduler (with its embedded etcd) runs in the root
namespace on the bridge address. The tests use the same class, so what the README runs is what CI
tests. Processes are started by us and ended by their PID; namespaces and the bridge are removed.
"""
from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True)


@dataclass
class LocalHost:
    name: str
    netns: str
    address: str              # the host's address on the cluster bridge
    subnet: str               # its containers' subnet
    port: int
    state_dir: Path
    labels: dict[str, str] = field(default_factory=dict)
    capacity: str = ""
    proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{self.port}"


class LocalCluster:
    def __init__(self, workdir: Path, hosts: int = 3, prefix: str = "pk", net: str = "10.213.0.0/24",
                 capacity: str = "cpu=2,memory=2Gi", labels: list[dict[str, str]] | None = None,
                 drivers: str = "container", scheduler_port: int = 7070, etcd_port: int = 2379,
                 lease_ttl: int = 5, confirm_timeout: float = 15.0, log_level: str = "info",
                 shared_netns: bool = False, usage_interval: float = 2.0,
                 prometheus_port: int | None = None, scrape_interval: str = "5s",
                 scheduler_args: tuple[str, ...] = (), tls: bool = False,
                 schedulers: int = 1, etcd_members: int = 1, registry: bool = False,
                 agent_args: tuple[str, ...] = ()):
        """shared_netns: every agent in this (the caller's) network namespace on 127.0.0.1 ports,
        as several agents on one real host would be; else each host gets its own namespace.
        tls: mutual TLS on every gRPC port, with certificates made by `ctl certs init` at up().
        schedulers: replicas (one leads); etcd_members > 1: an etcd cluster of its own on ports
        etcd_port, +2, +4... instead of the first scheduler's embedded etcd. registry: a local image
        registry on the bridge address (ctl/localregistry.py) the agents may pull from.
        agent_args: more packyard-agent flags for every agent (e.g. --allowed-dirs)."""
        self.registry = registry
        self.agent_args = tuple(agent_args)
        self.registry_proc: subprocess.Popen | None = None
        self.registry_config: Path | None = None
        self.workdir = Path(workdir)
        self.replicas = schedulers
        self.etcd_members = etcd_members
        self.etcd_cluster = None
        self.tls = tls
        self.prefix = prefix
        self.net = ipaddress.ip_network(net)
        self.bridge = f"{prefix}br0"[:15]
        self.shared_netns = shared_netns
        self.usage_interval = usage_interval
        self.prometheus_port = prometheus_port
        self.scheduler_args = scheduler_args
        self.scrape_interval = scrape_interval
        self.prometheus: subprocess.Popen | None = None
        self.gateway = "127.0.0.1" if shared_netns else str(self.net.network_address + 1)
        self.scheduler_port = scheduler_port
        self.etcd_port = etcd_port
        self.drivers = drivers
        self.lease_ttl = lease_ttl
        self.confirm_timeout = confirm_timeout
        self.log_level = log_level
        self.schedulers: list[subprocess.Popen | None] = [None] * schedulers
        base = int(self.net.network_address.packed[2])
        self.hosts = [
            LocalHost(name=f"{prefix}-host{i}", netns="" if shared_netns else f"{prefix}-host{i}",
                      address="127.0.0.1" if shared_netns else str(self.net.network_address + 10 + i),
                      subnet=f"{self.net.network_address.packed[0]}.{self.net.network_address.packed[1]}."
                             f"{base + i}.0/24",
                      port=scheduler_port + 100 + i if shared_netns else 7171, state_dir=self.workdir / f"host{i}",
                      labels=(labels[i - 1] if labels and i <= len(labels) else {}), capacity=capacity)
            for i in range(1, hosts + 1)]

    # --- addresses --------------------------------------------------------------------------
    @property
    def scheduler(self) -> subprocess.Popen | None:
        return self.schedulers[0]

    def replica_port(self, k: int) -> int:
        """Replica k's gRPC port (metrics on the next one); 10 apart, below the agents' +100."""
        return self.scheduler_port + 10 * k

    @property
    def scheduler_address(self) -> str:
        """Every replica, as ctl --scheduler takes them (it fails over in this order)."""
        return ",".join(f"{self.gateway}:{self.replica_port(k)}" for k in range(self.replicas))

    @property
    def scheduler_metrics(self) -> str:
        return f"{self.gateway}:{self.scheduler_port + 1}"

    def replica_metrics(self, k: int) -> str:
        return f"{self.gateway}:{self.replica_port(k) + 1}"

    def agent_metrics(self, h: LocalHost) -> str:
        if self.shared_netns:
            return f"127.0.0.1:{self.scheduler_port + 200 + self.hosts.index(h)}"
        return f"{h.address}:9100"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    @property
    def tls_dir(self) -> Path:
        return self.workdir / "tls"

    def tls_args(self) -> list[str]:
        return ["--tls", str(self.tls_dir)] if self.tls else []

    @property
    def etcd_endpoint(self) -> str:
        if self.etcd_cluster is not None:
            return self.etcd_cluster.endpoints
        return f"{'https' if self.tls else 'http'}://{self.gateway}:{self.etcd_port}"

    # --- network ----------------------------------------------------------------------------
    def create_network(self) -> None:
        self.destroy_network()
        if self.shared_netns:
            return
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{self.gateway}/{self.net.prefixlen}", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for i, h in enumerate(self.hosts, 1):
            outside, inside = self._veths(i)
            sh("ip", "netns", "add", h.netns)
            sh("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
            sh("ip", "link", "set", outside, "master", self.bridge, "up")
            sh("ip", "link", "set", inside, "netns", h.netns)
            ns = ("ip", "netns", "exec", h.netns)
            sh(*ns, "ip", "link", "set", "lo", "up")
            sh(*ns, "ip", "link", "set", inside, "name", "eth0")
            sh(*ns, "ip", "addr", "add", f"{h.address}/{self.net.prefixlen}", "dev", "eth0")
            sh(*ns, "ip", "link", "set", "eth0", "up")
            sh(*ns, "ip", "route", "add", "default", "via", self.gateway)
            # the root namespace reaches each host's containers through that host
            sh("ip", "route", "replace", h.subnet, "via", h.address)

    def _veths(self, i: int) -> tuple[str, str]:
        return f"{self.prefix}h{i}o"[:15], f"{self.prefix}h{i}i"[:15]

    def destroy_network(self) -> None:
        if self.shared_netns:
            return
        for i, h in enumerate(self.hosts, 1):
            sh("ip", "route", "del", h.subnet, check=False)
            # deleting one end removes the pair at once; the namespace itself may linger briefly
            sh("ip", "link", "del", self._veths(i)[0], check=False)
            sh("ip", "netns", "del", h.netns, check=False)
        sh("ip", "link", "del", self.bridge, check=False)

    # --- processes -------------------------------------------------------------------------
    def _spawn(self, args: list[str], log: Path, netns: str | None = None) -> subprocess.Popen:
        log.parent.mkdir(parents=True, exist_ok=True)
        # nsenter joins only the network namespace: `ip netns exec` would also remount /sys,
        # hiding the cgroup hierarchies mounted under it from the agent
        prefix = ["nsenter", f"--net=/var/run/netns/{netns}"] if netns else []
        with open(log, "ab") as out:
            return subprocess.Popen(prefix + args, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)

    def start_etcd(self) -> None:
        """etcd_members > 1: a cluster of our own (else the first scheduler embeds one)."""
        if self.etcd_members > 1:
            from scheduler.embedded_etcd import EtcdCluster
            ports = tuple(self.etcd_port + 2 * i for i in range(self.etcd_members))
            self.etcd_cluster = EtcdCluster(self.workdir / "etcd", ports, host=self.gateway,
                                            tls_dir=self.tls_dir if self.tls else None).start()

    def start_scheduler(self, wait: float = 30.0, k: int = 0) -> None:
        """Replica k; without an etcd cluster, replica 0 embeds etcd and the others use it."""
        name = "scheduler" if k == 0 else f"scheduler{k}"
        ready = self.workdir / f"{name}.ready"
        ready.unlink(missing_ok=True)
        if self.etcd_cluster is not None or k > 0:
            etcd = ["--etcd", self.etcd_endpoint]
        else:
            etcd = ["--embedded-etcd-listen", f"{self.gateway}:{self.etcd_port}"]
        self.schedulers[k] = self._spawn(
            [sys.executable, "-m", "scheduler.main", "--listen", f"{self.gateway}:{self.replica_port(k)}",
             "--state-dir", str(self.workdir / name), *etcd, "--id", name,
             "--confirm-timeout", str(self.confirm_timeout), "--ready-file", str(ready),
             "--metrics", self.replica_metrics(k), *self.scheduler_args, *self.tls_args(),
             "--log-level", self.log_level],
            self.workdir / "logs" / f"{name}.log")
        self._wait_file(ready, self.schedulers[k], name, wait)

    def start_agent(self, h: LocalHost, wait: float = 60.0) -> None:
        self.spawn_agent(h)
        self._wait_file(h.state_dir.with_suffix(".ready"), h.proc, h.name, wait)

    def spawn_agent(self, h: LocalHost) -> None:
        ready = h.state_dir.with_suffix(".ready")
        ready.unlink(missing_ok=True)
        labels = ",".join(f"{k}={v}" for k, v in h.labels.items())
        h.proc = self._spawn(
            [sys.executable, "-m", "agent.main", "--etcd", self.etcd_endpoint,
             "--listen", h.endpoint, "--node", h.name, "--state-dir", str(h.state_dir),
             "--subnet", h.subnet, "--drivers", self.drivers, "--lease-ttl", str(self.lease_ttl),
             "--ready-file", str(ready), "--log-level", self.log_level,
             "--usage-interval", str(self.usage_interval), "--metrics", self.agent_metrics(h),
             *self.tls_args(),
             *(["--registry-config", str(self.registry_config)] if self.registry_config else []),
             *(["--capacity", h.capacity] if h.capacity else []),
             *(["--labels", labels] if labels else []), *self.agent_args],
            self.workdir / "logs" / f"{h.name}.log", netns=h.netns or None)

    def start_prometheus(self, wait: float = 30.0) -> None:
        """The real Prometheus server, configured from ctl/prometheus/ (package data: an installed
        ctl has no checkout to read) to find the agents through the scheduler's /sd/agents."""
        import urllib.request
        deploy = Path(__file__).resolve().parent / "prometheus"
        conf = self.workdir / "prometheus"
        conf.mkdir(parents=True, exist_ok=True)
        text = (deploy / "prometheus.yml").read_text().replace("127.0.0.1:7071", self.scheduler_metrics)
        text = text.replace("scrape_interval: 5s", f"scrape_interval: {self.scrape_interval}")
        text = text.replace("evaluation_interval: 5s", f"evaluation_interval: {self.scrape_interval}")
        text = text.replace("refresh_interval: 5s", f"refresh_interval: {self.scrape_interval}")
        (conf / "prometheus.yml").write_text(text)
        shutil.copy(deploy / "alerts.yml", conf / "alerts.yml")
        self.prometheus = self._spawn(
            ["prometheus", f"--config.file={conf / 'prometheus.yml'}",
             f"--storage.tsdb.path={conf / 'data'}", f"--web.listen-address=127.0.0.1:{self.prometheus_port}"],
            self.workdir / "logs" / "prometheus.log")
        deadline = time.monotonic() + wait
        while True:
            try:
                with urllib.request.urlopen(f"{self.prometheus_url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.prometheus.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prometheus did not start; see {self.workdir}/logs/prometheus.log")
            time.sleep(0.1)

    def _wait_file(self, path: Path, proc: subprocess.Popen, what: str, wait: float) -> None:
        deadline = time.monotonic() + wait
        while not path.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}; see {self.workdir}/logs")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} not ready after {wait}s; see {self.workdir}/logs")
            time.sleep(0.05)

    @staticmethod
    def kill(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, wait: float = 15.0) -> None:
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()

    def up(self) -> LocalCluster:
        """A fresh cluster: state left in workdir by an earlier run is removed first."""
        for old in [self.workdir / "scheduler", self.workdir / "prometheus", self.workdir / "etcd",
                    *(self.workdir / f"scheduler{k}" for k in range(1, self.replicas)),
                    *(h.state_dir for h in self.hosts)]:
            shutil.rmtree(old, ignore_errors=True)
        self.workdir.mkdir(parents=True, exist_ok=True)
        # the agents' state dirs are in it: the containers' mapped root must be able to search it
        self.workdir.chmod(self.workdir.stat().st_mode & 0o7777 | 0o001)
        self.create_network()
        try:
            if self.tls:   # a new CA per run, made the way a user would
                self.ctl("certs", "init", str(self.tls_dir), "--force", check=True)
                for h in self.hosts:       # each agent its node's pair; etcd lets it write that node's keys
                    self.ctl("certs", "issue", str(self.tls_dir), "agent", h.name, check=True)
            if self.registry:
                from ctl import localregistry
                self.registry_proc, self.registry_config = localregistry.start(
                    self.workdir, self.gateway, self.workdir / "logs" / "registry.log", self._spawn)
            self.start_etcd()
            for k in range(self.replicas):
                self.start_scheduler(k=k)
            # side by side: each agent's first start may probe KVM for ~10 s
            for h in self.hosts:
                self.spawn_agent(h)
            for h in self.hosts:
                self._wait_file(h.state_dir.with_suffix(".ready"), h.proc, h.name, 60.0)
            if self.prometheus_port:
                self.start_prometheus()
        except Exception:
            self.down()
            raise
        return self

    def stop_all_jobs(self, wait: float = 30.0) -> None:
        """Stop every job through the scheduler, the way a user would, and wait for the agents
        to report everything stopped (they remove each instance's cgroups, netns and files)."""
        listing = self.ctl("list", "-o", "json", timeout=30)
        if listing.returncode != 0:
            return
        jobs = json.loads(listing.stdout)
        for job in jobs:
            self.ctl("stop", job["name"], timeout=30)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            listing = self.ctl("list", "-o", "json", timeout=30)
            if listing.returncode != 0:
                return
            busy = [j for j in json.loads(listing.stdout)
                    if set(j["instances"]) & {"pending", "starting", "running"}]
            if not busy:
                return
            time.sleep(0.2)

    def down(self, stop_instances: bool = True) -> None:
        """Stop the jobs, end our processes by PID, then remove whatever the agents left."""
        if stop_instances and any(p is not None and p.poll() is None for p in self.schedulers):
            try:
                self.stop_all_jobs()
            except (subprocess.SubprocessError, ValueError):
                pass
        for h in self.hosts:
            self.kill(h.proc)
        self.kill(self.registry_proc)
        for proc in self.schedulers:
            self.kill(proc)
        if self.etcd_cluster is not None:
            self.etcd_cluster.stop()
        self.kill(self.prometheus)
        if stop_instances:
            cleanup_agent_leftovers([h.name for h in self.hosts], [h.state_dir for h in self.hosts])
            for top in Path("/sys/fs/cgroup").glob("*/packyard"):
                try:
                    top.rmdir()   # only succeeds when no agent has a subtree left in it
                except OSError:
                    pass
        self.destroy_network()

    def ctl(self, *args: str, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ctl.main", "--scheduler", self.scheduler_address,
                               *self.tls_args(), *args],
                              capture_output=True, text=True, timeout=timeout, check=check)


def cleanup_agent_leftovers(nodes: list[str], state_dirs: list[Path]) -> None:
    """What an agent leaves running by design (instances outlive it for reattach) removed for good:
    runc containers, their namespaces, mounts and cgroups. Only needed when the jobs could not be
    stopped through the scheduler first."""
    domains = sh("virsh", "-c", "qemu:///system", "list", "--name", check=False).stdout.split() \
        if shutil.which("virsh") else []
    for node, state_dir in zip(nodes, state_dirs, strict=True):
        for domain in domains:
            if domain.startswith(f"pky-{node}-"):   # the VM driver's names: pky-<node>-<instance>
                sh("virsh", "-c", "qemu:///system", "destroy", domain, check=False)
        for handle in (state_dir / "handles").glob("*.json"):
            try:
                data = json.loads(handle.read_text())["handle"]["data"]
            except (ValueError, KeyError, OSError):
                continue
            if data.get("netns"):
                sh("ip", "netns", "del", data["netns"], check=False)
        root = state_dir / "runc"
        if root.exists():
            listing = sh("runc", "--root", str(root), "list", "-q", check=False).stdout.split()
            for cid in listing:
                sh("runc", "--root", str(root), "delete", "--force", cid, check=False)
        for mount in reversed(Path("/proc/self/mounts").read_text().splitlines()):
            target = mount.split()[1]
            if target.startswith(str(state_dir)):
                sh("umount", "-l", target, check=False)
        for pattern in (f"/sys/fs/cgroup/*/packyard/{node}", f"/sys/fs/cgroup/packyard/{node}"):
            for d in sorted(Path("/").glob(pattern.lstrip("/")), key=lambda p: -len(p.parts)):
                for sub in sorted(d.rglob("*"), key=lambda p: -len(p.parts)):
                    if sub.is_dir():
                        try:
                            sub.rmdir()
                        except OSError:
                            pass
                for empty in (d, d.parent):   # packyard/<node>, then packyard/ if no agent is left
                    try:
                        empty.rmdir()
                    except OSError:
                        break
