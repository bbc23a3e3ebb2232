"""Drivers by fingerprint, seen from outside: an agent left on `--drivers auto` whose libvirt does
not answer runs containers, reports the vm driver unhealthy with libvirt's reason in
`ctl nodes -o json`, and a VM that finds no host stays pending with that reason (issue 17)."""
from __future__ import annotations

import json
import shutil

import pytest

from ctl.local import LocalCluster
from tests.agent.conftest import needs_runc
from tests.conftest import UNTIL_STOPPED, needs_root, searchable_dir, wait_for

pytestmark = [pytest.mark.integration, needs_root(), needs_runc()]

NO_LIBVIRT = "qemu:///system?socket=/nonexistent/packyard-test.sock"


@pytest.fixture(scope="module")
def cluster(request):
    c = LocalCluster(searchable_dir(request, "reasons"), hosts=1, prefix="pdr", net="10.213.92.0/24",
                     etcd_port=23930, scheduler_port=17930, capacity="cpu=2,memory=1Gi", drivers="auto",
                     agent_args=("--libvirt-uri", NO_LIBVIRT))
    c.up()
    yield c
    c.down()


def test_a_vm_without_a_working_driver_stays_pending_with_the_agents_reason(cluster, tmp_path):
    def drivers():
        nodes = json.loads(cluster.ctl("nodes", "-o", "json").stdout or "[]")
        return nodes and nodes[0].get("drivers")
    seen = wait_for(lambda: (d := drivers()) and "vm" in d and d, timeout=60, what="both drivers fingerprinted")
    assert seen["container"] == {"healthy": True}, seen
    assert seen["vm"]["healthy"] is False and seen["vm"]["reason"].startswith("libvirtd not reachable at "), seen

    kernel = shutil.which("true")          # any file: the VM is never started, only placed
    job = tmp_path / "lonely.yaml"
    job.write_text("name: lonely\ngroups:\n  - name: vm\n    kind: vm\n    resources: {cpu: 1, memory: 128Mi}\n"
                   f"    vm: {{kernel: {kernel}}}\n"
                   "  - name: box\n    resources: {cpu: 100m, memory: 16Mi}\n"
                   f"    container: {{command: [/bin/sh, -c, {json.dumps(UNTIL_STOPPED)}]}}\n")
    r = cluster.ctl("submit", str(job))
    assert r.returncode == 0, r.stderr

    def states():
        insts = json.loads(cluster.ctl("status", "lonely", "-o", "json").stdout)["instances"]
        return {i["group"]: i for i in insts}
    both = wait_for(lambda: (s := states()).get("box", {}).get("state") == "running" and s,
                    timeout=60, what="the container running")
    vm = both["vm"]
    assert vm["state"] == "pending", vm
    assert "driver vm unavailable" in vm["reason"] and "libvirtd not reachable" in vm["reason"], vm
    cluster.ctl("stop", "lonely")
