"""agent/drivers/container/cgroups.py: pure parts on fake trees, v1 for real, v2 mechanics for real
on the hybrid host's /sys/fs/cgroup/unified (its controllers are bound to v1 here, so v2 limits are
checked on a fake cgroup2 tree laid out like a pure-v2 host's)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.drivers.container import cgroups as cg
from tests.agent.conftest import needs_root

HYBRID_UNIFIED = "/sys/fs/cgroup/unified"

MOUNTINFO_HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
MOUNTINFO_COMBINED = """\
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
"""


def mountinfo(tmp_path: Path, text: str) -> str:
    p = tmp_path / "mountinfo"
    p.write_text(text)
    return str(p)


# -- pure parts ---------------------------------------------------------------------------------

@pytest.mark.parametrize("node,instance,ok", [
    ("n1", "job.g.0-ab", True),
    ("n1", "a/b", False),
    ("", "x", False),
    ("n1", "..", False),
], ids=["valid", "slash", "empty-node", "dotdot"])
def test_instance_path(node, instance, ok):
    if ok:
        assert cg.instance_path(node, instance) == f"packyard/{node}/{instance}"
    else:
        with pytest.raises(cg.CgroupError):
            cg.instance_path(node, instance)


def test_mounts_parsed_from_mountinfo(tmp_path):
    mounts = cg.cgroup_mounts(mountinfo(tmp_path, MOUNTINFO_HYBRID))
    assert [m.path for m in mounts if m.fstype == "cgroup2"] == ["/sys/fs/cgroup/unified"]
    by_path = {m.path: m.controllers for m in mounts}
    assert by_path["/sys/fs/cgroup/cpu"] == {"cpu"}
    assert by_path["/sys/fs/cgroup/systemd"] == {"name=systemd"}
    assert "/sys/fs/cgroup" not in by_path          # the tmpfs holding them is no cgroup


def test_v1_controllers_on_separate_or_combined_hierarchies(tmp_path):
    separate = cg.CgroupsV1(cg.cgroup_mounts(mountinfo(tmp_path, MOUNTINFO_HYBRID)))
    assert separate.by_controller["cpu"] != separate.by_controller["cpuacct"]
    with pytest.raises(cg.CgroupError, match="pids"):
        cg.CgroupsV1(cg.cgroup_mounts(mountinfo(tmp_path, MOUNTINFO_COMBINED)))
    combined = MOUNTINFO_COMBINED + "39 31 0:36 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n"
    v1 = cg.CgroupsV1(cg.cgroup_mounts(mountinfo(tmp_path, combined)))
    assert v1.by_controller["cpu"] == v1.by_controller["cpuacct"] == "/sys/fs/cgroup/cpu,cpuacct"


def test_detect_hybrid_is_v1_and_pure_v2_is_v2(tmp_path):
    assert cg.detect(mountinfo=mountinfo(tmp_path, MOUNTINFO_HYBRID)).version == "v1"
    root = fake_v2_tree(tmp_path / "cg2")
    pure = f"25 1 0:22 / {root} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
    detected = cg.detect(root=str(root), mountinfo=mountinfo(tmp_path, pure))
    assert isinstance(detected, cg.CgroupsV2) and detected.root == str(root)
    with pytest.raises(cg.CgroupError, match="no cgroup"):
        cg.detect(mountinfo=mountinfo(tmp_path, "1 0 0:1 / / rw - ext4 /dev/vda rw\n"))


def fake_v2_tree(root: Path, rel: str = "") -> Path:
    """A cgroup2 tree as files, like a pure-v2 host where cpu, memory and pids are available."""
    dirs = [root] + [root.joinpath(*rel.split("/")[:i + 1]) for i in range(len(rel.split("/")))] \
        if rel else [root]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
        for name, text in [("cgroup.procs", ""), ("cgroup.controllers", "cpuset cpu io memory pids"),
                           ("cgroup.subtree_control", ""), ("cpu.max", "max 100000"),
                           ("memory.max", "max"), ("memory.swap.max", "max"), ("pids.max", "max"),
                           ("cpu.stat", "usage_usec 2500000\nuser_usec 2000000\n"),
                           ("memory.current", "1048576\n"),
                           ("memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")]:
            (d / name).write_text(text)
    return root


def test_v2_limits_and_stats_written_where_a_pure_v2_host_wants_them(tmp_path):
    rel = cg.instance_path("n1", "job.g.0-ab")
    root = fake_v2_tree(tmp_path / "cg2", rel)
    v2 = cg.CgroupsV2(str(root))
    v2.create(rel, cg.Limits(cpu_milli=250, memory_bytes=32 << 20, pids_max=100))
    inst = root / rel
    assert (inst / "cpu.max").read_text().startswith("25000 100000")
    assert (inst / "memory.max").read_text().startswith(str(32 << 20))
    assert (inst / "memory.swap.max").read_text().startswith("0")
    assert (inst / "pids.max").read_text().startswith("100")
    # every ancestor delegates cpu, memory and pids to its children
    for d in (root, root / "packyard", root / "packyard/n1"):
        assert (d / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert v2.usage(rel) == cg.Usage(cpu_seconds=2.5, memory_bytes=1 << 20, oom_kills=1)


@pytest.mark.parametrize("milli,quota", [(250, 25000), (1000, 100000), (1500, 150000), (1, 1000)],
                         ids=["quarter", "one", "one-and-half", "floor"])
def test_cpu_quota(milli, quota):
    assert cg._quota_us(milli) == quota


# -- real cgroups ---------------------------------------------------------------------------------

def busy_child(seconds: float) -> subprocess.Popen:
    """One process: busy for `seconds`, then asleep."""
    code = f"import time\nend = time.time() + {seconds}\nwhile time.time() < end: pass\ntime.sleep(1000)"
    return subprocess.Popen([sys.executable, "-c", code])


def gone(v: cg.Cgroups, rel: str) -> bool:
    return not any(os.path.exists(os.path.join(r, rel)) for r in v.roots())


@pytest.mark.integration
@needs_root()
def test_v1_for_real(node):
    try:
        v1 = cg.detect()
    except cg.CgroupError as e:
        pytest.skip(f"no usable cgroup hierarchy: {e}")
    if v1.version != "v1":
        pytest.skip("this host is pure cgroup v2")
    rel = cg.instance_path(node, "i1")
    proc = subprocess.Popen(["/bin/busybox", "sleep", "1000"])
    try:
        v1.create(rel, cg.Limits(cpu_milli=250, memory_bytes=32 << 20, pids_max=64))
        assert isinstance(v1, cg.CgroupsV1)
        assert Path(v1.by_controller["cpu"], rel, "cpu.cfs_quota_us").read_text().strip() == "25000"
        assert Path(v1.by_controller["memory"], rel, "memory.limit_in_bytes").read_text().strip() \
            == str(32 << 20)
        assert Path(v1.by_controller["pids"], rel, "pids.max").read_text().strip() == "64"
        v1.add(rel, proc.pid)
        assert v1.pids(rel) == [proc.pid]
        usage = v1.usage(rel)
        assert usage.memory_bytes >= 0 and usage.oom_kills == 0
        v1.kill(rel)
        assert proc.wait(timeout=5) == -9
        v1.remove(rel)
        assert gone(v1, rel)
        v1.remove(rel)                              # idempotent
        v1.remove_node(node)
        assert gone(v1, cg.node_path(node))
    finally:
        proc.kill()
        proc.wait()
        v1.remove(rel)
        v1.remove_node(node)


@pytest.mark.integration
@needs_root()
def test_v2_mechanics_on_the_unified_hierarchy(node):
    if not os.path.exists(os.path.join(HYBRID_UNIFIED, "cgroup.procs")):
        pytest.skip(f"no cgroup2 hierarchy at {HYBRID_UNIFIED}")
    v2 = cg.CgroupsV2(HYBRID_UNIFIED)
    rel = cg.instance_path(node, "i1")
    proc = busy_child(0.3)
    try:
        v2.create(rel)
        v2.add(rel, proc.pid)
        assert v2.pids(rel) == [proc.pid]
        time.sleep(0.4)
        usage = v2.usage(rel)
        assert usage.cpu_seconds > 0.1, usage        # cpu.stat works without the cpu controller
        assert v2.oom_kills(rel) == 0
        v2.kill(rel)                                 # cgroup.kill
        assert proc.wait(timeout=5) == -9
        v2.remove(rel)
        assert gone(v2, rel)
        v2.remove_node(node)
        assert gone(v2, cg.node_path(node))
    finally:
        proc.kill()
        proc.wait()
        v2.remove(rel)
        v2.remove_node(node)


@pytest.mark.integration
@needs_root()
def test_v2_limits_enforced(node):
    if not os.path.exists(os.path.join(HYBRID_UNIFIED, "cgroup.procs")):
        pytest.skip(f"no cgroup2 hierarchy at {HYBRID_UNIFIED}")
    v2 = cg.CgroupsV2(HYBRID_UNIFIED)
    missing = {"cpu", "memory", "pids"} - v2.available()
    if missing:
        pytest.skip(f"v2 controllers {sorted(missing)} are bound to cgroup v1 on this host (hybrid)")
    rel = cg.instance_path(node, "i1")
    try:
        v2.create(rel, cg.Limits(cpu_milli=250, memory_bytes=32 << 20, pids_max=64))
        assert Path(HYBRID_UNIFIED, rel, "cpu.max").read_text().split() == ["25000", "100000"]
        assert Path(HYBRID_UNIFIED, rel, "memory.max").read_text().strip() == str(32 << 20)
    finally:
        v2.remove(rel)
        v2.remove_node(node)
