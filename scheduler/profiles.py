"""Learning overhead profiles from what the agents measure.

Each agent reports, per running VM, QEMU's memory beyond the guest RAM it backs. The learner keeps,
per kind and size class, the largest overhead seen for each of the last `window` instances (an
instance's overhead grows as it runs, so its maximum is the honest figure), and offers the high
percentile of those plus a margin as the class's overhead. The samples themselves are persisted in
etcd, so a restarted scheduler learns on from where it was.
"""
from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass

from packyard import records
from packyard.profiles import DEFAULTS, LearnedClass, Profile, size_class
from packyard.records import ProfileRecord, UsageRecord


@dataclass(frozen=True)
class LearnerConfig:
    percentile: float = 95.0
    # reserved = p95 x (1 + margin). 5%: the spread of QEMU's overhead between VMs of one class is
    # ~7% here (bench/vm_startup.py), so p95 + 5% covers every VM seen with the prediction within
    # 10% of what each really costs; and the enforced cgroup limit reads ~20 MiB below RSS.
    margin: float = 0.05
    min_samples: int = 3          # a class is used once this many instances were measured
    window: int = 200             # instances kept per class (the most recently measured)


def percentile(values: list[int], p: float) -> int:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def with_margin(value: int, margin: float) -> int:
    # rounded before the ceiling: 55 MiB x 1.1 must not become one byte more through float error
    return int(math.ceil(round(value * (1 + margin), 3)))


class ProfileLearner:
    def __init__(self, defaults: dict[str, Profile] | None = None, config: LearnerConfig | None = None):
        self.defaults = dict(defaults or DEFAULTS)
        self.config = config or LearnerConfig()
        self._samples: dict[tuple[str, int], OrderedDict[str, int]] = {}
        self.changed_kinds: set[str] = set()
        self._profiles: dict[str, Profile] | None = None

    def observe(self, usage: UsageRecord) -> None:
        for iid, raw in usage.instances.items():
            overhead = raw.get("overhead_memory_bytes")
            if overhead is None or overhead < 0:
                continue
            kind = raw.get("kind", "")
            key = (kind, size_class(raw.get("request_memory_bytes", 0)))
            samples = self._samples.setdefault(key, OrderedDict())
            if samples.get(iid, -1) >= overhead:
                continue
            samples[iid] = overhead
            samples.move_to_end(iid)
            while len(samples) > self.config.window:
                samples.popitem(last=False)
            self.changed_kinds.add(kind)
            self._profiles = None

    def classes(self, kind: str) -> tuple[LearnedClass, ...]:
        out = []
        for (k, cls), samples in sorted(self._samples.items()):
            if k != kind or len(samples) < self.config.min_samples:
                continue
            values = list(samples.values())
            p95 = percentile(values, self.config.percentile)
            out.append(LearnedClass(size_class=cls, samples=len(values), p50=percentile(values, 50),
                                    p95=p95, overhead_memory=with_margin(p95, self.config.margin)))
        return tuple(out)

    def profiles(self) -> dict[str, Profile]:
        """The defaults with every learned class applied: what placements use now."""
        if self._profiles is None:
            self._profiles = {kind: p.with_learned(self.classes(kind)) for kind, p in self.defaults.items()}
        return self._profiles

    # --- persistence (etcd /packyard/profiles/<kind>) ------------------------------------------
    def record(self, kind: str) -> ProfileRecord:
        classes = [{"size_class": cls, "samples": [[iid, v] for iid, v in samples.items()]}
                   for (k, cls), samples in sorted(self._samples.items()) if k == kind]
        return ProfileRecord(kind=kind, updated_at=time.time(), classes=classes)

    def load(self, raw: bytes) -> None:
        rec = records.loads(ProfileRecord, raw)
        for c in rec.classes:
            samples = self._samples.setdefault((rec.kind, int(c["size_class"])), OrderedDict())
            for iid, value in c.get("samples", []):
                samples[iid] = max(int(value), samples.get(iid, 0))
        self._profiles = None
