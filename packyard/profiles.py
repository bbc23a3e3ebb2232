"""Overhead profiles: what a workload costs its host beyond what it asks for.

A VM costs its guest memory plus QEMU's own (device emulation, page tables for the guest memory,
per-vCPU threads); a container costs almost nothing beyond its limit, because runc exits after
start and the cgroup itself is the limit. The scheduler reserves request + overhead, and the agent
sets the enforced limit to the same sum, so the accounting on both sides agrees.

A profile has a formula (fixed + per vCPU + a share of guest memory) and, once agents have measured
enough running instances, learned values per size class (guest memory rounded up to a power of
two): the high percentile of the measured overheads plus a margin. A learned class overrides the
formula for requests of that class; the formula stays the default for classes not yet seen.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from packyard.records import ResourceAmounts

MIB = 1 << 20
MIN_CLASS = 64 * MIB


def size_class(memory_bytes: int) -> int:
    """The size class of a request: its memory rounded up to a power of two (at least 64 MiB)."""
    return max(MIN_CLASS, 1 << max(0, math.ceil(math.log2(max(memory_bytes, 1)))))


@dataclass(frozen=True)
class LearnedClass:
    size_class: int                # bytes: requests with memory <= this (and > half of it)
    samples: int                   # instances measured
    p50: int                       # bytes of overhead, median over instances
    p95: int
    overhead_memory: int           # what placements reserve: p95 plus the margin


@dataclass(frozen=True)
class Profile:
    kind: str
    fixed_memory: int = 0          # bytes per instance
    per_vcpu_memory: int = 0       # bytes per requested core (rounded up to whole vCPUs)
    memory_fraction: float = 0.0   # share of the requested memory (guest page tables)
    fixed_cpu_milli: int = 0       # milli-cores per instance (emulator / I/O threads)
    learned: tuple[LearnedClass, ...] = field(default=())

    def formula_memory(self, request: ResourceAmounts) -> int:
        vcpus = max(1, math.ceil(request.cpu_milli / 1000))
        return (self.fixed_memory + self.per_vcpu_memory * vcpus
                + int(math.ceil(self.memory_fraction * request.memory_bytes)))

    def learned_for(self, request: ResourceAmounts) -> LearnedClass | None:
        wanted = size_class(request.memory_bytes)
        return next((c for c in self.learned if c.size_class == wanted), None)

    def overhead(self, request: ResourceAmounts) -> ResourceAmounts:
        learned = self.learned_for(request)
        memory = learned.overhead_memory if learned else self.formula_memory(request)
        return ResourceAmounts(cpu_milli=self.fixed_cpu_milli, memory_bytes=memory)

    def reserve(self, request: ResourceAmounts) -> ResourceAmounts:
        """Request plus overhead: what a placement reserves and what the host enforces."""
        return request + self.overhead(request)

    def with_learned(self, classes: tuple[LearnedClass, ...]) -> Profile:
        return replace(self, learned=tuple(sorted(classes, key=lambda c: c.size_class)))


# The VM formula is measured on this stack (issue 4): QEMU 7.2 under TCG with the project's busybox
# guest, QEMU's RSS minus the RSS of the guest-RAM mapping (/proc/<qemu>/smaps): 99.5-106.9 MiB for
# 256 MiB to 1 GiB guests, independent of guest size (TCG's translation buffer is 48 MiB of it),
# about +6.5 MiB for a second vCPU. Fixed 112 MiB covers the worst seen with ~5% to spare; guest
# page tables are kernel memory outside RSS, hence the small share of guest memory.
DEFAULTS: dict[str, Profile] = {
    # netns, veth and cgroup bookkeeping are kernel memory outside the container's cgroup
    "container": Profile("container", fixed_memory=1 * MIB),
    "vm": Profile("vm", fixed_memory=112 * MIB, per_vcpu_memory=8 * MIB, memory_fraction=0.002,
                  fixed_cpu_milli=50),
}
