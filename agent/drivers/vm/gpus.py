"""A VM's GPUs: the PCI devices the scheduler chose for it (InstanceSpec.gpus), passed through by
libvirt (`<hostdev>`, domain.py).

GPU N of a host is its Nth NVIDIA GPU (vendor 0x10de, a display or 3D controller, PCI class 0x0300
or 0x0302) in PCI address order: the order of the /dev/nvidia<N> nodes containers get. The hostdev is
managed: libvirt binds the device to vfio-pci while the domain runs and gives it back after; the
host must have an IOMMU and the GPU's whole IOMMU group free (its audio function too), which is the
operator's setup, not the agent's. A host with no such device (this CI; a GPU count given by
--capacity) passes nothing through: the driver records the devices in the handle only.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.drivers.base import DriverError

PCI_DEVICES = Path("/sys/bus/pci/devices")
NVIDIA = "0x10de"
GPU_CLASSES = ("0x0300", "0x0302")              # the class file's first 6 characters
_ADDRESS = re.compile(r"^([0-9a-f]{4}):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$")


@dataclass(frozen=True, order=True)
class PciAddress:
    domain: int
    bus: int
    slot: int
    function: int

    @classmethod
    def parse(cls, text: str) -> PciAddress:
        """`0000:65:00.0` (sysfs's name of the device)."""
        m = _ADDRESS.match(text.lower())
        if m is None:
            raise ValueError(f"'{text}' is not a PCI address (dddd:bb:ss.f)")
        return cls(*(int(part, 16) for part in m.groups()))

    def __str__(self) -> str:
        return f"{self.domain:04x}:{self.bus:02x}:{self.slot:02x}.{self.function:x}"


def host_gpus(devices_dir: Path = PCI_DEVICES) -> list[PciAddress]:
    """This host's NVIDIA GPUs in PCI order: GPU N is the Nth."""
    found = []
    for dev in devices_dir.iterdir() if devices_dir.is_dir() else ():
        try:
            vendor = (dev / "vendor").read_text().strip()
            pci_class = (dev / "class").read_text().strip()
            address = PciAddress.parse(dev.name)
        except (OSError, ValueError):
            continue
        if vendor == NVIDIA and pci_class[:6] in GPU_CLASSES:
            found.append(address)
    return sorted(found)


def passthrough(gpus: Sequence[int], host: Sequence[PciAddress], what: str) -> tuple[PciAddress, ...]:
    """The PCI devices of the chosen GPUs: none without GPUs or on a host with none known;
    DriverError `what: ...` if a chosen one is not here."""
    if not gpus or not host:
        return ()
    missing = [str(i) for i in gpus if not 0 <= i < len(host)]
    if missing:
        raise DriverError(f"{what}: GPU {', '.join(missing)} chosen for it is not on this node "
                          f"(it has {len(host)})")
    return tuple(host[i] for i in gpus)
