"""VMs through the whole path: ctl → scheduler → agents (each in its own network namespace) →
libvirt + QEMU (TCG here: KVM is probed and found hanging). And the overhead profile learned from
what the agents measure, used by the next placement."""
import functools
import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from ctl.local import LocalCluster
from tests.agent.drivers import vmfixtures as fx
from tests.conftest import opt_in
from tests.conftest import wait_for as poll

pytestmark = [pytest.mark.integration, fx.needs_libvirt(),
              pytest.mark.skipif(shutil.which("runc") is None, reason="runc not installed")]
libvirt_daemons, guest = fx.libvirt_daemons, fx.guest
MIB = 1 << 20


@pytest.fixture(scope="module")
def cluster(libvirt_daemons, guest):
    # QEMU runs as libvirt-qemu and must reach overlays under the state dirs: not pytest's 0700 tmp
    workdir = Path("/var/tmp") / f"pv-{uuid.uuid4().hex[:8]}"
    workdir.mkdir(mode=0o711)
    c = LocalCluster(workdir, hosts=2, prefix="pv", net="10.213.144.0/24", etcd_port=23750,
                     scheduler_port=17750, capacity="cpu=4,memory=3Gi", drivers="container,vm",
                     usage_interval=1.0, scheduler_args=("--profile-min-samples", "2"))
    c.up()
    yield c
    c.down()
    shutil.rmtree(workdir, ignore_errors=True)


def vm_job(name, guest, memory="256Mi", count=1, disk=False, group="vm"):
    boot = (f"{{disk: {guest['disk']}}}" if disk else
            f"{{kernel: {guest['kernel']}, initrd: {guest['initrd']}, cmdline: \"{guest['cmdline']}\"}}")
    return (f"  - name: {group}\n    kind: vm\n    count: {count}\n"
            f"    resources: {{cpu: 1, memory: {memory}}}\n    vm: {boot}\n")


wait_for = functools.partial(poll, timeout=90.0, interval=0.5)   # VMs boot on TCG: slow


def submit(cluster, tmp_path, name, groups, *args):
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\ngroups:\n{groups}")
    return cluster.ctl("submit", str(path), *args, timeout=300)


def status(cluster, job):
    return json.loads(cluster.ctl("status", job, "-o", "json").stdout)


def domains():
    out = subprocess.run(["virsh", "-c", "qemu:///system", "list", "--all", "--name"],
                         capture_output=True, text=True).stdout
    return set(out.split())


def test_nodes_report_the_accelerator_the_probe_chose(cluster):
    nodes = json.loads(cluster.ctl("nodes", "-o", "json").stdout)
    for n in nodes:
        assert n["attributes"]["driver.vm"] == "ok"
        assert n["attributes"]["vm.accelerator"] in ("kvm", "tcg")
    # on these machines KVM opens but hangs guests: the probe must have fallen back
    if Path("/dev/kvm").exists():
        assert {n["attributes"]["vm.accelerator"] for n in nodes} == {"tcg"}


def test_vm_boots_prints_its_marker_and_stops_without_a_trace(cluster, tmp_path, guest):
    r = submit(cluster, tmp_path, "boot", vm_job("boot", guest), "--wait", "--timeout", "120")
    assert r.returncode == 0, r.stderr
    inst = status(cluster, "boot")["instances"][0]
    assert inst["state"] == "running" and inst["kind"] == "vm"
    name = f"pky-{inst['node']}-{inst['id']}"
    assert name in domains()
    wait_for(lambda: "packyard-guest: up" in cluster.ctl("logs", inst["id"]).stdout, what="marker")
    host = next(h for h in cluster.hosts if h.name == inst["node"])
    assert (host.state_dir / "instances" / name).exists()
    assert cluster.ctl("stop", "boot").returncode == 0
    wait_for(lambda: status(cluster, "boot")["instances"][0]["state"] == "stopped", what="stopped")
    assert name not in domains()
    assert not (host.state_dir / "instances" / name).exists()
    assert "packyard-guest: up" in cluster.ctl("logs", inst["id"]).stdout   # the console log stays


def test_disk_vm_runs_on_its_own_overlay(cluster, tmp_path, guest):
    r = submit(cluster, tmp_path, "disky", vm_job("disky", guest, disk=True), "--wait", "--timeout", "120")
    assert r.returncode == 0, r.stderr
    inst = status(cluster, "disky")["instances"][0]
    host = next(h for h in cluster.hosts if h.name == inst["node"])
    overlays = list((host.state_dir / "instances" / f"pky-{inst['node']}-{inst['id']}").glob("*.qcow2"))
    assert overlays, "no per-instance overlay"
    info = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(overlays[0])],
                          capture_output=True, text=True, check=True).stdout
    # the overlay is backed by the disk the agent opened beneath its allowed dir (a link or copy
    # in the instance's own dir), never by a path a swapped symlink could redirect
    base = Path(json.loads(info)["backing-filename"])
    assert base.parent == overlays[0].parent, base
    assert base.read_bytes() == Path(guest["disk"]).read_bytes()
    wait_for(lambda: "packyard-guest: up" in cluster.ctl("logs", inst["id"]).stdout, what="marker")
    cluster.ctl("stop", "disky")
    wait_for(lambda: status(cluster, "disky")["instances"][0]["state"] == "stopped", what="stopped")
    assert not overlays[0].exists() and not base.exists()


def test_a_qcow2_disk_with_a_backing_file_is_refused_before_boot(cluster, tmp_path, guest):
    """Issue 15 (OSSA-2024-001) through ctl: a qcow2 naming a backing file would have QEMU read
    that host file as the guest's disk. The instance fails with why, before any domain is defined."""
    scratch = Path(guest["disk"]).parent / f"backed-{uuid.uuid4().hex[:8]}"     # inside the allowed dirs
    scratch.mkdir()
    try:
        secret, top = scratch / "host-file", scratch / "top.qcow2"
        secret.write_bytes(b"\0" * MIB)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(secret), "-F", "raw", str(top)],
                       check=True)
        before = domains()
        submit(cluster, tmp_path, "backed", vm_job("backed", {**guest, "disk": str(top)}, disk=True)
               .replace("    vm:", "    restart: {attempts: 0}\n    vm:"))
        inst = wait_for(lambda: next((i for i in status(cluster, "backed")["instances"] if i["state"] == "failed"),
                                     None), timeout=60, what="the backed disk to be refused")
        assert inst["reason"] == (f"{inst['id']}: vm.disk {top}: it has a backing file ({secret}), which is refused "
                                  "(it could read the host's files)"), inst["reason"]
        assert not any(inst["id"] in d for d in domains() - before)
        cluster.ctl("stop", "backed")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def test_profile_is_learned_from_measured_vms_and_used_for_the_next_placement(cluster, tmp_path, guest):
    groups = vm_job("learn", guest, memory="256Mi", count=2, group="small") + \
        vm_job("learn", guest, memory="512Mi", count=2, group="large")
    r = submit(cluster, tmp_path, "learn", groups, "--wait", "--timeout", "180")
    assert r.returncode == 0, r.stderr

    def learned():
        vm = next(p for p in json.loads(cluster.ctl("profiles", "-o", "json").stdout) if p["kind"] == "vm")
        classes = {c["size_class"]: c for c in vm["learned"]}
        return classes if {256 * MIB, 512 * MIB} <= classes.keys() else None
    classes = wait_for(learned, what="both size classes learned")
    default = 112 * MIB + 8 * MIB + int(0.002 * 256 * MIB)
    for cls in classes.values():
        assert cls["samples"] >= 2   # earlier tests' VMs of the 256Mi class count too
        # what QEMU really costs here (FIELD-NOTES: ~66 MiB RSS for a small guest; measured
        # 100-107 MiB beyond guest RAM under TCG), not a constant from elsewhere
        assert 40 * MIB <= cls["p50"] <= cls["p95"] <= 160 * MIB, cls
        assert abs(cls["overhead"] - cls["p95"] * 1.05) < 2      # p95 + the 5% margin
    # the next 256Mi VM reserves guest + the learned overhead, not the default formula
    r = submit(cluster, tmp_path, "next", vm_job("next", guest, memory="256Mi"), "--wait", "--timeout", "120")
    assert r.returncode == 0, r.stderr
    inst = status(cluster, "next")["instances"][0]
    learned_overhead = classes[256 * MIB]["overhead"]
    assert inst["reserved"]["memory"] == 256 * MIB + learned_overhead != 256 * MIB + default
    node = next(n for n in json.loads(cluster.ctl("nodes", "-o", "json").stdout) if n["name"] == inst["node"])
    on_node = [i for j in ("learn", "next") for i in status(cluster, j)["instances"]
               if i["node"] == inst["node"] and i["state"] == "running"]
    assert node["allocated"]["memory"] == sum(i["reserved"]["memory"] for i in on_node)
    for job in ("learn", "next"):
        cluster.ctl("stop", job)


@opt_in("a slow proof")
def test_a_crashed_vm_is_restarted_in_place_and_its_http_check_reaches_the_guest(cluster, tmp_path, guest):
    # the guest serves /healthz once booted; on TCG a boot takes seconds, so the check tolerates
    # failures while it boots (failures: 60 at 1 s) rather than a grace guessed for this machine
    groups = vm_job("phoenix", guest) + (
        "    restart: {attempts: 2, interval: 10m, delay: 1s}\n"
        "    check: {type: http, port: 80, path: /healthz, interval: 1s, timeout: 500ms, failures: 60, grace: 1s}\n")
    r = submit(cluster, tmp_path, "phoenix", groups, "--wait", "--timeout", "120")
    assert r.returncode == 0, r.stderr
    first = wait_for(lambda: (i := status(cluster, "phoenix")["instances"][0])["health"] == "passing" and i,
                     what="the guest's httpd answering the check")
    name = f"pky-{first['node']}-{first['id']}"
    subprocess.run(["virsh", "-c", "qemu:///system", "destroy", name], check=True, capture_output=True)
    again = wait_for(lambda: (i := status(cluster, "phoenix")["instances"][0])["restarts"] == 1
                     and i["state"] == "running" and i, what="restarted in place")
    assert (again["id"], again["node"]) == (first["id"], first["node"]) and name in domains()
    assert "restarting in 1s (attempt 1 of 2)" in again["events"][0]["message"], again["events"]
    wait_for(lambda: status(cluster, "phoenix")["instances"][0]["health"] == "passing", what="passing again")
    cluster.ctl("stop", "phoenix")
    wait_for(lambda: status(cluster, "phoenix")["instances"][0]["state"] == "stopped", what="stopped")
    assert name not in domains()
