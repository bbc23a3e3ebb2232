"""agent/drivers/container/gpus.py and its part of runc's config: only the chosen GPUs' device nodes
(plus NVIDIA's control nodes) are made and allowed, on a fake /dev; nothing without GPUs. The same on
real runc: tests/agent/drivers/test_container.py, test_only_the_chosen_gpu_is_allowed."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.drivers.base import DriverError
from agent.drivers.container import gpus
from agent.drivers.container import runc as runc_mod
from agent.drivers.container.runc import Device
from tests.agent.conftest import needs_root

NVIDIA_MAJOR = 195


def fake_dev(root: Path, minors: dict[str, int]) -> Path:
    """A /dev with NVIDIA-like character device nodes (mknod needs root; no driver needed)."""
    root.mkdir()
    for name, minor in minors.items():
        os.mknod(root / name, 0o020666, os.makedev(NVIDIA_MAJOR, minor))
        os.chmod(root / name, 0o666)                    # what the umask took
    return root


@needs_root()
def test_only_the_chosen_gpus_and_the_control_nodes(tmp_path):
    dev = fake_dev(tmp_path / "dev", {"nvidia0": 0, "nvidia1": 1, "nvidia2": 2, "nvidiactl": 255})
    assert gpus.devices([2, 0], dev, "i1") == [
        Device("/dev/nvidia2", NVIDIA_MAJOR, 2, 0o666, str(dev / "nvidia2")),
        Device("/dev/nvidia0", NVIDIA_MAJOR, 0, 0o666, str(dev / "nvidia0")),
        Device("/dev/nvidiactl", NVIDIA_MAJOR, 255, 0o666, str(dev / "nvidiactl"))]
    assert gpus.devices([], dev, "i1") == []
    with pytest.raises(DriverError, match=r"^i1: GPU 3, 7 chosen for it has no device node"):
        gpus.devices([1, 3, 7], dev, "i1")


@needs_root()
def test_a_node_that_is_not_a_character_device_is_refused(tmp_path):
    dev = fake_dev(tmp_path / "dev", {"nvidia0": 0})
    (dev / "nvidia1").write_text("")
    with pytest.raises(DriverError, match="nvidia1 is not a character device"):
        gpus.devices([1], dev, "i1")


def test_a_host_without_nvidia_nodes_enforces_nothing(tmp_path):
    (tmp_path / "null").write_text("")
    assert gpus.devices([0, 1], tmp_path, "i1") == []


@pytest.mark.parametrize("chosen,expected", [
    ((), {}),
    ((2, 0), {"NVIDIA_VISIBLE_DEVICES": "2,0", "CUDA_VISIBLE_DEVICES": "2,0", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}),
], ids=["none", "two"])
def test_env(chosen, expected):
    assert gpus.env(chosen) == expected


def config(**kw):
    return runc_mod.config(args=["sh"], env={}, rootfs=Path("/r"), netns_path=None, cgroups_path="p/n/i",
                           hostname="i", **kw)


def test_runc_config_makes_and_allows_the_devices_after_denying_all():
    c = config(devices=[Device("/dev/nvidia1", NVIDIA_MAJOR, 1), Device("/dev/nvidiactl", NVIDIA_MAJOR, 255)])
    assert c["linux"]["devices"] == [
        {"path": "/dev/nvidia1", "type": "c", "major": 195, "minor": 1, "fileMode": 0o666, "uid": 0, "gid": 0},
        {"path": "/dev/nvidiactl", "type": "c", "major": 195, "minor": 255, "fileMode": 0o666, "uid": 0, "gid": 0}]
    assert c["linux"]["resources"]["devices"] == [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 195, "minor": 1, "access": "rwm"},
        {"allow": True, "type": "c", "major": 195, "minor": 255, "access": "rwm"}]


def test_runc_config_without_gpus_is_unchanged():
    assert config() == config(devices=[]) and "devices" not in config()["linux"]
    assert config()["linux"]["resources"]["devices"] == [{"allow": False, "access": "rwm"}]
