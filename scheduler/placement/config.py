"""EngineConfig: one pipeline, configured. Bin-pack versus spread, the peers' policies, overhead
profiles, overcommit ratios, host reserves and how GPUs are counted are settings here, not forks
of the code (nor process-wide switches)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from packyard.profiles import DEFAULTS, Profile
from packyard.records import ResourceAmounts
from scheduler.placement import gpumodel
from scheduler.placement.mix import WorkloadMix
from scheduler.placement.scorers import MIX_SCORERS, REGISTRY

# name -> (scorer, weight) pairs. The peers' are re-derived from their published formulas
# (FIELD-NOTES.md); unlike the peers, every feasible host is scored (no sampling).
POLICIES: dict[str, tuple[tuple[str, float], ...]] = {
    # GPUs kept usable first: the fragmentation gradient and GPU stranding, weighted so that they
    # decide whenever GPUs are at stake (both measure in GPUs over the largest host's GPUs); then
    # cpu and memory kept in the proportion the mix asks for them (balance); then stay on hosts in
    # use unless balance gains ~5% of a host (occupied); the fullest host breaks ties (binpack).
    # Without GPUs the first two score 0.5 everywhere. bench/PACKING.md has the measurements.
    "packyard": (("fragmentation", 30.0), ("stranding", 7.5), ("balance", 2.0), ("occupied", 0.05),
                 ("binpack", 0.01)),
    "nomad-binpack": (("nomad_binpack", 1.0),),
    "k8s-default": (("least_allocated", 1.0), ("balanced_allocation", 1.0)),
    "k8s-mostallocated": (("most_allocated", 1.0),),
}
DEFAULT_POLICY = "packyard"
OVERCOMMITTABLE = ("cpu_milli", "memory_bytes", "disk_bytes")


@dataclass(frozen=True)
class EngineConfig:
    profiles: Mapping[str, Profile] = field(default_factory=lambda: dict(DEFAULTS))
    scorers: tuple[tuple[str, float], ...] = POLICIES[DEFAULT_POLICY]
    # resource name -> ratio, e.g. {"cpu_milli": 2.0}: hosts offer capacity x ratio
    overcommit: Mapping[str, float] = field(default_factory=dict)
    # kept back on every host for the OS and the agent (gpu_milli must be 0: GPUs are devices)
    host_reserve: ResourceAmounts = field(default_factory=ResourceAmounts)
    # the workloads expected to arrive, for the fragmentation and stranding scorers; None: the
    # Plan learns it from the asks it sees (causal, mix.MixLearner)
    workload_mix: WorkloadMix | None = None
    # False re-runs the whole pipeline for every instance: the reference the tests compare against
    incremental: bool = True
    # preemption (only when place() is given the running instances): a victim's priority must be
    # at most the ask's minus this (Nomad's 10); never equal or higher, so at least 1
    preempt_margin: int = 10
    max_cached_classes: int = 512
    # how a host's GPUs are counted (gpumodel.py): "devices", what hosts run, or "pooled", how the
    # peers' published figures count them (packyard-bench pack --gpu-model). The host table must
    # be built for the same model: HostTable.from_hosts(hosts, gpu_model=config.gpu_model)
    gpu_model: str = gpumodel.DEVICES

    def __post_init__(self) -> None:
        unknown = [name for name, _ in self.scorers if name not in REGISTRY]
        if unknown:
            raise ValueError(f"unknown scorer {unknown[0]!r}; known: {', '.join(sorted(REGISTRY))}")
        if not self.scorers or any(w < 0 for _, w in self.scorers) or sum(w for _, w in self.scorers) <= 0:
            raise ValueError("scorer weights must be non-negative with a positive sum")
        for name, ratio in self.overcommit.items():
            if name not in OVERCOMMITTABLE:
                raise ValueError(f"cannot overcommit {name!r}; only {', '.join(OVERCOMMITTABLE)}")
            if ratio <= 0:
                raise ValueError(f"overcommit ratio for {name} must be positive")
        if self.preempt_margin < 1:
            raise ValueError("preempt_margin must be at least 1: never evict equal priority")
        if self.host_reserve.gpu_milli:
            raise ValueError("host_reserve cannot hold back GPUs")
        gpumodel.device_milli(self.gpu_model)   # refuses an unknown model

    @classmethod
    def for_policy(cls, policy: str, **kwargs) -> EngineConfig:
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}; known: {', '.join(POLICIES)}")
        return cls(scorers=POLICIES[policy], **kwargs)

    @property
    def device_milli(self) -> int:
        """milli-GPUs in one device under the config's GPU model."""
        return gpumodel.device_milli(self.gpu_model)

    def uses_mix(self) -> bool:
        return any(name in MIX_SCORERS and weight > 0 for name, weight in self.scorers)

    def overcommit_ratios(self) -> tuple[float, float, float, float]:
        cpu, mem, disk = (float(self.overcommit.get(n, 1.0)) for n in OVERCOMMITTABLE)
        return cpu, mem, disk, 1.0
