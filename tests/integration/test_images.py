"""Registry images on a real local cluster (issue 16): scheduler, two agents in their own network
namespaces with mutual TLS (each agent may write only its own node's keys), runc, and Debian's
docker-registry on the bridge. What the agent-level tests cannot show: placement's image locality
from the stores the agents publish, a pull failure going through the restart policy end to end,
and an agent killed in the middle of a pull."""
import functools
import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from ctl.local import LocalCluster
from tests.agent.images.registry import Throttle, busybox_layer, has, write_layout
from tests.conftest import UNTIL_STOPPED, opt_in, searchable_dir
from tests.conftest import wait_for as poll

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
              pytest.mark.skipif(not (has("runc") and has("docker-registry") and has("skopeo")),
                                 reason="needs runc, docker-registry and skopeo")]
MI = 1 << 20
EXAMPLE = "packyard/busybox:1"          # pushed by ctl/localregistry.py at up()
wait_for = functools.partial(poll, interval=0.2)
NO_RESCHEDULE = "    reschedule: {attempts: 0, unlimited: false}\n"    # the test looks at the instance itself


@pytest.fixture(scope="module")
def cluster(request):
    c = LocalCluster(searchable_dir(request, "images-cluster"), hosts=2, prefix="im", net="10.213.236.0/24",
                     etcd_port=23936, scheduler_port=17936, capacity="cpu=2,memory=1Gi", registry=True,
                     tls=True, lease_ttl=30, confirm_timeout=10)   # an agent restart must not look like node loss
    c.up()
    yield c
    c.down()
    assert not list(Path("/sys/fs/cgroup").glob("*/packyard/im-host*"))
    assert "im-host" not in Path("/proc/self/mounts").read_text()


def submit(cluster, tmp_path, name, text, *args):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return cluster.ctl("submit", str(path), *args)


def job(name, image, command=("/bin/sh", "-c", UNTIL_STOPPED), extra=""):   # stop waited for: no grace
    return (f"name: {name}\ntype: service\ngroups:\n  - name: main\n    count: 1\n"
            f"    resources: {{cpu: 100m, memory: 32Mi}}\n"
            f"    container: {{image: \"{image}\", command: {json.dumps(list(command))}}}\n" + extra)


def pinned(node):
    return f'    constraints: [{{attribute: node.name, value: "{node}"}}]\n'


def status(cluster, name):
    r = cluster.ctl("status", name, "-o", "json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def nodes(cluster):
    r = cluster.ctl("nodes", "-o", "json")
    assert r.returncode == 0, r.stderr
    return {n["name"]: n for n in json.loads(r.stdout)}


def stop_and_wait_gone(cluster, name):
    cluster.ctl("stop", name, check=True)
    wait_for(lambda: all(n["allocated"]["cpu"] == 0 and n["allocated"]["memory"] == 0 for n in nodes(cluster).values()),
             timeout=60, what=f"{name}'s reservations released")


def store_root(cluster, host) -> Path:
    [root] = host.state_dir.glob("**/images/registry")
    return root


def test_a_job_lands_where_its_image_already_is_among_otherwise_equal_hosts(cluster, tmp_path):
    image = f"{cluster.gateway}:5000/{EXAMPLE}"
    assert all(n["images"] == [] for n in nodes(cluster).values())        # nothing pulled yet
    # where the image job would go on two empty, equal hosts: the control
    spec = tmp_path / "second.yaml"
    spec.write_text(job("second", image))
    r = cluster.ctl("plan", str(spec), "-o", "json")
    assert r.returncode == 0, r.stderr
    [planned] = json.loads(r.stdout)["instances"]
    default = planned["node"]
    other = next(h.name for h in cluster.hosts if h.name != default)

    # another job pulls the image on the other host, then goes: both hosts are empty again
    r = submit(cluster, tmp_path, "first", job("first", image, extra=pinned(other)), "--wait", "--timeout", "90")
    assert r.returncode == 0, r.stdout + r.stderr
    [first] = status(cluster, "first")["instances"]
    assert first["node"] == other and first["image_digest"].startswith("sha256:")
    held = wait_for(lambda: nodes(cluster)[other]["images"], what="the pulling agent to publish its image")
    assert held == [{"digest": first["image_digest"], "references": [image], "bytes": held[0]["bytes"]}]
    assert held[0]["bytes"] > 500_000 and nodes(cluster)[default]["images"] == []
    stop_and_wait_gone(cluster, "first")

    # the same job as planned before now goes to the host holding the image
    r = submit(cluster, tmp_path, "second", job("second", image), "--wait", "--timeout", "60")
    assert r.returncode == 0, r.stdout + r.stderr
    [second] = status(cluster, "second")["instances"]
    assert second["node"] == other != default
    stop_and_wait_gone(cluster, "second")


def test_a_missing_tag_fails_through_the_restart_policy_with_the_registrys_reason(cluster, tmp_path):
    image = f"{cluster.gateway}:5000/packyard/busybox:missing"
    r = submit(cluster, tmp_path, "notag", job("notag", image, extra=(
        "    restart: {attempts: 2, interval: 10m, delay: 500ms}\n" + NO_RESCHEDULE)))
    assert r.returncode == 0, r.stderr
    waiting = wait_for(lambda: next((i for i in status(cluster, "notag")["instances"]
                                     if i["state"] == "starting" and "restarting in" in i["reason"]), None),
                       timeout=60, what="a pull waiting to be tried again")
    assert "manifest unknown" in waiting["reason"], waiting
    failed = wait_for(lambda: next((i for i in status(cluster, "notag")["instances"] if i["state"] == "failed"), None),
                      timeout=60, what="the restarts to be used up")
    assert failed["id"] == waiting["id"] and failed["restarts"] == 2
    assert failed["reason"].startswith(f"cannot pull {image}: ") and "manifest unknown" in failed["reason"], failed
    messages = [e["message"] for e in failed["events"]]
    assert [m.rsplit("; ", 1)[1] for m in messages[:2]] == [
        "restarting in 500ms (attempt 1 of 2)", "restarting in 1s (attempt 2 of 2)"], messages
    assert "not restarted: 2 restarts in 10m already" in messages[2], messages
    table = cluster.ctl("status", "notag").stdout
    assert "manifest unknown" in table
    cluster.ctl("stop", "notag", check=True)


@opt_in("a slow proof")
def test_an_agent_killed_mid_pull_leaves_no_partial_layer_and_the_next_pull_runs_the_right_content(
        cluster, tmp_path, request):
    host = cluster.hosts[0]
    big = os.urandom(24 * MI)        # random: gzip cannot shrink it, the pull takes a while through the throttle
    want = hashlib.sha256(big).hexdigest()
    layout = write_layout(searchable_dir(request, "layout") / "big", "1",
                          [busybox_layer([("bin/sha256sum", "link", "busybox"), ("data", "dir", None),
                                          ("data/big", "file", big, 0o644)])],
                          {"Env": ["PATH=/bin"]})
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:1",
                    f"docker://{cluster.gateway}:5000/team/big:1"], check=True, capture_output=True)
    manifest = json.loads((layout / "blobs/sha256" / json.loads((layout / "index.json").read_text())
                           ["manifests"][0]["digest"].split(":")[1]).read_text())
    layer = manifest["layers"][0]["digest"].split(":")[1]

    throttle = Throttle(cluster.gateway, (cluster.gateway, 5000), rate=2 * MI).start()
    try:
        # the agent trusts the throttle's plain HTTP (not loopback) once its registry config says so
        config = json.loads(cluster.registry_config.read_text())
        config["insecure"].append(throttle.address)
        cluster.registry_config.write_text(json.dumps(config))
        LocalCluster.kill(host.proc)
        cluster.start_agent(host)
        image = f"{throttle.address}/team/big:1"
        submit(cluster, tmp_path, "big", job("big", image, command=("/bin/sh", "-c", "sha256sum /data/big; exec sleep 3600"),
                                             extra=pinned(host.name) + NO_RESCHEDULE))

        def pulling():
            insts = status(cluster, "big")["instances"]
            reason = insts[0]["reason"] if insts else ""
            return reason.startswith("pulling ") and int(reason.split()[1].split("/")[0]) >= 3 and reason
        wait_for(pulling, timeout=60, what="the pull under way")
        root = store_root(cluster, host)
        LocalCluster.kill(host.proc, sig=9)          # no goodbye, in the middle of the pull

        # skopeo went with it (nothing goes on writing into the store), the partial blob is there,
        # nothing of the layer was kept
        wait_for(lambda: not _processes_with(throttle.address), timeout=10, what="skopeo to die with the agent")
        partial = [p for p in root.glob("tmp/pull-*/*") if p.name.startswith("oci-put-blob")]
        assert partial and 0 < sum(p.stat().st_size for p in partial) < len(big)
        assert not (root / "blobs/sha256" / layer).exists()
        assert not list(root.glob(f"layers/*/{layer}"))

        throttle.rate = None                         # the registry is fast again
        cluster.start_agent(host)
        # the restarted agent goes on with the start it had not finished: the same instance pulls again
        running = wait_for(lambda: next((i for i in status(cluster, "big")["instances"] if i["state"] == "running"),
                                        None), timeout=90, what="the instance to run after the agent's restart")
        [only] = status(cluster, "big")["instances"]
        assert only["id"] == running["id"] and running["node"] == host.name and running["restarts"] == 0
        log = wait_for(lambda: cluster.ctl("logs", running["id"]).stdout.strip(), timeout=20, what="its log")
        assert log.split()[0] == want                # the whole layer, not a partial one
        assert not partial[0].exists() and not list(root.glob("tmp/pull-*")) and not list(root.glob("tmp/layer-*"))
        for blob in (root / "blobs/sha256").iterdir():       # every blob kept is what its name says
            assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
        assert list(root.glob(f"layers/*/{layer}"))
        cluster.ctl("stop", "big", check=True)
    finally:
        throttle.close()


def _processes_with(text: str) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if text.encode() in (d / "cmdline").read_bytes():
                    out.append(int(d.name))
            except OSError:
                pass
    return out
