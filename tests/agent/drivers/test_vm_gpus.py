"""agent/drivers/vm/gpus.py and the <hostdev> domain.py renders for them: the host's GPUs found on a
fake sysfs, the chosen ones mapped to PCI addresses, the XML. libvirt takes that XML (and finds no
device to pass through): tests/agent/drivers/test_vm.py, test_a_chosen_gpu_reaches_libvirt_as_a_hostdev."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from agent.drivers.base import DriverError
from agent.drivers.vm import domain as dom
from agent.drivers.vm.gpus import PciAddress, host_gpus, passthrough

MI = 1 << 20
A, B = PciAddress(0, 0x17, 0, 0), PciAddress(0, 0x65, 0x1f, 0)


def fake_sysfs(root: Path, devices: dict[str, tuple[str, str]]) -> Path:
    """/sys/bus/pci/devices: one directory per device with its vendor and class files."""
    for name, (vendor, pci_class) in devices.items():
        (root / name).mkdir(parents=True)
        (root / name / "vendor").write_text(vendor + "\n")
        (root / name / "class").write_text(pci_class + "\n")
    return root


def test_host_gpus_are_nvidia_display_and_3d_controllers_in_pci_order(tmp_path):
    sysfs = fake_sysfs(tmp_path / "devices", {
        "0000:65:1f.0": ("0x10de", "0x030200"),      # 3D controller (a datacenter GPU)
        "0000:65:1f.1": ("0x10de", "0x040300"),      # that GPU's audio function: not a GPU
        "0000:17:00.0": ("0x10de", "0x030000"),      # VGA controller
        "0000:00:02.0": ("0x8086", "0x030000"),      # another vendor's graphics
        "0000:00:1f.3": ("0x10de", "0x0c0330"),      # NVIDIA, not a display controller
    })
    (sysfs / "not-an-address").mkdir()
    assert host_gpus(sysfs) == [A, B]
    assert host_gpus(tmp_path / "nothing-here") == []


@pytest.mark.parametrize("text,address", [
    ("0000:65:1f.0", B), ("0000:17:00.0", A), ("ABCD:FF:1F.7", PciAddress(0xabcd, 0xff, 0x1f, 7)),
], ids=["slot", "plain", "upper-case"])
def test_pci_address(text, address):
    assert PciAddress.parse(text) == address and str(address) == text.lower()


@pytest.mark.parametrize("text", ["65:00.0", "0000:65:00.8", "0000:65:00.0\n/x"], ids=["short", "function", "junk"])
def test_pci_address_refused(text):
    with pytest.raises(ValueError):
        PciAddress.parse(text)


def test_passthrough_maps_indices_to_the_hosts_gpus():
    assert passthrough([1, 0], [A, B], "i1") == (B, A)
    assert passthrough([], [A, B], "i1") == ()
    assert passthrough([0, 5], [], "i1") == ()              # no GPU known here: recorded, not passed
    with pytest.raises(DriverError, match=r"^i1: GPU 2 chosen for it is not on this node \(it has 2\)"):
        passthrough([0, 2], [A, B], "i1")


def render(**kw) -> str:
    return dom.render(dom.DomainConfig(name="pky-n1-a", instance_id="a", node="n1", job="j", group="g",
                                       accelerator="kvm", vcpus=2, memory_bytes=256 * MI,
                                       console_log="/s/logs/a.log", disk="/s/d.qcow2", **kw))


def test_hostdev_xml():
    assert ET.tostring(dom.hostdev(B), encoding="unicode") == (
        '<hostdev mode="subsystem" type="pci" managed="yes"><source>'
        '<address domain="0x0000" bus="0x65" slot="0x1f" function="0x0" /></source></hostdev>')
    xml = ET.fromstring(render(hostdevs=(A, B)))
    addresses = [h.find("source/address").attrib for h in xml.findall("devices/hostdev")]
    assert [a["bus"] for a in addresses] == ["0x17", "0x65"]
    assert "<hostdev" not in render()

