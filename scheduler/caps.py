"""Total caps on instances: per job (the sum of its groups' counts) and per cluster (every running
job's, the new one's in place of its old version), so that one submit cannot grow the scheduler's
state and etcd past what they hold. Checked before anything is written: a refused submit changes
nothing, and what was accepted before stays as it was.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from packyard.spec import JobSpec


@dataclass(frozen=True)
class Caps:
    per_job: int = 100_000          # scheduler --max-job-instances
    per_cluster: int = 500_000      # scheduler --max-cluster-instances


class OverCap(ValueError):
    """A submit asks for more instances than a cap allows (the message names the field)."""


def instances(spec: JobSpec, nodes: int) -> int:
    """The instances the spec asks for: a system job's group runs one per node (at most)."""
    if spec.type == "system":
        return sum(nodes for g in spec.groups if g.count > 0)
    return sum(g.count for g in spec.groups)


def check(spec: JobSpec, others: Iterable[JobSpec], nodes: int, caps: Caps) -> None:
    """Raise OverCap if `spec` (replacing any older version of itself) passes a cap; `others`:
    the specs of the cluster's other running jobs."""
    asked = instances(spec, nodes)
    if asked > caps.per_job:
        raise OverCap(f"groups[].count: the job asks for {asked} instances, more than the "
                      f"scheduler's --max-job-instances {caps.per_job}")
    total = asked + sum(instances(s, nodes) for s in others)
    if total > caps.per_cluster:
        raise OverCap(f"groups[].count: the cluster would run {total} instances with this job, more "
                      f"than the scheduler's --max-cluster-instances {caps.per_cluster}")
