"""What a host has: capacity (detected or given), and attributes for constraints."""
from __future__ import annotations

import os
import platform

from packyard.quantity import MAX_GPU_MILLI, parse_bytes, parse_cpu_milli
from packyard.records import ResourceAmounts


def detect_capacity() -> ResourceAmounts:
    cpu = len(os.sched_getaffinity(0)) * 1000
    memory = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) * 1024
                break
    st = os.statvfs("/")
    return ResourceAmounts(cpu_milli=cpu, memory_bytes=memory, disk_bytes=st.f_bavail * st.f_frsize)


def parse_capacity(text: str, detected: ResourceAmounts) -> ResourceAmounts:
    """`cpu=4,memory=8Gi[,disk=100Gi][,gpu=2]`; resources not named keep their detected value."""
    out = ResourceAmounts(**vars(detected))
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"'{part}' is not name=value")
        if name == "cpu":
            out.cpu_milli = parse_cpu_milli(value)
        elif name == "memory":
            out.memory_bytes = parse_bytes(value)
        elif name == "disk":
            out.disk_bytes = parse_bytes(value)
        elif name == "gpu":
            # a host has whole GPUs (jobs may ask for a share of one); 'inf' and 'nan' are no count
            if not value.strip().isdigit() or int(value) > MAX_GPU_MILLI // 1000:
                raise ValueError(f"gpu={value}: a host's GPUs are a whole number, 0 to {MAX_GPU_MILLI // 1000}")
            out.gpu_milli = int(value) * 1000
        else:
            raise ValueError(f"unknown resource '{name}' (cpu, memory, disk, gpu)")
    return out


def parse_labels(text: str) -> dict[str, str]:
    labels = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not name:
            raise ValueError(f"label '{part}' is not key=value")
        # a constraint names it as label.KEY: a space or '=' in a key could never be matched
        if any(c.isspace() or c == "=" for c in name) or not name.isprintable():
            raise ValueError(f"label key '{name}' has a space, '=' or a control character")
        if name in labels:     # zone=a,zone=b: which one the operator meant is not ours to guess
            raise ValueError(f"label '{name}' is given twice")
        labels[name] = value
    return labels


def host_attributes() -> dict[str, str]:
    uname = platform.uname()
    return {"kernel": uname.release, "arch": uname.machine, "os": "linux",
            "cpu.cores": str(len(os.sched_getaffinity(0)))}
