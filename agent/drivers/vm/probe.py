"""Which accelerator really runs a guest here: probed, not assumed.

`/dev/kvm` opening proves little: with broken nested virtualisation a `<domain type='kvm'>` Linux
guest spins at 100% CPU and never prints (FIELD-NOTES), while a real-mode boot sector still runs
fine there (measured: a 512-byte boot sector printed under KVM on this machine). So the probe boots
what workloads boot, a Linux kernel (the host's newest /boot/vmlinuz-*, or the one given), with a
generated initramfs whose /init (a 140-byte static ELF, PROBE_INIT) writes MARKER to the console and
powers off. The marker proves protected mode, long mode, the kernel's whole init and user space.
Without a kernel to boot, only TCG is probed (with PROBE_SECTOR, a boot sector printing MARKER to
COM1) and KVM is not trusted.

`choose` probes KVM and TCG side by side (threads), so the bound is max(kvm_timeout, tcg_timeout),
not their sum. Its result is cached in the agent's state dir (PROBE_CACHE) keyed by the libvirt and
QEMU versions, the host kernel and the probe kernel, so an agent restart does not pay for it again;
a cache older than CACHE_MAX_AGE is probed again.
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
import platform
import re
import signal
import struct
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import libvirt

from agent.drivers.vm import domain as dom

MARKER = b"packyard-probe: ok"
PROBE_CACHE = "vm-probe.json"
CACHE_MAX_AGE = 24 * 3600.0
KVM_TIMEOUT = 8.0             # a working KVM reaches /init in ~1 s
TCG_TIMEOUT = 30.0            # TCG needs ~5-7 s here
PROBE_ID = "-probe"          # never a valid instance id prefix: names cannot collide with instances

# cli; xor ax,ax; mov ds,ax; cld; mov si,msg; mov dx,0x3f8
# 1: lodsb; test al,al; jz 2f; out dx,al; jmp 1b;  2: hlt; jmp 2b;  msg: "packyard-probe: ok\r\n\0"
_CODE = bytes.fromhex("fa31c08ed8fcbe177cbaf803ac84c07403eeebf8f4ebfd")
PROBE_SECTOR = (_CODE + MARKER + b"\r\n\0").ljust(510, b"\0") + b"\x55\xaa"

# x86-64: write(1, msg, len); reboot(0xfee1dead, 0x28121969, LINUX_REBOOT_CMD_POWER_OFF); jmp .
_MSG = MARKER + b"\n"
_INIT_CODE = (bytes.fromhex("b801000000" "bf01000000" "488d351f000000") + b"\xba" + len(_MSG).to_bytes(4, "little")
              + bytes.fromhex("0f05" "b8a9000000" "bfaddee1fe" "be69191228" "badcfe2143" "0f05" "ebfe") + _MSG)


def _elf(code: bytes, base: int = 0x400000) -> bytes:
    """A static x86-64 ELF executable: one PT_LOAD segment holding the headers and `code`."""
    ehsize, phsize = 64, 56
    size = ehsize + phsize + len(code)
    header = (b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
              + struct.pack("<HHIQQQIHHHHHH", 2, 0x3E, 1, base + ehsize + phsize, ehsize, 0, 0,
                            ehsize, phsize, 1, 0, 0, 0))
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, size, size, 0x1000)
    return header + phdr + code


def _cpio(files: dict[str, tuple[int, bytes]]) -> bytes:
    """A newc cpio archive (what the kernel unpacks as initramfs): {name: (mode, data)}."""
    out = bytearray()
    for ino, (name, (mode, data)) in enumerate([*files.items(), ("TRAILER!!!", (0, b""))], 1):
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0)
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + name.encode() + b"\0"
        out += bytes(-len(out) % 4) + data + bytes(-(len(out) + len(data)) % 4)
    return bytes(out)


PROBE_INIT = _elf(_INIT_CODE)
PROBE_INITRD = _cpio({"init": (0o100755, PROBE_INIT)})
PROBE_CMDLINE = "console=ttyS0 quiet nokaslr panic=-1"


def default_kernel() -> str:
    """The newest kernel in /boot, or "" if there is none."""
    kernels = sorted(glob.glob("/boot/vmlinuz-*"), key=_version_key)
    return kernels[-1] if kernels else ""


def _version_key(path: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path)]


@dataclass(frozen=True)
class ProbeResult:
    accelerator: str          # kvm | tcg
    ok: bool
    seconds: float
    detail: str               # why not, when not ok


@dataclass(frozen=True)
class Choice:
    accelerator: str          # kvm | tcg | "" (none works)
    results: tuple[ProbeResult, ...]
    probed_at: float
    key: str

    def attributes(self) -> dict[str, str]:
        attrs = {"vm.accelerator": self.accelerator or "none"}
        for r in self.results:
            attrs[f"vm.probe.{r.accelerator}"] = "ok" if r.ok else f"failed: {r.detail}"
        return attrs


def probe(conn: libvirt.virConnect, accelerator: str, timeout: float, workdir: Path,
          node: str, kernel: str = "") -> ProbeResult:
    """Boot the probe guest under `accelerator` (kvm | tcg): `kernel` with PROBE_INITRD, or
    PROBE_SECTOR from a disk when no kernel is given. ok if MARKER reaches the serial console
    within `timeout` seconds. Blocking (call it from a thread); always removes its domain and files."""
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o711)                     # QEMU runs as libvirt-qemu: it must reach the files
    image, log = workdir / f"probe-{accelerator}.img", workdir / f"probe-{accelerator}.log"
    if kernel:
        image.write_bytes(PROBE_INITRD)
        boot = {"kernel": kernel, "initrd": str(image), "cmdline": PROBE_CMDLINE}
    else:
        image.write_bytes(PROBE_SECTOR.ljust(1 << 20, b"\0"))   # SeaBIOS skips tiny disks
        boot = {"disk": str(image), "disk_format": "raw"}
    os.chmod(image, 0o644)
    log.unlink(missing_ok=True)
    name = dom.domain_name(node, f"{PROBE_ID}-{accelerator}")
    _destroy_leftover(conn, name, node)
    xml = dom.render(dom.DomainConfig(
        name=name, instance_id=f"{PROBE_ID}-{accelerator}", node=node, job="", group="",
        accelerator=accelerator, vcpus=1, memory_bytes=128 << 20, console_log=str(log), **boot))
    start = time.monotonic()
    domain = None
    try:
        try:
            domain = conn.createXML(xml, 0)
        except libvirt.libvirtError as e:
            return ProbeResult(accelerator, False, time.monotonic() - start, _short(e))
        while time.monotonic() - start < timeout:
            if _has_marker(log):
                return ProbeResult(accelerator, True, time.monotonic() - start, "")
            with contextlib.suppress(libvirt.libvirtError):
                if not domain.isActive():
                    ok = _has_marker(log)        # the probe guest powers itself off
                    return ProbeResult(accelerator, ok, time.monotonic() - start,
                                       "" if ok else "the guest stopped before printing")
            time.sleep(0.05)
        return ProbeResult(accelerator, False, time.monotonic() - start,
                           f"no output from the guest within {timeout:g}s")
    finally:
        if domain is not None:
            _dispose(domain, name)
        image.unlink(missing_ok=True)
        log.unlink(missing_ok=True)


def choose(conn: libvirt.virConnect, state_dir: Path, node: str, kernel: str | None = None,
           kvm_timeout: float = KVM_TIMEOUT, tcg_timeout: float = TCG_TIMEOUT,
           use_cache: bool = True) -> Choice:
    """The accelerator to run guests with: KVM if its probe guest prints, else TCG if its does.
    Blocking; reads and writes the cache in `state_dir`. `kernel` None: default_kernel()."""
    kernel = default_kernel() if kernel is None else kernel
    key = cache_key(conn, kernel)
    path = Path(state_dir) / PROBE_CACHE
    if use_cache:
        cached = _load(path, key)
        if cached is not None:
            return cached
    workdir = Path(state_dir) / "probe"
    found: dict[str, ProbeResult] = {}

    def run(accel: str, timeout: float) -> None:
        try:
            found[accel] = probe(conn, accel, timeout, workdir, node, kernel)
        except Exception as e:                   # reported as a failed probe, never raised
            found[accel] = ProbeResult(accel, False, 0.0, f"probe error: {e}")

    if not os.path.exists("/dev/kvm"):
        found["kvm"] = ProbeResult("kvm", False, 0.0, "/dev/kvm does not exist")
    elif not kernel:
        found["kvm"] = ProbeResult("kvm", False, 0.0, "not probed: no kernel in /boot to boot")
    threads = [threading.Thread(target=run, args=(a, t), name=f"packyard-probe-{a}", daemon=True)
               for a, t in (("kvm", kvm_timeout), ("tcg", tcg_timeout)) if a not in found]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results = (found["kvm"], found["tcg"])
    ok = [r.accelerator for r in results if r.ok]
    choice = Choice(ok[0] if ok else "", results, time.time(), key)
    _save(path, choice)
    return choice


def cache_key(conn: libvirt.virConnect, kernel: str) -> str:
    return (f"libvirt={conn.getLibVersion()} qemu={conn.getVersion()} host={platform.release()} "
            f"probe-kernel={kernel}")


def _load(path: Path, key: str) -> Choice | None:
    try:
        data = json.loads(path.read_text())
        if data["key"] != key or time.time() - data["probed_at"] > CACHE_MAX_AGE:
            return None
        return Choice(data["accelerator"], tuple(ProbeResult(**r) for r in data["results"]),
                      data["probed_at"], key)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _save(path: Path, choice: Choice) -> None:
    if not choice.accelerator:
        return                        # nothing works: probe again next time (libvirt may be fixed)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**asdict(choice), "results": [asdict(r) for r in choice.results]}))
    os.replace(tmp, path)


def _dispose(domain: libvirt.virDomain, name: str) -> None:
    """Remove a probe domain quickly: SIGKILL its QEMU (a disposable guest: libvirt's destroy would
    SIGTERM and wait), then let libvirt clean up."""
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(Path(f"/run/libvirt/qemu/{name}.pid").read_text()), signal.SIGKILL)
    with contextlib.suppress(libvirt.libvirtError):
        domain.destroy()
    Path(f"/var/log/libvirt/qemu/{name}.log").unlink(missing_ok=True)


def _has_marker(log: Path) -> bool:
    try:
        return MARKER in log.read_bytes()
    except FileNotFoundError:
        return False


def _destroy_leftover(conn: libvirt.virConnect, name: str, node: str) -> None:
    """A probe domain left by an agent that died mid-probe (only ours: same name and node)."""
    with contextlib.suppress(libvirt.libvirtError):
        d = conn.lookupByName(name)
        ident = dom.identity(d.XMLDesc(0))
        if ident is not None and ident.node == node and ident.instance_id.startswith(PROBE_ID):
            d.destroy()


def _short(e: libvirt.libvirtError) -> str:
    return (e.get_error_message() or str(e)).splitlines()[0][:200]
