"""The Ansible playbook (deploy/ansible) on three real booted hosts (systemd-nspawn, one debootstrapped
Debian image, see nspawn/hosts.py): etcd x3, scheduler x3, agent x3 and Prometheus over SSH; applied
twice (the second run changes nothing); a job from `ctl` outside runs on all three; a rolling upgrade
of the agents to a new wheel restarts every agent and none of the instances.

Runs only with PACKYARD_DEPLOY_TEST=1: about 6 minutes on this 2-core machine with the host image cached
(/var/cache/packyard/debian-bookworm-host; building it is a ~100 s debootstrap, once). Needs root,
debootstrap, systemd-container and ansible-core (the `test` extra). PACKYARD_DEPLOY_KEEP=1 leaves the
hosts running for a look (ssh -i WORK/id_ed25519 root@10.213.208.11); remove them with
`python -m tests.deploy.nspawn.hosts down WORK`.

    sudo PACKYARD_DEPLOY_TEST=1 .venv/bin/pytest -s tests/deploy/test_nspawn_deploy.py
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.deploy.nspawn import hosts as nspawn

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE = ROOT / "deploy/ansible"
BIN = Path(sys.executable).parent
NAMES = ["yard1", "yard2", "yard3"]     # node names: no clash with the local cluster's cgroups
TOOLS = ("debootstrap", "systemd-nspawn", "dbus-daemon", "ssh")
KEPT: list[nspawn.Hosts] = []

JOB = """\
name: spread
groups:
  - name: web
    count: 3
    kind: container
    # each host offers cpu=1 (packyard_capacity): one instance per host, so all three are used
    resources: {cpu: 0.75, memory: 64Mi}
    container:
      command: ["/bin/sh", "-c", "echo up; exec sleep 86400"]
"""


def _wanted() -> str | None:
    """Why the test is skipped, or None."""
    if os.geteuid() != 0:
        return "needs root"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if not (BIN / "ansible-playbook").exists():
        missing.append("ansible-playbook (pip install ansible-core)")
    if missing:
        return "not installed: " + ", ".join(missing)
    if os.environ.get("PACKYARD_DEPLOY_TEST") != "1":
        return "about 6 minutes on 2 cores: run with PACKYARD_DEPLOY_TEST=1"
    return None


pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1200),
              pytest.mark.skipif(_wanted() is not None, reason=_wanted() or "")]


def log(msg: str) -> None:
    print(f"[deploy {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def snapshot(work: Path) -> Path:
    """The packages as they are now (what `pip wheel .` would build), so the first install and the
    upgrade are built from the same code while others edit the tree."""
    tree = work / "src"
    for name in ("packyard", "scheduler", "agent", "ctl"):
        # (not this checkout's placement kernel built for its CPU: the wheel builds its own)
        shutil.copytree(ROOT / name, tree / name, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, tree / name)
    return tree


def build_wheelhouse(out: Path, source: Path) -> Path:
    """packyard + its dependencies as wheels in OUT; built dependencies are cached between runs."""
    cache = nspawn.CACHE / f"wheels-py{sys.version_info.major}{sys.version_info.minor}"
    cache.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(BIN / "pip"), "wheel", "-q", "--find-links", str(cache), "-w", str(out), str(source)],
                   check=True)
    for wheel in out.glob("*.whl"):
        if not wheel.name.startswith("packyard-") and not (cache / wheel.name).exists():
            shutil.copy2(wheel, cache / wheel.name)
    return out


def new_release(work: Path, source: Path, version: str) -> Path:
    """The same code under another version: what an upgrade installs."""
    tree = work / "release"
    shutil.copytree(source, tree)
    pyproject = tree / "pyproject.toml"
    pyproject.write_text(re.sub(r'(?m)^version = ".*"$', f'version = "{version}"', pyproject.read_text()))
    out = work / "release-wheel"
    subprocess.run([str(BIN / "pip"), "wheel", "-q", "--no-deps", "-w", str(out), str(tree)], check=True)
    return next(out.glob("packyard-*.whl"))


def write_inventory(work: Path, hosts: nspawn.Hosts) -> Path:
    ssh_args = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
    inventory = {
        "all": {
            "vars": {
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(hosts.key),
                "ansible_ssh_common_args": ssh_args,
                "ansible_python_interpreter": "/usr/bin/python3",
                "packyard_wheelhouse": str(work / "wheels"),
                "packyard_certs_dir": str(work / "certs"),
                "packyard_ctl_command": str(BIN / "ctl"),
                "packyard_apt_update": False,         # the image holds the packages; no mirror here
                "packyard_agent_drivers": ["container"],
                "packyard_capacity": "cpu=1,memory=2Gi",
            },
            "hosts": {h.name: {"ansible_host": h.address, "packyard_labels": {"zone": h.name}}
                      for h in hosts.hosts},
            "children": {
                "etcd": {"hosts": {h.name: {} for h in hosts.hosts}},
                "schedulers": {"hosts": {h.name: {} for h in hosts.hosts}},
                "agents": {"hosts": {h.name: {} for h in hosts.hosts}},
                "prometheus": {"hosts": {hosts.hosts[0].name: {}}},
            },
        }
    }
    path = work / "inventory.yml"
    path.write_text(json.dumps(inventory, indent=2))      # JSON is YAML
    return path


def playbook(name: str, inventory: Path, work: Path) -> dict[str, dict[str, int]]:
    """Run a playbook; the PLAY RECAP as {host: {ok, changed, failed, ...}}."""
    env = {**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"), "ANSIBLE_HOST_KEY_CHECKING": "False",
           "ANSIBLE_LOCAL_TEMP": str(work / "ansible-tmp"), "ANSIBLE_NOCOLOR": "1"}
    started = time.monotonic()
    result = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inventory), name], cwd=ANSIBLE, env=env,
                            capture_output=True, text=True)
    (work / f"{name}.{int(time.time())}.log").write_text(result.stdout + result.stderr)
    recap = {}
    for line in result.stdout.split("PLAY RECAP")[-1].splitlines():
        m = re.match(r"^(\S+)\s+:\s+(.*)$", line.strip())
        if m:
            recap[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    changed = [line for line in result.stdout.splitlines() if line.startswith("changed:")]
    log(f"{name}: {time.monotonic() - started:.1f} s, recap {recap}, changed tasks: {len(changed)}")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    return recap


class Ctl:
    def __init__(self, hosts: nspawn.Hosts, certs: Path):
        scheduler = ",".join(f"{h.address}:7070" for h in hosts.hosts)
        self.base = [str(BIN / "ctl"), "--scheduler", scheduler, "--tls", str(certs)]

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(self.base + list(args), capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise AssertionError(f"ctl {' '.join(args)}: exit {result.returncode}: {result.stdout}{result.stderr}")
        return result

    def json(self, *args: str):
        return json.loads(self(*args, "-o", "json").stdout)


def wait_for(what: str, probe, timeout: float = 90.0, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = probe()
            if last:
                return last
        except (AssertionError, subprocess.SubprocessError, json.JSONDecodeError) as e:
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}: {last}")


def ready_nodes(ctl: Ctl) -> list[str]:
    nodes = ctl.json("nodes")
    nodes = nodes.get("nodes", nodes) if isinstance(nodes, dict) else nodes
    return sorted(n["name"] for n in nodes if n.get("state") == "ready")


def instances(ctl: Ctl, job: str) -> list[dict]:
    status = ctl.json("status", job)
    return status.get("instances", [])


def workload_pids(hosts: nspawn.Hosts) -> dict[str, list[int]]:
    """The job's processes (its `sleep`) on each host, by host."""
    return {h.name: sorted(int(p) for p in hosts.ssh(h, "pgrep -x sleep || true").split()) for h in hosts.hosts}


@pytest.fixture
def cluster_hosts(tmp_path_factory):
    work = Path(tmp_path_factory.mktemp("deploy"))
    started = time.monotonic()
    booted = nspawn.boot(work, NAMES, log=log)
    log(f"booted {len(booted.hosts)} hosts in {time.monotonic() - started:.1f} s")
    try:
        yield work, booted
    finally:
        if os.environ.get("PACKYARD_DEPLOY_KEEP") == "1":
            KEPT.append(booted)     # their Popen objects outlive the test: no "still running" warning
            log(f"hosts kept; remove them with: python -m tests.deploy.nspawn.hosts down {work}")
        else:
            nspawn.teardown(booted)


def test_playbook_deploys_a_cluster_that_runs_jobs_and_upgrades_agents_in_place(cluster_hosts):
    work, hosts = cluster_hosts
    t0 = time.monotonic()
    source = snapshot(work)
    build_wheelhouse(work / "wheels", source)
    log(f"wheelhouse built in {time.monotonic() - t0:.1f} s")
    inventory = write_inventory(work, hosts)

    first = playbook("site.yml", inventory, work)
    assert set(NAMES) <= set(first) and all(r["failed"] == 0 and r["unreachable"] == 0 for r in first.values())
    second = playbook("site.yml", inventory, work)
    assert {h: r["changed"] for h, r in second.items()} == {h: 0 for h in second}, second

    ctl = Ctl(hosts, work / "certs")
    assert wait_for("three ready nodes", lambda: ready_nodes(ctl) == NAMES and ready_nodes(ctl))
    log(f"ctl nodes:\n{ctl('nodes').stdout}")
    for h in hosts.hosts:   # the units are what runs them, under systemd on each host
        assert hosts.ssh(h, "systemctl is-active packyard-etcd packyard-scheduler packyard-agent").split() == [
            "active"] * 3
        # the wheel's placement kernel, built ahead of time: the scheduler has loaded no numba nor llvmlite
        pid = hosts.ssh(h, "systemctl show -p MainPID --value packyard-scheduler").strip()
        maps = hosts.ssh(h, f"cat /proc/{pid}/maps")
        assert "_kernel_aot" in maps and "numba" not in maps and "llvmlite" not in maps

    job = work / "spread.yaml"
    job.write_text(JOB)
    ctl("submit", str(job), "--wait", "--timeout", "120")
    running = instances(ctl, "spread")
    log(f"ctl status spread:\n{ctl('status', 'spread').stdout}")
    assert len(running) == 3 and {i["state"] for i in running} == {"running"}
    assert sorted(i["node"] for i in running) == NAMES
    pids = workload_pids(hosts)
    assert all(len(p) == 1 for p in pids.values()), pids

    # Prometheus on the first host finds every agent through the schedulers' /sd/agents
    def scraped_agents():
        out = hosts.ssh(hosts.hosts[0], "python3 -c \"import urllib.request;print(urllib.request.urlopen("
                                        "'http://127.0.0.1:9090/api/v1/targets').read().decode())\"")
        active = json.loads(out)["data"]["activeTargets"]
        up = [t for t in active if t["labels"]["job"] == "packyard-agents" and t["health"] == "up"]
        return len(up) == 3 and up
    wait_for("Prometheus scraping three agents", scraped_agents, timeout=60, interval=2)

    # a rolling upgrade to a new release: every agent restarted, one at a time, no instance restarted
    agent_pid = {h.name: hosts.ssh(h, "systemctl show -p MainPID --value packyard-agent").strip()
                 for h in hosts.hosts}
    wheel = new_release(work, source, "0.1.0+deploytest")
    for old in (work / "wheels").glob("packyard-*.whl"):
        old.unlink()
    shutil.copy2(wheel, work / "wheels" / wheel.name)
    upgrade = playbook("upgrade.yml", inventory, work)
    assert all(r["failed"] == 0 and r["changed"] > 0 for h, r in upgrade.items() if h in NAMES), upgrade
    # serial: 1 -- each agent started after the previous host's was back (one clock: one kernel)
    started = [int(hosts.ssh(h, "systemctl show -p ExecMainStartTimestampMonotonic --value packyard-agent"))
               for h in hosts.hosts]
    assert started == sorted(started) and len(set(started)) == 3, started
    log("agents restarted at +" + ", +".join(f"{(t - started[0]) / 1e6:.1f} s" for t in started))
    for h in hosts.hosts:
        assert "0.1.0+deploytest" in hosts.ssh(h, "/opt/packyard/venv/bin/pip show packyard")
        assert hosts.ssh(h, "systemctl show -p MainPID --value packyard-agent").strip() != agent_pid[h.name]
        log(f"{h.name} agent log after the upgrade: " + hosts.ssh(
            h, "journalctl -u packyard-agent -b --no-pager | grep -i reattach | tail -1").strip())
    assert wait_for("three ready nodes", lambda: ready_nodes(ctl) == NAMES and ready_nodes(ctl))
    after = instances(ctl, "spread")
    assert {i["id"] for i in after} == {i["id"] for i in running}
    assert {i["state"] for i in after} == {"running"}
    assert workload_pids(hosts) == pids        # the same processes: nothing was restarted
    log(f"upgrade: 3 agents restarted, 0 of {len(after)} instances restarted; total {time.monotonic() - t0:.1f} s")

    again = playbook("upgrade.yml", inventory, work)
    assert {h: r["changed"] for h, r in again.items()} == {h: 0 for h in again}, again
