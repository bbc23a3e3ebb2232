"""Logs capped (issue 15, point 4), through scheduler, agent, runc and s6-log: an agent whose
containers' logs rotate at 64 KiB × 3 files. A `yes` stays under the cap; `ctl logs` (and --tail)
reads across the rotation in order; the log process outlives an agent restart and ends with its
container; a purged job's logs leave the host."""
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from agent.drivers.container.runc import container_id
from ctl.local import LocalCluster
from tests.agent.drivers.test_container_logs import log_files
from tests.conftest import opt_in, searchable_dir
from tests.conftest import wait_for as poll

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
              pytest.mark.skipif(not Path("/usr/sbin/runc").exists() and not Path("/usr/bin/runc").exists(),
                                 reason="runc not installed"),
              pytest.mark.skipif(shutil.which("s6-log") is None, reason="s6-log not installed")]

SIZE, FILES = 64 * 1024, 3


@pytest.fixture(scope="module")
def cluster(request):
    c = LocalCluster(searchable_dir(request, "logs"), hosts=1, prefix="pg", net="10.213.224.0/24",
                     etcd_port=23960, scheduler_port=17960, capacity="cpu=2,memory=1Gi",
                     lease_ttl=30, confirm_timeout=10,
                     agent_args=("--log-max-size", "64Ki", "--log-max-files", str(FILES),
                                 "--log-sweep-interval", "0.5"))
    c.up()
    yield c
    c.down()
    assert not list(Path("/sys/fs/cgroup").glob("*/packyard/pg-host*"))


def wait_for(predicate, timeout=30.0, what="condition"):
    return poll(predicate, timeout=timeout, what=what, interval=0.1)


def run(cluster, tmp_path, name, script, job_type="service"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\ntype: {job_type}\ngroups:\n  - name: main\n    count: 1\n"
                    f"    resources: {{cpu: 200m, memory: 32Mi}}\n"
                    f"    container: {{command: {json.dumps(['/bin/sh', '-c', script])}}}\n"
                    "    restart: {attempts: 0}\n")
    r = cluster.ctl("submit", str(path))
    assert r.returncode == 0, r.stderr
    return wait_for(lambda: instances(cluster, name), what=f"{name} placed")[0]["id"]


def instances(cluster, job):
    r = cluster.ctl("status", job, "-o", "json")
    return json.loads(r.stdout)["instances"] if r.returncode == 0 else []


def state(cluster, job):
    found = instances(cluster, job)
    return found[0]["state"] if found else None


def handle_data(cluster, iid):
    for f in (cluster.hosts[0].state_dir / "handles").glob("*.json"):
        h = json.loads(f.read_text())["handle"]
        if h["id"] == iid:
            return h["data"]
    return None


def log_dir(cluster, iid) -> Path:
    return cluster.hosts[0].state_dir / "logs" / container_id(iid)


def sizes(d: Path) -> dict[str, int]:
    return log_files(d / "current")


def loggers_of(d: Path) -> list[int]:
    found = []
    for p in os.listdir("/proc"):
        try:
            argv = Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if argv and argv[0].endswith(b"s6-log") and str(d).encode() in argv:
            found.append(int(p))
    return found


def test_a_yes_container_stays_under_its_cap(cluster, tmp_path):
    iid = run(cluster, tmp_path, "flood", "exec yes packyard-log-line")
    wait_for(lambda: state(cluster, "flood") == "running", what="running")
    d = log_dir(cluster, iid)
    wait_for(lambda: len(sizes(d)) == FILES, what="a rotated log")
    seen = []
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        seen.append(sizes(d))
        time.sleep(0.1)
    for s in seen:
        assert max(s.values()) <= SIZE and sum(s.values()) <= SIZE * FILES, s
    tail = cluster.ctl("logs", iid, "--tail", "1000").stdout
    assert set(tail.splitlines()) == {"packyard-log-line"} and tail.endswith("\n")   # whole lines, at both ends
    assert cluster.ctl("stop", "flood", "--purge").returncode == 0
    wait_for(lambda: not d.exists(), what="the purged job's logs removed")


def test_ctl_logs_reads_across_rotation_in_order_and_purge_removes_it(cluster, tmp_path):
    iid = run(cluster, tmp_path, "seq", "i=1; while [ $i -le 9000 ]; do echo line-$i; i=$((i+1)); done",
              job_type="batch")
    wait_for(lambda: state(cluster, "seq") == "complete", timeout=60, what="the batch job done")
    d = log_dir(cluster, iid)
    expected = "".join(f"line-{i}\n" for i in range(1, 9001))
    out = cluster.ctl("logs", iid)
    assert out.returncode == 0 and out.stdout == expected
    assert cluster.ctl("logs", iid, "--tail", "20").stdout == "line-8999\nline-9000\n"
    across = (d / "current").stat().st_size + 30            # the end of a rotated file, then current
    # whole lines: one that the last `across` bytes begin inside is left out
    whole = expected[-across:] if expected[-across - 1] == "\n" else expected[-across:].partition("\n")[2]
    assert cluster.ctl("logs", iid, "--tail", str(across)).stdout == whole
    rotated = list(d.glob("@*.s"))
    assert rotated, "more than one file's worth, rotated"
    assert cluster.ctl("stop", "seq", "--purge").returncode == 0
    wait_for(lambda: not d.exists(), what="the purged job's logs removed")   # the agent's next sweep
    assert not [p for p in rotated if p.exists()] and cluster.ctl("logs", iid).returncode != 0


@opt_in("a slow proof")
def test_the_log_process_outlives_an_agent_restart(cluster, tmp_path):
    iid = run(cluster, tmp_path, "tick", "echo before; while sleep 0.05; do echo tick; done")
    wait_for(lambda: state(cluster, "tick") == "running", what="running")
    d = log_dir(cluster, iid)
    wait_for(lambda: "before" in cluster.ctl("logs", iid).stdout, what="its first line")
    pid = handle_data(cluster, iid)["logger"]["pid"]
    host = cluster.hosts[0]
    cluster.kill(host.proc)                                  # the agent goes; the container stays
    assert loggers_of(d) == [pid]
    cluster.start_agent(host)
    wait_for(lambda: state(cluster, "tick") == "running", what="reattached")
    assert loggers_of(d) == [pid] and handle_data(cluster, iid)["logger"]["pid"] == pid
    size = sum(sizes(d).values())
    wait_for(lambda: sum(sizes(d).values()) > size, what="still logging to the same files")
    # (the scheduler's channel to the restarted agent may still be backing off: asked again)
    wait_for(lambda: cluster.ctl("logs", iid).stdout.startswith("before\ntick\n"), what="ctl logs")
    assert cluster.ctl("stop", "tick").returncode == 0
    wait_for(lambda: state(cluster, "tick") == "stopped", what="stopped")
    wait_for(lambda: not loggers_of(d), what="its log process ended with it")
    assert cluster.ctl("logs", iid).stdout.startswith("before\ntick\n")    # the log stays...
    cluster.ctl("stop", "tick", "--purge")
    wait_for(lambda: not d.exists(), what="...until the job is purged")
