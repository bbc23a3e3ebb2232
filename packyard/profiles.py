"""Overhead profiles: what a workload costs its host beyond what it asks for.

A VM costs its guest memory plus QEMU's own (device emulation, page tables for the guest memory,
per-vCPU threads); a container costs almost nothing beyond its limit, because runc exits after
start and the cgroup itself is the limit. The scheduler reserves request + overhead, and the agent
sets the enforced limit to the same sum, so the accounting on both sides agrees.

The VM defaults are provisional until issue 4 replaces them with figures measured on this stack
(FIELD-NOTES: QEMU RSS ~66 MiB for a 128 MiB guest that touched little memory).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from packyard.records import ResourceAmounts

MIB = 1 << 20


@dataclass(frozen=True)
class Profile:
    kind: str
    fixed_memory: int = 0          # bytes per instance
    per_vcpu_memory: int = 0       # bytes per requested core (rounded up to whole vCPUs)
    memory_fraction: float = 0.0   # share of the requested memory (guest page tables)
    fixed_cpu_milli: int = 0       # milli-cores per instance (emulator / I/O threads)

    def overhead(self, request: ResourceAmounts) -> ResourceAmounts:
        vcpus = max(1, math.ceil(request.cpu_milli / 1000))
        memory = (self.fixed_memory + self.per_vcpu_memory * vcpus
                  + int(math.ceil(self.memory_fraction * request.memory_bytes)))
        return ResourceAmounts(cpu_milli=self.fixed_cpu_milli, memory_bytes=memory)

    def reserve(self, request: ResourceAmounts) -> ResourceAmounts:
        """Request plus overhead: what a placement reserves and what the host enforces."""
        return request + self.overhead(request)


DEFAULTS: dict[str, Profile] = {
    # netns, veth and cgroup bookkeeping are kernel memory outside the container's cgroup
    "container": Profile("container", fixed_memory=1 * MIB),
    "vm": Profile("vm", fixed_memory=80 * MIB, per_vcpu_memory=4 * MIB, memory_fraction=0.01,
                  fixed_cpu_milli=50),
}
