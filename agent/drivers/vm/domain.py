"""Domain XML for a packyard VM, and the metadata that tells packyard's domains from anyone else's.

A domain is named `pky-<node>-<instance id>` (sanitised; a hash suffix when something had to be
changed or cut) and carries `<packyard:instance id=.. node=.. job=.. group=../>` in its libvirt
metadata: `recover` and cleanup only ever touch domains whose metadata names this node.
"""
from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from agent.drivers.vm.gpus import PciAddress

NS = "https://packyard.dev/xmlns/v1"
PREFIX = "pky-"
MAX_NAME = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")

ET.register_namespace("packyard", NS)


def domain_name(node: str, instance_id: str) -> str:
    raw = f"{PREFIX}{node}-{instance_id}"
    name = _UNSAFE.sub("_", raw)
    if name != raw or len(name) > MAX_NAME:
        digest = hashlib.sha1(raw.encode()).hexdigest()[:8]
        name = f"{name[:MAX_NAME - 9]}-{digest}"
    return name


@dataclass(frozen=True)
class Nic:
    """`bridge`: a bridge in libvirtd's own network namespace; `ethernet`: a tap the agent made."""
    kind: str                     # bridge | ethernet
    device: str                   # bridge name, or tap name
    mac: str = ""


@dataclass(frozen=True)
class DomainConfig:
    name: str
    instance_id: str
    node: str
    job: str
    group: str
    accelerator: str              # kvm | tcg
    vcpus: int
    memory_bytes: int             # the guest's memory (the request)
    console_log: str              # serial console, written by virtlogd
    kernel: str = ""
    initrd: str = ""
    cmdline: str = ""
    disk: str = ""                # this instance's overlay
    disk_format: str = "qcow2"
    nics: tuple[Nic, ...] = ()
    cpu_quota_milli: int = 0      # 0: no cgroup cpu limit on the whole QEMU process
    memory_hard_limit: int = 0    # 0: no cgroup memory limit on the whole QEMU process
    hostdevs: tuple[PciAddress, ...] = ()    # PCI devices passed through: the instance's GPUs
    extra: dict[str, str] = field(default_factory=dict)


def render(c: DomainConfig) -> str:
    dom = ET.Element("domain", type="kvm" if c.accelerator == "kvm" else "qemu")
    _text(dom, "name", c.name)
    meta = ET.SubElement(dom, "metadata")
    ET.SubElement(meta, f"{{{NS}}}instance", id=c.instance_id, node=c.node, job=c.job, group=c.group)
    _text(dom, "memory", str(_kib(c.memory_bytes)), unit="KiB")
    _text(dom, "vcpu", str(c.vcpus))
    if c.memory_hard_limit:
        tune = ET.SubElement(dom, "memtune")
        _text(tune, "hard_limit", str(_kib(c.memory_hard_limit)), unit="KiB")
    if c.cpu_quota_milli:
        # the whole QEMU process (vCPUs, emulator and I/O threads) shares cpu_quota_milli
        tune = ET.SubElement(dom, "cputune")
        _text(tune, "global_period", "100000")
        _text(tune, "global_quota", str(c.cpu_quota_milli * 100))
    os_ = ET.SubElement(dom, "os")
    _text(os_, "type", "hvm", arch="x86_64", machine="pc")
    if c.kernel:
        _text(os_, "kernel", c.kernel)
        if c.initrd:
            _text(os_, "initrd", c.initrd)
        if c.cmdline:
            _text(os_, "cmdline", c.cmdline)
    else:
        ET.SubElement(os_, "boot", dev="hd")
    features = ET.SubElement(dom, "features")
    ET.SubElement(features, "acpi")          # graceful stop is an ACPI power-button press
    ET.SubElement(features, "apic")
    _text(dom, "on_poweroff", "destroy")
    _text(dom, "on_reboot", "restart")
    _text(dom, "on_crash", "destroy")
    devices = ET.SubElement(dom, "devices")
    if c.disk:
        disk = ET.SubElement(devices, "disk", type="file", device="disk")
        ET.SubElement(disk, "driver", name="qemu", type=c.disk_format)
        ET.SubElement(disk, "source", file=c.disk)
        ET.SubElement(disk, "target", dev="vda", bus="virtio")
    for nic in c.nics:
        iface = ET.SubElement(devices, "interface", type=nic.kind)
        if nic.kind == "bridge":
            ET.SubElement(iface, "source", bridge=nic.device)
        else:
            ET.SubElement(iface, "target", dev=nic.device, managed="no")
        if nic.mac:
            ET.SubElement(iface, "mac", address=nic.mac)
        ET.SubElement(iface, "model", type="virtio")
    devices.extend(hostdev(a) for a in c.hostdevs)
    serial = ET.SubElement(devices, "serial", type="pty")
    ET.SubElement(serial, "log", file=c.console_log, append="on")
    ET.SubElement(serial, "target", port="0")
    console = ET.SubElement(devices, "console", type="pty")
    ET.SubElement(console, "target", type="serial", port="0")
    ET.SubElement(devices, "memballoon", model="none")
    return ET.tostring(dom, encoding="unicode")


def hostdev(a: PciAddress) -> ET.Element:
    """A PCI device passed through, managed: libvirt binds it to vfio-pci while the domain runs."""
    dev = ET.Element("hostdev", mode="subsystem", type="pci", managed="yes")
    ET.SubElement(ET.SubElement(dev, "source"), "address", domain=f"0x{a.domain:04x}", bus=f"0x{a.bus:02x}",
                  slot=f"0x{a.slot:02x}", function=f"0x{a.function:x}")
    return dev


@dataclass(frozen=True)
class Identity:
    instance_id: str
    node: str
    job: str
    group: str


def identity(xml: str) -> Identity | None:
    """packyard's metadata of a domain's XML, or None when it is not packyard's."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    el = root.find(f"metadata/{{{NS}}}instance")
    if el is None or not el.get("id") or not el.get("node"):
        return None
    return Identity(el.get("id", ""), el.get("node", ""), el.get("job", ""), el.get("group", ""))


def mac_address(key: str) -> str:
    """A stable, locally administered MAC for an instance (52:54:00 is QEMU's prefix)."""
    h = hashlib.sha1(key.encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in h[:3])


def _kib(n: int) -> int:
    return (n + 1023) // 1024


def _text(parent: ET.Element, tag: str, text: str, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, **attrs)
    el.text = text
    return el
