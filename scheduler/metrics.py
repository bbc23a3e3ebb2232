"""The scheduler's Prometheus metrics (issue 5 adds the rest). Names follow the Prometheus
conventions: `packyard_` prefix, unit in the name, `_total` for counters."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PLACEMENTS = Counter("packyard_placements_total", "Instances placed on a node.", ["kind"])
UNPLACED = Counter("packyard_placement_failures_total",
                   "Placement attempts that left instances pending, by the first reason.", ["reason"])
PLACEMENT_SECONDS = Histogram(
    "packyard_placement_duration_seconds", "Time to place one evaluation's pending instances.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
PENDING = Gauge("packyard_pending_instances", "Instances waiting for a node.")
NODES = Gauge("packyard_nodes", "Nodes known to the scheduler.", ["state"])
INSTANCE_ENDS = Counter("packyard_instance_ends_total",
                        "Instances that ended, by final state and reason (OOMKilled, exit status N, ...).",
                        ["state", "reason"])
GC_SECONDS = Histogram(
    "packyard_scheduler_gc_seconds", "Python garbage collections in the scheduler (pauses), by generation.",
    ["generation"], buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
LEADER = Gauge("packyard_scheduler_leader", "1 if this scheduler replica runs placement.")
DEPLOYMENTS = Counter("packyard_deployments_total",
                      "Deployments ended (successful, failed) and failed ones reverted (auto_revert).", ["state"])
