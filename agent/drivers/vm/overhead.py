"""What a VM really costs its host beyond its guest memory: measured on the QEMU process.

QEMU backs guest RAM with one anonymous mapping the size of the guest memory (`pc.ram`; a
PROT_NONE guard page follows it as a mapping of its own). Everything else QEMU holds resident is
overhead: its own code and heap, device emulation, TCG's translation cache (KVM: none), vCPU thread
stacks, page tables, firmware and option ROM copies. So, from /proc/<pid>/smaps:

    rss           = the sum of Rss over all mappings
    guest_backed  = Rss of the guest-RAM mapping (the guest touched that much of its memory)
    overhead      = rss - guest_backed

The guest-backed part grows as the guest touches memory (up to the guest size) and is the
guest's request; the overhead is what an overhead profile has to predict. The memory cgroup libvirt
puts QEMU in (`machine/qemu-<n>-<name>.libvirt-qemu`) also charges page cache (the kernel and
initrd QEMU read): `cgroup_bytes` is reported beside, not used for the overhead.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Measurement:
    pid: int
    rss_bytes: int
    guest_backed_bytes: int
    overhead_bytes: int
    cpu_seconds: float
    cgroup_bytes: int | None      # None: no memory cgroup found


def measure(pid: int, guest_memory_bytes: int) -> Measurement:
    """Measure the QEMU process `pid` backing a guest of `guest_memory_bytes`. Raises OSError when
    the process is gone or unreadable."""
    rss, guest = _smaps(pid, guest_memory_bytes)
    return Measurement(pid, rss, guest, rss - guest, cpu_seconds(pid), cgroup_memory(pid))


def cpu_seconds(pid: int) -> float:
    """User + system time of the whole process (every vCPU, emulator and I/O thread)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _smaps(pid: int, guest_memory_bytes: int) -> tuple[int, int]:
    guest_kib = guest_memory_bytes // 1024
    total = 0
    candidates: list[tuple[int, int]] = []       # (size kB, rss kB) of anonymous mappings
    size = rss = 0
    anonymous = False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split(None, 1)[0]
            if not head.endswith(":"):           # a mapping's first line: range perms off dev inode [path]
                if anonymous:
                    candidates.append((size, rss))
                parts = line.split()
                anonymous = len(parts) < 6 and parts[1].startswith("rw")
                size = rss = 0
            elif head == "Size:":
                size = int(line.split()[1])
            elif head == "Rss:":
                rss = int(line.split()[1])
                total += rss
    if anonymous:
        candidates.append((size, rss))
    guest = _guest_mapping(candidates, guest_kib)
    return total * 1024, guest * 1024


def _guest_mapping(candidates: list[tuple[int, int]], guest_kib: int) -> int:
    """Rss (kB) of the guest-RAM mapping: the anonymous mapping exactly the guest's size; else the
    smallest one at least that large (alignment padding); 0 if there is none."""
    exact = [rss for size, rss in candidates if size == guest_kib]
    if exact:
        return max(exact)
    larger = sorted((size, rss) for size, rss in candidates if size >= guest_kib)
    return larger[0][1] if larger else 0


def cgroup_memory(pid: int) -> int | None:
    """memory.usage_in_bytes (v1) or memory.current (v2) of the process's memory cgroup."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            f = Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "memory.usage_in_bytes"
        elif controllers == "" and Path("/sys/fs/cgroup/cgroup.controllers").exists():
            f = Path("/sys/fs/cgroup") / path.lstrip("/") / "memory.current"
        else:
            continue
        try:
            return int(f.read_text())
        except (OSError, ValueError):
            continue
    return None
