"""Issue 15 points 6-8 black-box: job paths through ctl submit → scheduler → agent → runc, on a real
local cluster. The driver-level proofs are in tests/agent/drivers/test_paths_beneath.py; here the
contract users see: an image in another instance's writable layer or in etcd's data, or a symlink
swapped to lead outside after submission, ends the instance `failed` with a one-line reason in
`ctl status -o json`, and nothing of it runs. (A VM's qcow2 with a backing file: test_vms.py.)

The agent allows the whole cluster directory (`--allowed-dirs`), so that what refuses these paths
is the protection of state and etcd dirs and the open beneath the allowed dir, not a path outside
the allowed dirs."""
import functools
import json
import os
import shutil
from pathlib import Path

import pytest

from agent.drivers.container.runc import container_id
from ctl.local import LocalCluster
from tests.conftest import UNTIL_STOPPED, opt_in, searchable_dir
from tests.conftest import wait_for as poll

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
              pytest.mark.skipif(shutil.which("runc") is None, reason="runc not installed")]
wait_for = functools.partial(poll, timeout=60, interval=0.1)


@pytest.fixture(scope="module")
def cluster(request):
    workdir = searchable_dir(request, "paths")
    # one host of one core: a job of a whole core waits (pending) while another holds it
    c = LocalCluster(workdir, hosts=1, prefix="pq", net="10.213.216.0/24", etcd_port=23940,
                     scheduler_port=17940, capacity="cpu=1,memory=1Gi", lease_ttl=30, confirm_timeout=10,
                     agent_args=("--allowed-dirs", str(workdir)))
    c.up()
    yield c
    c.down()
    assert "pq-host" not in Path("/proc/self/mounts").read_text()


@pytest.fixture(scope="module")
def image(cluster):
    """A directory image in the allowed dir: busybox and the applets the tests run."""
    root = cluster.workdir / "images" / "good"
    (root / "bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", root / "bin" / "busybox")
    for applet in ("sh", "sleep", "echo"):
        (root / "bin" / applet).symlink_to("busybox")
    for d in (root.parent, root, root / "bin"):
        d.chmod(0o755)
    return root


def submit(cluster, tmp_path, name, image_path, cpu="100m", command=("/bin/sleep", "3600")):
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\ngroups:\n  - name: main\n    resources: {{cpu: {cpu}, memory: 32Mi}}\n"
                    f"    restart: {{attempts: 0}}\n"
                    f"    container: {{image: {image_path}, command: {json.dumps(list(command))}}}\n")
    r = cluster.ctl("submit", str(path))
    assert r.returncode == 0, r.stderr


def instances(cluster, job):
    r = cluster.ctl("status", job, "-o", "json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["instances"]


def failed(cluster, job):
    return wait_for(lambda: next((i for i in instances(cluster, job) if i["state"] == "failed"), None),
                    what=f"{job} to fail")


def running(cluster, job):
    return wait_for(lambda: next((i for i in instances(cluster, job) if i["state"] == "running"), None),
                    what=f"{job} to run")


def stop(cluster, *jobs):
    for j in jobs:
        cluster.ctl("stop", j)
    wait_for(lambda: all(i["state"] not in ("running", "starting", "pending")
                         for j in jobs for i in instances(cluster, j)), what="stopped")


def test_an_image_in_another_instances_writable_layer_is_refused(cluster, tmp_path, image):
    submit(cluster, tmp_path, "owner", image, command=("/bin/sh", "-c", f"echo secret > /secret; {UNTIL_STOPPED}"))
    owner = running(cluster, "owner")
    host = cluster.hosts[0]
    upper = host.state_dir / "instances" / container_id(owner["id"]) / "upper"
    wait_for(lambda: (upper / "secret").exists(), what="the owner's write in its layer")
    # its layer is in the allowed dir as far as paths go: the agent's state dir is what refuses it
    submit(cluster, tmp_path, "thief", upper, command=("/bin/sleep", "3600"))
    inst = failed(cluster, "thief")
    assert f"container.image {upper} is in the agent's state or etcd's data" in inst["reason"], inst["reason"]
    assert "whatever --allowed-dirs says" in inst["reason"] and "\n" not in inst["reason"]
    stop(cluster, "owner", "thief")


def test_an_image_in_etcds_data_dir_is_refused(cluster, tmp_path, image):
    wal = next((cluster.workdir / "scheduler").rglob("member/wal"))
    data = wal.parent.parent
    submit(cluster, tmp_path, "etcdimg", data / "member")
    inst = failed(cluster, "etcdimg")
    assert f"is in {data}, an agent's state or etcd's data, which no job may use" in inst["reason"], inst["reason"]
    stop(cluster, "etcdimg")


@opt_in("a slow proof")
def test_a_symlink_swapped_after_submission_is_not_followed(cluster, tmp_path, image):
    """The image is a symlink in the allowed dir, to a good image when the job is submitted; while
    the job waits for room (pending: another job holds the host's only core) the link is swapped to
    lead to the host's /. When room is made and the agent opens the path, it is refused: the job
    never gets the host's root as its image."""
    link = cluster.workdir / "images" / "current"
    link.symlink_to(image)
    submit(cluster, tmp_path, "control", link)             # the link works as it stands
    running(cluster, "control")
    stop(cluster, "control")
    submit(cluster, tmp_path, "blocker", image, cpu="1")
    running(cluster, "blocker")
    submit(cluster, tmp_path, "swapped", link, cpu="1",
           command=("/bin/sh", "-c", "echo ran on $(cat /etc/hostname); exec sleep 3600"))
    pending = wait_for(lambda: next((i for i in instances(cluster, "swapped") if i["state"] == "pending"), None),
                       what="swapped to wait for room")
    assert pending["reason"], pending
    tmp = link.with_name("current.new")
    tmp.symlink_to("/")
    os.rename(tmp, link)                                   # swapped atomically, after submission
    stop(cluster, "blocker")
    inst = failed(cluster, "swapped")
    assert inst["reason"] == (f"{inst['id']}: container.image {link} (it resolves to /) is outside the "
                              f"directories this node allows ({cluster.workdir}; packyard-agent --allowed-dirs)")
    assert "ran on" not in cluster.ctl("logs", inst["id"]).stdout
    stop(cluster, "swapped")
