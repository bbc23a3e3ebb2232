"""Job paths opened once beneath the allowed dir (issue 15, points 6-8): what a swapped symlink,
another instance's layer, an agent's or etcd's dir, a hostile tar or qcow2 get."""
from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from agent.drivers.base import DriverError
from agent.drivers.beneath import open_beneath
from agent.drivers.paths import STATE_MARKER, check_allowed_dirs, open_allowed
from agent.drivers.untar import UntarError, extract


@pytest.fixture
def tree(tmp_path):
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    (allowed / "good").mkdir(parents=True)
    (allowed / "good" / "marker").write_text("good")
    outside.mkdir()
    (outside / "marker").write_text("host")
    return allowed, outside


def test_a_symlink_swapped_after_the_check_is_not_followed(tree):
    allowed, outside = tree
    (allowed / "img").symlink_to(allowed / "good")
    opened = open_allowed(str(allowed / "img"), [allowed], "container.image")
    try:
        (allowed / "img").unlink()
        (allowed / "img").symlink_to(outside)          # swapped after the check
        assert Path(opened.proc, "marker").read_text() == "good"
        assert opened.real == allowed / "good"
    finally:
        opened.close()


@pytest.mark.parametrize("target", ["abs", "dotdot", "proc"])
def test_the_walk_never_leaves_the_root(tree, target):
    allowed, outside = tree
    link = allowed / "swapped"
    link.symlink_to({"abs": str(outside), "dotdot": "../outside", "proc": "/proc/self/root"}[target])
    with pytest.raises(OSError) as e:
        open_beneath(allowed, "swapped/marker")
    assert e.value.errno in (18, 40)                    # EXDEV, ELOOP


def test_an_image_outside_is_refused(tree):
    allowed, outside = tree
    with pytest.raises(DriverError, match="outside the directories"):
        open_allowed(str(outside), [allowed], "container.image")


def test_another_instances_layer_the_state_dir_and_a_dir_holding_it_are_refused(tree):
    allowed, _ = tree
    state = allowed / "agent"
    upper = state / "instances" / "c1" / "upper"
    upper.mkdir(parents=True)
    for path in (upper, state, allowed):
        with pytest.raises(DriverError, match="agent's state or etcd's data"):
            open_allowed(str(path), [allowed], "container.image", (state,))
    open_allowed(str(allowed / "good"), [allowed], "container.image", (state,)).close()   # the control


@pytest.mark.parametrize("mark", ["agent", "etcd"])
def test_another_agents_state_and_etcds_data_are_recognised(tree, mark):
    allowed, _ = tree
    other = allowed / "other"
    (other / "instances" / "x" / "upper").mkdir(parents=True)
    if mark == "agent":
        (other / STATE_MARKER).touch()
    else:
        (other / "member" / "wal").mkdir(parents=True)
    with pytest.raises(DriverError, match="no job may use"):
        open_allowed(str(other / "instances" / "x" / "upper"), [allowed], "container.image")


def test_allowed_dirs_inside_the_state_dir_are_refused_at_start(tmp_path):
    state = tmp_path / "state"
    with pytest.raises(ValueError, match="is inside"):
        check_allowed_dirs([state / "instances"], [state])
    with pytest.raises(ValueError, match="is inside"):
        check_allowed_dirs([state], [state])
    check_allowed_dirs([tmp_path], [state])      # holding it: that part is refused at each start


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for info, data in members:
            info.size = len(data or b"")
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    buf.seek(0)
    return buf


def _info(name: str, **attrs) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    for k, v in attrs.items():
        setattr(info, k, v)
    return info


def test_tar_drops_setuid_and_devices_keeps_tmp_and_absolute_symlinks(tmp_path):
    src = _tar([(_info("bin/su", mode=0o4755, uid=0), b"x"), (_info("bin/wall", mode=0o2755), b"x"),
                (_info("tmp", type=tarfile.DIRTYPE, mode=0o1777), None),
                (_info("dev/sda", type=tarfile.BLKTYPE, devmajor=8, devminor=0), None),
                (_info("dev/mem", type=tarfile.CHRTYPE, devmajor=1, devminor=1), None),
                (_info("bin/sh", type=tarfile.SYMTYPE, linkname="/bin/busybox"), None),
                (_info("etc/passwd", mode=0o644, uid=1234, gid=4321), b"root:x:0:0::/:/bin/sh\n")])
    extract(src, tmp_path)
    assert stat.S_IMODE((tmp_path / "bin/su").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "bin/wall").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "tmp").stat().st_mode) == 0o1777
    assert not (tmp_path / "dev/sda").exists() and not (tmp_path / "dev/mem").exists()
    assert os.readlink(tmp_path / "bin/sh") == "/bin/busybox"
    if os.geteuid() == 0:
        assert (tmp_path / "etc/passwd").stat().st_uid == 1234      # by number, not by name


def test_for_privileged_containers_setuid_stays_and_devices_still_go(tmp_path):
    src = _tar([(_info("bin/su", mode=0o4755, uid=0), b"x"), (_info("bin/wall", mode=0o2755), b"x"),
                (_info("dev/mem", type=tarfile.CHRTYPE, devmajor=1, devminor=1), None)])
    extract(src, tmp_path, setuid=True)
    assert stat.S_IMODE((tmp_path / "bin/su").stat().st_mode) == 0o4755
    assert stat.S_IMODE((tmp_path / "bin/wall").stat().st_mode) == 0o2755
    assert not (tmp_path / "dev/mem").exists()


@pytest.mark.parametrize("members", [
    [(_info("../escape"), b"x")],
    [(_info("x", type=tarfile.LNKTYPE, linkname="/etc/passwd"), None)],
    [(_info("x", type=tarfile.LNKTYPE, linkname="../../../../../../etc/passwd"), None)],
    [(_info("etc", type=tarfile.SYMTYPE, linkname="/etc"), None), (_info("etc/evil"), b"x")],
    [(_info("up", type=tarfile.SYMTYPE, linkname="../.."), None), (_info("up/evil"), b"x")],
], ids=["dotdot", "hardlink-absolute", "hardlink-dotdot", "through-absolute-symlink", "through-dotdot-symlink"])
@pytest.mark.parametrize("setuid", [False, True], ids=["unprivileged", "privileged"])
def test_tar_escapes_are_refused(tmp_path, members, setuid):
    dest = tmp_path / "a" / "b" / "dest"
    dest.mkdir(parents=True)
    with pytest.raises(UntarError):
        extract(_tar(members), dest, setuid=setuid)
    assert not (tmp_path / "a" / "escape").exists() and not Path("/etc/evil").exists()


needs_qemu_img = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")


@needs_qemu_img
@pytest.mark.parametrize("hostile", ["backing", "data-file"])
def test_a_qcow2_with_a_backing_file_or_data_file_is_refused(tmp_path, hostile):
    from agent.drivers.vm.driver import _create_overlay
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    disk = allowed / "disk.qcow2"
    if hostile == "backing":
        secret = tmp_path / "secret.raw"
        secret.write_bytes(b"\0" * 65536)
        args = ["-b", str(secret), "-F", "raw"]
    else:
        args = ["-o", f"data_file={tmp_path / 'secret.raw'}"]
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *args, str(disk), "64K"], check=True)
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(disk)],
                                     capture_output=True, text=True, check=True).stdout)
    assert "backing-filename" in info or "data-file" in json.dumps(info)      # the hostile file is real
    opened = open_allowed(str(disk), [allowed], "vm.disk")
    try:
        work = tmp_path / "work"
        work.mkdir()
        with pytest.raises(DriverError, match="backing file|external data file"):
            _create_overlay(opened, str(work / "base"), str(work / "disk.qcow2"), "vm.disk")
        assert not (work / "disk.qcow2").exists()
    finally:
        opened.close()


@needs_qemu_img
def test_a_plain_qcow2_gets_an_overlay_over_its_own_copy(tmp_path):
    from agent.drivers.vm.driver import _create_overlay
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    disk = allowed / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64K"], check=True)
    opened = open_allowed(str(disk), [allowed], "vm.disk")
    work = tmp_path / "work"
    work.mkdir()
    try:
        disk.unlink()
        (allowed / "disk.qcow2").symlink_to("/etc/passwd")       # swapped after the check
        _create_overlay(opened, str(work / "base"), str(work / "disk.qcow2"), "vm.disk")
    finally:
        opened.close()
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(work / "disk.qcow2")],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["backing-filename"] == str(work / "base")
    assert (work / "base").read_bytes()[:4] == b"QFI\xfb"


def test_the_agent_refuses_to_start_with_an_allowed_dir_inside_its_state_dir(tmp_path):
    import sys
    r = subprocess.run([sys.executable, "-m", "agent.main", "--etcd", "http://127.0.0.1:1", "--node", "x",
                        "--state-dir", str(tmp_path), "--allowed-dirs", f"/srv,{tmp_path}/instances"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"--allowed-dirs: {tmp_path}/instances is inside {tmp_path}" in r.stderr
