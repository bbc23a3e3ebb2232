"""A container's GPUs: only the devices the scheduler chose for it (InstanceSpec.gpus) reach it.

On a host with NVIDIA device nodes, GPU N is /dev/nvidia<N>. The container gets the chosen ones plus
the driver's shared control nodes that exist (/dev/nvidiactl, /dev/nvidia-uvm, /dev/nvidia-uvm-tools,
/dev/nvidia-modeset: CUDA opens them whatever the GPU): runc makes them inside the container (OCI
`linux.devices`) and allows them in its device cgroup (`linux.resources.devices`: cgroup v1
devices.allow, v2 runc's eBPF program), after the deny-all every container starts from, so every
other GPU stays denied. NVIDIA_VISIBLE_DEVICES and CUDA_VISIBLE_DEVICES name the chosen indices
(CUDA_DEVICE_ORDER=PCI_BUS_ID: CUDA then numbers GPUs as the device nodes do, not fastest first).

A host without NVIDIA device nodes (this CI; a GPU count given by --capacity) has nothing to enforce:
the container gets the variables, and the driver records the devices in the handle.
"""
from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from agent.drivers.base import DriverError
from agent.drivers.container.runc import Device

CONTROL_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")


def devices(gpus: Sequence[int], dev_dir: Path, what: str) -> list[Device]:
    """The device nodes a container holding `gpus` gets: none without GPUs or on a host without
    NVIDIA device nodes; DriverError `what: ...` if a chosen GPU has no node here."""
    if not gpus or not any(dev_dir.glob("nvidia[0-9]*")):
        return []
    missing = [str(i) for i in gpus if not (dev_dir / f"nvidia{i}").exists()]
    if missing:
        raise DriverError(f"{what}: GPU {', '.join(missing)} chosen for it has no device node "
                          f"({dev_dir}/nvidia<N>) on this node")
    nodes = [dev_dir / f"nvidia{i}" for i in gpus] + [dev_dir / n for n in CONTROL_NODES if (dev_dir / n).exists()]
    return [_device(p, what) for p in nodes]


def env(gpus: Sequence[int]) -> dict[str, str]:
    if not gpus:
        return {}
    chosen = ",".join(map(str, gpus))
    return {"NVIDIA_VISIBLE_DEVICES": chosen, "CUDA_VISIBLE_DEVICES": chosen, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


def _device(path: Path, what: str) -> Device:
    st = os.stat(path)
    if not stat.S_ISCHR(st.st_mode):
        raise DriverError(f"{what}: {path} is not a character device")
    return Device(f"/dev/{path.name}", os.major(st.st_rdev), os.minor(st.st_rdev), stat.S_IMODE(st.st_mode),
                  source=str(path))
