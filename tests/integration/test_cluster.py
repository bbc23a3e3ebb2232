"""The whole path on real parts: scheduler with embedded etcd, three agents each in its own network
namespace, runc containers in cgroups with namespaces. What issue 2 asks to be shown."""
import functools
import json
import os
import re
import time
import urllib.request
from pathlib import Path

import pytest

from agent.drivers.container.cgroups import detect, instance_path
from ctl.local import LocalCluster
from packyard.quantity import parse_bytes
from tests.conftest import UNTIL_STOPPED, opt_in, searchable_dir
from tests.conftest import wait_for as poll

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
              pytest.mark.skipif(not Path("/usr/sbin/runc").exists() and not Path("/usr/bin/runc").exists(),
                                 reason="runc not installed")]


@pytest.fixture(scope="module")
def cluster(request):
    c = LocalCluster(searchable_dir(request, "cluster"), hosts=3, prefix="pi", net="10.213.80.0/24",
                     etcd_port=23720, scheduler_port=17720, capacity="cpu=2,memory=1Gi",
                     lease_ttl=30, confirm_timeout=10,   # nothing here tests node loss: a slow restart must not look like one
                     usage_interval=1.0)   # the agents' --usage-interval: measured rates a sample sooner
    c.up()
    yield c
    c.down()
    # nothing of ours is left: no cgroup subtree, no container namespace, no mount
    assert not list(Path("/sys/fs/cgroup").glob("*/packyard/pi-host*"))
    assert "pi-host" not in Path("/proc/self/mounts").read_text()


wait_for = functools.partial(poll, interval=0.1)


def submit(cluster, tmp_path, text, *args):
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return cluster.ctl("submit", str(path), *args)


def status(cluster, job):
    r = cluster.ctl("status", job, "-o", "json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def job(name, count=1, cpu="100m", memory="32Mi", command=("/bin/sleep", "3600"), job_type="service",
        extra=""):
    return (f"name: {name}\ntype: {job_type}\ngroups:\n  - name: main\n    count: {count}\n"
            f"    resources: {{cpu: {cpu}, memory: {memory}}}\n"
            f"    container: {{command: {json.dumps(list(command))}}}\n" + extra)


NO_RESTART = "    restart: {attempts: 0}\n"      # the end itself is what the test looks at


def cgroup_dirs(node, iid):
    return [p for p in Path("/sys/fs/cgroup").glob(f"*/{instance_path(node, iid)}")]


def pids_in(node, iid):
    path = Path("/sys/fs/cgroup/memory") / instance_path(node, iid) / "cgroup.procs"
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_submit_running_logs_stop_and_nothing_left(cluster, tmp_path):
    text = job("hello", count=2, command=["/bin/sh", "-c", f"echo hello from $(hostname); {UNTIL_STOPPED}"])
    r = submit(cluster, tmp_path, text, "--wait", "--timeout", "60")
    assert r.returncode == 0, r.stderr
    insts = status(cluster, "hello")["instances"]
    assert all(i["state"] == "running" and i["address"] for i in insts)
    placed = [(i["node"], i["id"]) for i in insts]
    pids = {iid: pids_in(node, iid) for node, iid in placed}
    assert all(pids.values()) and all(cgroup_dirs(n, i) for n, i in placed)
    logs = wait_for(lambda: "hello from" in cluster.ctl("logs", insts[0]["id"]).stdout and
                    cluster.ctl("logs", insts[0]["id"]).stdout, what="log line")
    assert "hello from" in logs
    assert cluster.ctl("stop", "hello").returncode == 0
    wait_for(lambda: all(i["state"] == "stopped" for i in status(cluster, "hello")["instances"]),
             what="stopped")
    for node, iid in placed:
        assert not cgroup_dirs(node, iid), f"cgroups of {iid} left behind"
        for pid in pids[iid]:
            assert not Path(f"/proc/{pid}").exists(), f"process {pid} of {iid} still alive"
    # logs stay readable after the instance is gone
    assert "hello from" in cluster.ctl("logs", insts[0]["id"]).stdout


def test_a_container_is_confined_like_dockers(cluster, tmp_path):
    """Issue 15, black-box through scheduler, agent and runc: a seccomp filter, no user namespace of
    its own, root that is not the host's, the OOM killer's default score."""
    facts = ("grep Seccomp: /proc/self/status; unshare -U -r true 2>/dev/null; echo unshare=$?; "
             "echo map=$(cat /proc/self/uid_map); echo oom=$(cat /proc/self/oom_score_adj); exec sleep 3600")
    r = submit(cluster, tmp_path, job("confined", command=["/bin/sh", "-c", facts]), "--wait", "--timeout", "60")
    assert r.returncode == 0, r.stderr
    iid = status(cluster, "confined")["instances"][0]["id"]
    out = wait_for(lambda: (lambda t: "oom=" in t and t)(cluster.ctl("logs", iid).stdout), what="the facts")
    assert "Seccomp:\t2" in out and "unshare=1" in out and "oom=0" in out
    host, container, size = next(line for line in out.splitlines() if line.startswith("map="))[4:].split()
    assert (host, int(container) > 0, size) == ("0", True, "65536")      # container 0 is host uid > 0
    cluster.ctl("stop", "confined", "--purge")


def test_small_instances_fill_one_host_before_opening_another(cluster, tmp_path):
    r = submit(cluster, tmp_path, job("pack", count=6, cpu="250m"), "--wait", "--timeout", "60")
    assert r.returncode == 0, r.stderr
    nodes = [i["node"] for i in status(cluster, "pack")["instances"]]
    assert len(set(nodes)) == 1, nodes
    cluster.ctl("stop", "pack", "--purge")


def test_memory_limit_kills_only_the_offender(cluster, tmp_path):
    calm = submit(cluster, tmp_path, job("calm", memory="32Mi"), "--wait", "--timeout", "60")
    assert calm.returncode == 0, calm.stderr
    hog = job("hog", memory="32Mi", command=["/bin/sh", "-c", "dd if=/dev/zero of=/dev/null bs=200M count=1"],
              extra=NO_RESTART)
    submit(cluster, tmp_path, hog)
    inst = wait_for(lambda: next((i for i in status(cluster, "hog")["instances"]
                                  if i["state"] == "failed"), None), what="hog to fail")
    assert inst["reason"] == "OOMKilled"
    calm_inst = status(cluster, "calm")["instances"][0]
    assert calm_inst["state"] == "running" and calm_inst["node"] == inst["node"]
    assert pids_in(calm_inst["node"], calm_inst["id"])
    cluster.ctl("stop", "calm", "--purge")
    cluster.ctl("stop", "hog", "--purge")


def test_cpu_quota_holds_a_busy_loop_to_a_quarter_core(cluster, tmp_path):
    r = submit(cluster, tmp_path, job("spin", cpu="250m", command=["/bin/sh", "-c", "while :; do :; done"]),
               "--wait", "--timeout", "60")
    assert r.returncode == 0, r.stderr
    inst = status(cluster, "spin")["instances"][0]
    cgroups, rel = detect(), instance_path(inst["node"], inst["id"])
    time.sleep(0.5)
    u0, t0 = cgroups.usage(rel).cpu_seconds, time.monotonic()
    time.sleep(3)
    cores = (cgroups.usage(rel).cpu_seconds - u0) / (time.monotonic() - t0)
    # the agent measures the same: `ctl nodes` shows the node's measured usage beside allocated.
    # A rate needs two samples of the agent (every second here), so wait until one has been published.
    def measured():
        nodes = json.loads(cluster.ctl("nodes", "-o", "json").stdout)
        node = next(n for n in nodes if n["name"] == inst["node"])
        return node if node["usage"]["cpu"] > 0 else None
    node = wait_for(measured, timeout=15, what="a measured cpu rate")
    cluster.ctl("stop", "spin", "--purge")
    assert 0.18 <= cores <= 0.30, f"busy loop used {cores:.3f} cores under a 0.25 quota"
    assert 0.15 <= node["usage"]["cpu"] <= 0.35, node["usage"]
    assert node["usage"]["memory"] > 0


def test_a_container_over_its_disk_is_evicted_one_within_it_runs_on(cluster, tmp_path):
    """Issue 15 point 5: resources.disk holds the writable layer (and logs), as kubelet's
    ephemeral-storage limit does: measured by the agent, the offender killed and failed with why."""
    def disky(name, mib):
        return job(name, command=["/bin/sh", "-c", f"dd if=/dev/zero of=/fill bs=1M count={mib}; exec sleep 3600"],
                   extra=NO_RESTART).replace("memory: 32Mi}", "memory: 32Mi, disk: 8Mi}")
    assert submit(cluster, tmp_path, disky("within", 1), "--wait", "--timeout", "60").returncode == 0
    submit(cluster, tmp_path, disky("over", 20))
    inst = wait_for(lambda: next((i for i in status(cluster, "over")["instances"] if i["state"] == "failed"), None),
                    timeout=60, what="the one over its disk to be evicted")
    # the figure is the agent's measure when it looked, which may be while dd is still writing: any
    # over the 8Mi, and no more than dd's 20 MiB (with its few log lines) as format_bytes rounds it
    m = re.fullmatch(r"evicted: writable layer and logs use (\d+(?:\.\d+)?(?:Ki|Mi|Gi|Ti)), "
                     r"over its resources\.disk of 8Mi", inst["reason"])
    assert m and 8 << 20 < parse_bytes(m.group(1)) <= 21 << 20, inst["reason"]
    assert inst["reason"].endswith("over its resources.disk of 8Mi"), inst["reason"]
    assert "\n" not in inst["reason"]
    within = status(cluster, "within")["instances"][0]
    host = next(h for h in cluster.hosts if h.name == within["node"])

    def measured():   # the agent's own figure for it, on its /metrics: 1 MiB written, and the rest
        text = urllib.request.urlopen(f"http://{cluster.agent_metrics(host)}/metrics", timeout=5).read().decode()
        line = next((x for x in text.splitlines() if x.startswith("packyard_instance_disk_bytes")
                     and f'packyard_instance="{within["id"]}"' in x), None)
        return line is not None and float(line.split()[-1]) >= (1 << 20) and float(line.split()[-1])
    assert wait_for(measured, timeout=30, what="the disk of the one within it measured") < 8 << 20
    time.sleep(2 * cluster.usage_interval)                   # measured again since: still within
    within = status(cluster, "within")["instances"][0]
    assert (within["state"], within.get("restarts", 0)) == ("running", 0)
    cluster.ctl("stop", "within", "--purge")
    cluster.ctl("stop", "over", "--purge")


def test_exit_codes_are_reported(cluster, tmp_path):
    submit(cluster, tmp_path, job("fails", command=["/bin/sh", "-c", "exit 3"], extra=NO_RESTART))
    inst = wait_for(lambda: next((i for i in status(cluster, "fails")["instances"]
                                  if i["state"] in ("failed", "exited")), None), what="exit")
    assert inst["state"] == "failed" and inst["exit_code"] == 3
    submit(cluster, tmp_path, job("done", command=["/bin/true"], extra=NO_RESTART))
    inst = wait_for(lambda: next((i for i in status(cluster, "done")["instances"]
                                  if i["state"] in ("failed", "exited")), None), what="exit")
    assert inst["state"] == "exited" and inst["exit_code"] == 0
    # a batch job that runs to completion says so (and is not restarted)
    submit(cluster, tmp_path, job("batch", command=["/bin/true"], job_type="batch"))
    inst = wait_for(lambda: next((i for i in status(cluster, "batch")["instances"]
                                  if i["state"] in ("failed", "exited", "complete")), None), what="exit")
    assert inst["state"] == "complete" and inst["exit_code"] == 0


def test_a_restarted_agent_reregisters_and_adopts_its_containers(cluster, tmp_path):
    r = submit(cluster, tmp_path, job("steady", count=2), "--wait", "--timeout", "60")
    assert r.returncode == 0, r.stderr
    insts = status(cluster, "steady")["instances"]
    node = insts[0]["node"]
    host = next(h for h in cluster.hosts if h.name == node)
    before = {i["id"]: pids_in(i["node"], i["id"]) for i in insts}
    LocalCluster.kill(host.proc, sig=9)     # no goodbye: as if it crashed
    cluster.start_agent(host)
    nodes = wait_for(lambda: [n for n in json.loads(cluster.ctl("nodes", "-o", "json").stdout)
                              if n["name"] == node and n["state"] == "ready"], what="re-registered")
    assert nodes
    after = status(cluster, "steady")["instances"]
    assert [i["state"] for i in after] == ["running", "running"], after
    assert {i["id"]: pids_in(i["node"], i["id"]) for i in after} == before   # same processes
    cluster.ctl("stop", "steady", "--purge")


def test_a_restarted_scheduler_loses_no_job(cluster, tmp_path):
    r = submit(cluster, tmp_path, job("durable", count=3), "--wait", "--timeout", "60")
    assert r.returncode == 0, r.stderr
    before = status(cluster, "durable")
    LocalCluster.kill(cluster.scheduler, sig=9)
    cluster.start_scheduler()
    after = status(cluster, "durable")
    assert after["instances"] == before["instances"] and after["version"] == before["version"]
    # and it still schedules
    r = submit(cluster, tmp_path, job("later"), "--wait", "--timeout", "60")
    assert r.returncode == 0, r.stderr
    cluster.ctl("stop", "durable", "--purge")
    cluster.ctl("stop", "later", "--purge")


@opt_in("a slow proof")
def test_agents_side_by_side_in_one_network_namespace_keep_to_their_own(request, tmp_path):
    """Two agents in the same namespace (as on one real host): each its own bridge, subnet,
    cgroup subtree and state dir; nothing global collides."""
    c = LocalCluster(searchable_dir(request, "shared"), hosts=2, prefix="ps", net="10.213.96.0/24",
                     etcd_port=23730, scheduler_port=17730, capacity="cpu=1,memory=1Gi",
                     shared_netns=True, labels=[{"n": "1"}, {"n": "2"}])
    c.up()
    try:
        for n in ("1", "2"):
            text = job(f"side{n}", count=2) + f'    constraints: [{{attribute: label.n, value: "{n}"}}]\n'
            r = submit(c, tmp_path, text, "--wait", "--timeout", "60")
            assert r.returncode == 0, r.stderr
        side = {n: status(c, f"side{n}")["instances"] for n in ("1", "2")}
        assert {i["node"] for i in side["1"]} == {"ps-host1"} and {i["node"] for i in side["2"]} == {"ps-host2"}
        subnets = {n: {".".join(i["address"].split(".")[:3]) for i in side[n]} for n in side}
        assert len(subnets["1"]) == len(subnets["2"]) == 1 and subnets["1"] != subnets["2"]
        for n in side:
            for i in side[n]:
                assert cgroup_dirs(i["node"], i["id"])
    finally:
        c.down()
    assert not list(Path("/sys/fs/cgroup").glob("*/packyard/ps-host*"))


def test_a_crashing_service_is_restarted_in_place_with_growing_delays(cluster, tmp_path):
    submit(cluster, tmp_path, job("crash", command=["/bin/sh", "-c", "sleep 0.2; exit 1"],
                                  extra="    restart: {attempts: 3, interval: 1m, delay: 300ms}\n"))
    seen_waiting = wait_for(lambda: next((i for i in status(cluster, "crash")["instances"]
                                          if i["state"] == "starting" and i["restarts"] >= 1), None),
                            what="a restart waiting")
    assert "restarting in" in seen_waiting["reason"] and seen_waiting["exit_code"] == 1
    inst = wait_for(lambda: next((i for i in status(cluster, "crash")["instances"] if i["state"] == "failed"), None),
                    timeout=30, what="restarts exhausted")
    assert inst["restarts"] == 3 and inst["exit_code"] == 1 and inst["node"] == seen_waiting["node"]
    assert inst["id"] == seen_waiting["id"]                        # in place: the same instance
    messages = [e["message"] for e in inst["events"]]
    assert [m.split("; ")[1] for m in messages[:3]] == [
        "restarting in 300ms (attempt 1 of 3)", "restarting in 600ms (attempt 2 of 3)",
        "restarting in 1s200ms (attempt 3 of 3)"], messages
    assert messages[3] == "exited with code 1; not restarted: 3 restarts in 1m already"
    times = [e["at"] for e in inst["events"]]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps == sorted(gaps) and gaps[2] - gaps[0] > 0.6, gaps   # the waits grow
    table = cluster.ctl("status", "crash").stdout
    assert "RESTARTS" in table and "not restarted" in table
    cluster.ctl("stop", "crash", "--purge")


def test_restarts_exhausted_the_instance_is_rescheduled_on_another_node(cluster, tmp_path):
    submit(cluster, tmp_path, job("wander", command=["/bin/sh", "-c", "sleep 0.2; exit 1"], extra=(
        "    restart: {attempts: 1, interval: 1m, delay: 200ms}\n"
        "    reschedule: {attempts: 1, interval: 1h, delay: 1s, unlimited: false}\n")))

    def both_failed():
        insts = status(cluster, "wander")["instances"]
        failed = [i for i in insts if i["state"] == "failed"]
        return insts if len(failed) == 2 else None
    insts = wait_for(both_failed, timeout=40, what="the first and its replacement to fail")
    first, second = sorted(insts, key=lambda i: i["id"])
    assert (first["id"], second["id"]) == ("wander.main.0-1", "wander.main.0-2")
    assert first["desired"] == "stop" and second["desired"] == "run"        # attempts: 1, so no third
    assert second["node"] != first["node"]                                 # away from where it failed
    assert first["restarts"] == 1 and second["restarts"] == 1
    messages = [e["message"] for e in second["events"]]
    assert messages[0] == f"rescheduled from {first['node']} after 1 failed restarts", messages
    placed_after = second["events"][1]["at"] - second["events"][0]["at"]
    assert placed_after >= 1.0, second["events"]          # the reschedule delay, then a run and an exit
    cluster.ctl("stop", "wander", "--purge")


def test_submit_wait_of_a_batch_job_waits_for_completion(cluster, tmp_path):
    ok = submit(cluster, tmp_path, job("crunch", count=2, command=["/bin/sh", "-c", "sleep 0.3"], job_type="batch"),
                "--wait", "--timeout", "60", "-o", "json")
    assert ok.returncode == 0, ok.stderr
    assert {i["state"] for i in json.loads(ok.stdout)["instances"]} == {"complete"}
    assert json.loads(ok.stdout)["state"] == "complete"          # the job is complete when every instance is
    bad = submit(cluster, tmp_path, job("broken", count=2, job_type="batch",
                                        command=["/bin/sh", "-c", "exit 3"], extra=(
                                            "    restart: {attempts: 1, interval: 1m, delay: 100ms}\n"
                                            "    reschedule: {attempts: 0, unlimited: false}\n")),
                 "--wait", "--timeout", "60")
    assert bad.returncode == 1, (bad.returncode, bad.stderr)
    assert "2 instance(s) of broken did not complete" in bad.stderr and "failed with exit code 3" in bad.stderr
    assert status(cluster, "broken")["state"] == "failed"
    for name in ("crunch", "broken"):
        cluster.ctl("stop", name, "--purge")


def test_failing_checks_restart_the_instance_http_against_busybox_httpd_and_exec(cluster, tmp_path):
    # each serves /healthz (and has /tmp/ok) for 4 s after it starts, then no more; 5 failures in a
    # row keep it `failing` for over a second, long enough for a poll through ctl to see it under load
    # (with 1.5 s of passing, a loaded machine's first poll after `submit --wait` came too late once)
    web = ("mkdir -p /www; echo ok > /www/healthz; (sleep 4; rm /www/healthz) & "
           "trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait")
    worker = "touch /tmp/ok; (sleep 4; rm /tmp/ok) & trap 'exit 0' TERM; sleep 3600 & wait"
    text = "name: probed\ngroups:\n" + "".join(
        f"  - name: {name}\n    resources: {{cpu: 100m, memory: 32Mi}}\n"
        f"    container: {{command: {json.dumps(['/bin/sh', '-c', command])}}}\n"
        f"    restart: {{attempts: 3, interval: 1m, delay: 200ms}}\n"
        f"    check: {check}\n"
        for name, command, check in (
            ("web", web, "{type: http, port: 8080, path: /healthz, interval: 300ms, timeout: 250ms, failures: 5, grace: 300ms}"),
            # (an exec check starts `runc exec`, which took over 250 ms on a loaded machine once in
            # CI: the failure then read "timed out" rather than the command's exit code)
            ("worker", worker, "{type: exec, command: [/bin/sh, -c, test -f /tmp/ok], interval: 1s, timeout: 1s, "
                               "failures: 5, grace: 300ms}")))
    r = submit(cluster, tmp_path, text, "--wait", "--timeout", "60", "-o", "json")
    assert r.returncode == 0, r.stderr
    seen: dict[str, set] = {"web": set(), "worker": set()}      # (health, restarts) of each, as polled

    def restarted():
        insts = status(cluster, "probed")["instances"]
        for i in insts:
            seen[i["group"]].add((i["health"], i["restarts"]))
        return all(i["restarts"] >= 1 for i in insts) and insts
    after = wait_for(restarted, timeout=30, what="both restarted by their failing checks")
    for group in seen:             # each was seen passing, then failing, before its first restart
        assert {("passing", 0), ("failing", 0)} <= seen[group], (seen, [(i["reason"], i["events"]) for i in after])
    by_group = {i["group"]: i for i in after}
    web_events = [e["message"] for e in by_group["web"]["events"]]
    assert web_events[0].startswith("check http :8080/healthz failed 5 times: HTTP 404; restarting in 200ms"), web_events
    worker_events = [e["message"] for e in by_group["worker"]["events"]]
    assert worker_events[0].startswith("check exec /bin/sh failed 5 times: exit code 1; restarting in 200ms"), \
        worker_events
    # restarted in place: the same instances on the same nodes, serving again
    first = {i["group"]: i for i in json.loads(r.stdout)["instances"]}
    assert {(g, i["id"], i["node"]) for g, i in by_group.items()} == \
        {(g, i["id"], i["node"]) for g, i in first.items()}
    wait_for(lambda: any(i["health"] == "passing" and i["restarts"] >= 1
                         for i in status(cluster, "probed")["instances"]), what="passing again after a restart")
    table = cluster.ctl("status", "probed").stdout
    assert "HEALTH" in table
    cluster.ctl("stop", "probed", "--purge")


def test_an_agent_restarted_during_a_restart_wait_restarts_it_once(cluster, tmp_path):
    # runs 1.5 s before it ends: long enough for a poll through ctl to see it running under load
    submit(cluster, tmp_path, job("patient", command=["/bin/sh", "-c", "sleep 1.5; exit 2"],
                                  extra="    restart: {attempts: 3, interval: 10m, delay: 3s}\n"))
    waiting = wait_for(lambda: next((i for i in status(cluster, "patient")["instances"]
                                     if i["state"] == "starting" and i["exit_code"] == 2), None),
                       timeout=30, what="the first restart waiting")
    host = next(h for h in cluster.hosts if h.name == waiting["node"])
    LocalCluster.kill(host.proc, sig=9)
    cluster.start_agent(host)
    again = wait_for(lambda: next((i for i in status(cluster, "patient")["instances"]
                                   if i["state"] == "running" and i["restarts"] == 1), None),
                     timeout=30, what="restarted once by the new agent")
    assert again["id"] == waiting["id"] and again["node"] == waiting["node"]
    # started once: the next end is the second restart, waiting the doubled delay (6 s)
    nxt = wait_for(lambda: next((i for i in status(cluster, "patient")["instances"]
                                 if i["state"] == "starting" and i["restarts"] == 1), None),
                   timeout=30, what="the second wait")
    assert "restarting in 6s (attempt 2 of 3)" in nxt["reason"], nxt
    assert [e["message"].split("; ")[1] for e in nxt["events"]] == [
        "restarting in 3s (attempt 1 of 3)", "restarting in 6s (attempt 2 of 3)"], nxt["events"]
    cluster.ctl("stop", "patient", "--purge")


@opt_in("a slow proof")
def test_a_system_job_runs_on_every_node_including_one_that_joins_and_not_elsewhere_when_one_leaves(
        request, tmp_path):
    """Two agents, then a third joins (its instance running within seconds); it leaves (its
    instance lost, nothing started elsewhere) and comes back (a new instance on it)."""
    c = LocalCluster(searchable_dir(request, "system"), hosts=3, prefix="pj", net="10.213.200.0/24",
                     etcd_port=23890, scheduler_port=17890, capacity="cpu=1,memory=1Gi",
                     shared_netns=True, lease_ttl=3)
    every, c.hosts = c.hosts, c.hosts[:2]      # the third is not up yet
    late = every[2]
    try:
        c.up()
        c.hosts = every                        # down() ends all three, and cleans up after them
        text = ("name: sys\ntype: system\ngroups:\n  - name: main\n"
                "    resources: {cpu: 100m, memory: 32Mi}\n"
                "    container: {command: [/bin/sleep, '3600']}\n")
        r = submit(c, tmp_path, text, "--wait", "--timeout", "60")
        assert r.returncode == 0, r.stderr

        def running_on(nodes):
            live = [i for i in status(c, "sys")["instances"] if i["desired"] == "run"]
            ok = sorted((i["node"], i["state"]) for i in live) == [(n, "running") for n in sorted(nodes)]
            return live if ok else None
        first = wait_for(lambda: running_on({"pj-host1", "pj-host2"}), what="one instance on each agent")
        assert all(pids_in(i["node"], i["id"]) for i in first)

        c.start_agent(late)
        joined = time.monotonic()
        insts = wait_for(lambda: running_on({"pj-host1", "pj-host2", "pj-host3"}), timeout=10,
                         what="the joining node's instance running")
        took = time.monotonic() - joined
        assert took < 5, f"the joining node's instance ran {took:.1f} s after it was ready"
        third = next(i for i in insts if i["node"] == "pj-host3")
        assert third["id"] == "sys.main.2-1" and pids_in("pj-host3", third["id"])

        LocalCluster.kill(late.proc)           # its lease (3 s) runs out: the node is down
        wait_for(lambda: next((i for i in status(c, "sys")["instances"]
                               if i["id"] == third["id"] and i["state"] == "lost"), None),
                 timeout=20, what="the departed node's instance lost")
        time.sleep(1.0)                        # several evaluations: nothing replaces it elsewhere
        assert running_on({"pj-host1", "pj-host2"}), status(c, "sys")["instances"]

        c.start_agent(late)                    # back: a new instance on it, the old one stopped
        back = wait_for(lambda: running_on({"pj-host1", "pj-host2", "pj-host3"}), timeout=15,
                        what="an instance on the returned node")
        assert next(i for i in back if i["node"] == "pj-host3")["id"] == "sys.main.2-2"
        wait_for(lambda: not pids_in("pj-host3", third["id"]), timeout=15, what="the old copy stopped")
    finally:
        c.hosts = every
        c.down()
    assert not list(Path("/sys/fs/cgroup").glob("*/packyard/pj-host*"))


ROLL = "    update: {max_parallel: 1, min_healthy_time: 500ms, healthy_deadline: 20s, progress_deadline: 30s%s}\n"


def rolled(cluster, name, version, states=("successful",), timeout=60):
    return wait_for(lambda: (d := status(cluster, name)["deployment"]) and d["version"] == version
                    and d["state"] in states and d, timeout=timeout, what=f"deployment of {name} v{version}")


@opt_in("a slow proof")
def test_a_rolling_update_keeps_all_but_max_parallel_running_and_history_says_what_changed(cluster, tmp_path):
    r = submit(cluster, tmp_path, job("roll", count=4, command=["/bin/sleep", "3600"], extra=ROLL % ""),
               "--wait", "--timeout", "60")
    assert r.returncode == 0, r.stderr
    first = rolled(cluster, "roll", 1)
    assert first["groups"] == {"main": {"desired": 4, "placed": 4, "healthy": 4, "unhealthy": 0}}
    submit(cluster, tmp_path, job("roll", count=4, command=["/bin/sleep", "3601"], extra=ROLL % ""))
    lowest, seen_running = 4, set()
    while True:
        s = status(cluster, "roll")
        live = [i for i in s["instances"] if i["desired"] == "run"]
        lowest = min(lowest, sum(1 for i in live if i["state"] == "running"))
        seen_running |= {i["id"] for i in live if i["state"] == "running"}
        d = s["deployment"]
        if d["version"] == 2 and d["state"] != "running":
            break
    assert d["state"] == "successful" and d["groups"]["main"]["healthy"] == 4, d
    assert lowest >= 3, lowest                                  # count - max_parallel
    assert all(i["id"].endswith("-2") for i in s["instances"] if i["desired"] == "run")
    history = json.loads(cluster.ctl("history", "roll", "-o", "json").stdout)
    assert [(v["version"], v["stable"], v["current"]) for v in history] == [(1, True, False), (2, True, True)]
    assert history[1]["changes"] == ['groups[main].container.command: ["/bin/sleep","3600"] → ["/bin/sleep","3601"]']
    table = cluster.ctl("status", "roll").stdout
    assert "deployment of version 2: successful" in table
    # back to version 1, rolled out the same way
    back = cluster.ctl("rollback", "roll", "-o", "json")
    assert back.returncode == 0 and json.loads(back.stdout)["version"] == 3, back.stderr
    rolled(cluster, "roll", 3)
    last = json.loads(cluster.ctl("history", "roll", "-o", "json").stdout)[-1]
    assert last["note"] == "rollback to version 1" and last["changes"] == [
        'groups[main].container.command: ["/bin/sleep","3601"] → ["/bin/sleep","3600"]']
    bad = cluster.ctl("rollback", "roll", "--version", "7")
    assert bad.returncode == 2 and "job 'roll' has no version 7 (kept: 1, 2, 3)" in bad.stderr
    assert cluster.ctl("rollback", "nosuchjob").returncode == 2
    cluster.ctl("stop", "roll")


@opt_in("a slow proof")
def test_a_version_whose_command_exits_fails_and_is_reverted_automatically(cluster, tmp_path):
    r = submit(cluster, tmp_path, job("flaky", count=3, extra=ROLL % ""), "--wait", "--timeout", "60")
    assert r.returncode == 0, r.stderr
    rolled(cluster, "flaky", 1)
    before = {i["id"] for i in status(cluster, "flaky")["instances"] if i["desired"] == "run"}
    waited = submit(cluster, tmp_path, job("flaky", count=3, command=["/bin/sh", "-c", "exit 3"],
                                           extra=ROLL % ", auto_revert: true" + "    restart: {attempts: 1, delay: 100ms}\n"),
                    "--wait", "--timeout", "60")
    assert waited.returncode == 1 and "deployment of version 2: reverted" in waited.stderr, waited.stderr
    d = rolled(cluster, "flaky", 2, states=("reverted",))
    assert "version 2 failed: flaky.main.0-2 is unhealthy" in d["description"], d
    assert "reverted to version 1 (as version 3)" in d["description"]
    d = wait_for(lambda: "rolled back" in (d := status(cluster, "flaky")["deployment"])["description"] and d,
                 timeout=60, what="rolled back")
    s = status(cluster, "flaky")
    assert s["version"] == 3 and d["state"] == "reverted"
    live = [i for i in s["instances"] if i["desired"] == "run"]
    assert all(i["state"] == "running" for i in live) and len(live) == 3
    assert len(before & {i["id"] for i in live}) >= 2          # only max_parallel of the old ones were touched
    history = json.loads(cluster.ctl("history", "flaky", "-o", "json").stdout)
    assert [(v["version"], v["stable"]) for v in history] == [(1, True), (2, False), (3, True)]
    assert history[2]["note"] == "revert to version 1 after version 2 failed"
    cluster.ctl("stop", "flaky")


def test_a_bad_second_version_goes_back_to_a_first_one_not_yet_stable(cluster, tmp_path):
    """What users run: `submit v1 --wait` returns once v1 runs, before its deployment can have
    succeeded (min_healthy_time left at its default, 10 s); then v2, whose command exits, with
    auto_revert. No version is stable yet: v2 goes back to v1, the version it replaced, whose
    deployment had not failed (scheduler/versions.py way_back)."""
    r = submit(cluster, tmp_path, job("undo", count=2), "--wait", "--timeout", "60")
    assert r.returncode == 0, r.stderr
    assert status(cluster, "undo")["deployment"]["state"] == "running"      # v1 not stable yet
    # restarted once at once (the default waits 15 s before its first restart, which fails it)
    bad = job("undo", count=2, command=["/bin/sh", "-c", "exit 3"],
              extra="    update: {auto_revert: true}\n    restart: {attempts: 1, delay: 100ms}\n")
    waited = submit(cluster, tmp_path, bad, "--wait", "--timeout", "60")
    reason = waited.stderr.strip().splitlines()[-1]
    assert waited.returncode == 1 and reason.startswith(
        "error: deployment of version 2: reverted (version 2 failed: undo.main.0-2 is unhealthy"), waited.stderr
    assert "; reverted to version 1 (as version 3))" in reason, reason
    s = status(cluster, "undo")
    d = s["deployment"]
    assert (s["version"], d["version"], d["state"], d["target"], d["reverted_to"]) == (3, 2, "reverted", 3, 1), d
    history = json.loads(cluster.ctl("history", "undo", "-o", "json").stdout)
    assert [(v["version"], v["failed"], v["same_as"]) for v in history] == [(1, False, None), (2, True, None), (3, False, 1)]
    assert history[2]["note"] == "revert to version 1 after version 2 failed" and history[2]["current"]
    # v1's content runs again: both slots run its sleep (the replaced one as version 3)
    live = wait_for(lambda: (live := [i for i in status(cluster, "undo")["instances"] if i["desired"] == "run"])
                    and all(i["state"] == "running" for i in live) and live, timeout=30, what="both running")
    assert sorted((i["id"], i["version"]) for i in live) == [("undo.main.0-3", 3), ("undo.main.1-1", 1)]
    for i in live:
        commands = {Path(f"/proc/{pid}/cmdline").read_bytes() for pid in pids_in(i["node"], i["id"])}
        assert b"/bin/sleep\x003600\x00" in commands, (i["id"], commands)
    d = rolled(cluster, "undo", 2, states=("reverted",))
    wait_for(lambda: "rolled back" in status(cluster, "undo")["deployment"]["description"], timeout=40,
             what="rolled back (v3 healthy for min_healthy_time)")
    history = json.loads(cluster.ctl("history", "undo", "-o", "json").stdout)
    assert [(v["version"], v["stable"], v["failed"]) for v in history] == [(1, False, False), (2, False, True), (3, True, False)]
    cluster.ctl("stop", "undo")


@opt_in("a slow proof")
def test_a_canary_waits_for_ctl_promote_and_plan_shows_the_change(cluster, tmp_path):
    canary = ROLL % ", canary: 1"
    r = submit(cluster, tmp_path, job("bird", count=2, extra=canary), "--wait", "--timeout", "60")
    assert r.returncode == 0, r.stderr
    rolled(cluster, "bird", 1)
    assert cluster.ctl("promote", "bird").returncode == 2          # nothing to promote
    changed = job("bird", count=2, command=["/bin/sleep", "3599"], extra=canary)
    (tmp_path / "bird2.yaml").write_text(changed)
    plan = json.loads(cluster.ctl("plan", str(tmp_path / "bird2.yaml"), "-o", "json").stdout)
    assert plan["replaces"] == 2 and plan["changes"] == [
        'groups[main].container.command: ["/bin/sleep","3600"] → ["/bin/sleep","3599"]']
    waited = submit(cluster, tmp_path, changed, "--wait", "--timeout", "60")   # until the canary is healthy
    assert waited.returncode == 0 and "`ctl promote bird` rolls out the rest" in waited.stderr, waited.stderr
    d = rolled(cluster, "bird", 2, states=("awaiting promotion",), timeout=1)
    live = [i for i in status(cluster, "bird")["instances"] if i["desired"] == "run"]
    assert sorted(i["id"] for i in live) == ["bird.main.0-1", "bird.main.0-2", "bird.main.1-1"]
    assert all(i["state"] == "running" for i in live) and d["groups"]["main"]["healthy"] == 1
    promoted = cluster.ctl("promote", "bird", "-o", "json")
    assert promoted.returncode == 0 and json.loads(promoted.stdout)["state"] == "running", promoted.stderr
    rolled(cluster, "bird", 2)
    live = sorted(i["id"] for i in status(cluster, "bird")["instances"] if i["desired"] == "run")
    assert live == ["bird.main.0-2", "bird.main.1-2"]
    cluster.ctl("stop", "bird")
