"""Writes the Grafana dashboards (deploy/grafana/dashboards/*.json) from the panel lists below.

    python deploy/grafana/build.py

The JSON is committed; tests/deploy/test_observability.py checks it matches this script and runs
every panel's query against a real Prometheus scraping a real cluster.
"""
from __future__ import annotations

import json
import pathlib

OUT = pathlib.Path(__file__).resolve().parent / "dashboards"
DS = {"type": "prometheus", "uid": "packyard-prometheus"}

# dashboard uid -> (title, variables, [(panel title, type, unit, [exprs])])
DASHBOARDS = {
    "packyard-overview": ("packyard: cluster overview", [], [
        ("Hosts ready", "stat", "none", ["sum(packyard_node_ready)"]),
        ("Hosts in use vs lower bound", "timeseries", "none",
         ["packyard_packing_hosts_in_use", "packyard_packing_lower_bound_hosts"]),
        ("Packing efficiency (lower bound / hosts in use)", "gauge", "percentunit",
         ["packyard_packing_lower_bound_hosts / clamp_min(packyard_packing_hosts_in_use, 1)"]),
        ("Pending instances", "timeseries", "none", ["packyard_pending_instances"]),
        ("Reserved share of capacity", "timeseries", "percentunit",
         ["sum by (resource) (packyard_node_allocated{resource=~\"cpu_cores|memory_bytes\"})"
          " / sum by (resource) (packyard_node_capacity{resource=~\"cpu_cores|memory_bytes\"})"]),
        ("Used share of capacity", "timeseries", "percentunit",
         ["sum by (resource) (packyard_node_usage) / sum by (resource) (packyard_node_capacity)"]),
    ]),
    "packyard-hosts": ("packyard: hosts, reserved vs used", [], [
        ("CPU reserved per host", "heatmap", "percentunit",
         ["packyard_node_allocated{resource=\"cpu_cores\"} / on(node, resource) packyard_node_capacity"]),
        ("CPU used per host", "heatmap", "percentunit",
         ["packyard_node_usage{resource=\"cpu_cores\"} / on(node, resource) packyard_node_capacity"]),
        ("Memory reserved per host", "heatmap", "percentunit",
         ["packyard_node_allocated{resource=\"memory_bytes\"} / on(node, resource) packyard_node_capacity"]),
        ("Memory used per host", "heatmap", "percentunit",
         ["packyard_node_usage{resource=\"memory_bytes\"} / on(node, resource) packyard_node_capacity"]),
        ("Reserved minus used memory (stranded by over-asking)", "timeseries", "bytes",
         ["packyard_node_allocated{resource=\"memory_bytes\"} - on(node, resource) packyard_node_usage"]),
        ("Machine load (1 min)", "timeseries", "none", ["packyard_host_usage{resource=\"load1\"}"]),
    ]),
    "packyard-jobs": ("packyard: jobs", [("job", "label_values(packyard_instance_memory_bytes, packyard_job)")], [
        ("CPU per instance", "timeseries", "cores",
         ["rate(packyard_instance_cpu_seconds_total{packyard_job=~\"$job\"}[1m])"]),
        ("Memory per instance", "timeseries", "bytes",
         ["packyard_instance_memory_bytes{packyard_job=~\"$job\"}"]),
        ("Instances per node", "bargauge", "none",
         ["count by (node) (packyard_instance_memory_bytes{packyard_job=~\"$job\"})"]),
        ("OOM kills", "timeseries", "none",
         ["sum by (packyard_job) (packyard_instance_oom_kills_total{packyard_job=~\"$job\"})"]),
        ("Instance ends by state and reason (10 min)", "bargauge", "none",
         ["sum by (state, reason) (increase(packyard_instance_ends_total[10m]))"]),
    ]),
    "packyard-scheduler": ("packyard: scheduler health", [], [
        ("Placements per second", "timeseries", "ops",
         ["sum by (kind) (rate(packyard_placements_total[1m]))"]),
        ("Placement latency p50 / p99", "timeseries", "s",
         ["histogram_quantile(0.5, sum by (le) (rate(packyard_placement_duration_seconds_bucket[1m])))",
          "histogram_quantile(0.99, sum by (le) (rate(packyard_placement_duration_seconds_bucket[1m])))"]),
        ("Placement failures by reason", "timeseries", "ops",
         ["sum by (reason) (rate(packyard_placement_failures_total[1m]))"]),
        ("Leader", "stat", "none", ["max(packyard_scheduler_leader)"]),
        ("Overhead profile per kind and size class", "table", "bytes", ["packyard_profile_overhead_bytes"]),
        ("Scheduler resident memory", "timeseries", "bytes",
         ["process_resident_memory_bytes{job=\"packyard-scheduler\"}"]),
        ("Targets up", "stat", "none", ["sum by (job) (up)"]),
    ]),
}


def panel(i: int, title: str, kind: str, unit: str, exprs: list[str]) -> dict:
    return {
        "id": i + 1, "title": title, "type": kind, "datasource": DS,
        "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i // 2) * 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [{"refId": chr(ord("A") + k), "datasource": DS, "expr": e, "legendFormat": "__auto"}
                    for k, e in enumerate(exprs)],
    }


def dashboard(uid: str, title: str, variables, panels) -> dict:
    templating = [{"name": name, "type": "query", "datasource": DS, "query": query, "refresh": 2,
                   "includeAll": True, "multi": True, "allValue": ".*",
                   "current": {"text": "All", "value": "$__all"}} for name, query in variables]
    return {"uid": uid, "title": title, "schemaVersion": 39, "version": 1, "editable": True,
            "time": {"from": "now-1h", "to": "now"}, "refresh": "10s", "tags": ["packyard"],
            "templating": {"list": templating},
            "panels": [panel(i, *p) for i, p in enumerate(panels)]}


def build() -> dict[str, str]:
    return {f"{uid}.json": json.dumps(dashboard(uid, *spec), indent=2) + "\n"
            for uid, spec in DASHBOARDS.items()}


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for name, text in build().items():
        (OUT / name).write_text(text)
        print(OUT / name)
