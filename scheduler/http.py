"""The scheduler's HTTP side (on --metrics): Prometheus metrics, and service discovery for
Prometheus (`http_sd_configs`), so every agent is scraped without hand-written targets.

    /metrics      the scheduler's own metrics, plus per-node capacity / allocated / usage
    /sd/agents    [{"targets": ["<agent metrics address>"], "labels": {"node": .., "zone": ..}}]

Served from a stdlib thread: it only reads the controller's cache (a snapshot of dicts).
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.core import GaugeMetricFamily

from packyard.httpserve import HTTPServer
from packyard.records import ResourceAmounts
from scheduler.controller import Controller
from scheduler.placement.table import RESOURCES

AMOUNTS = {"cpu_milli": ("cpu_cores", 1000.0), "memory_bytes": ("memory_bytes", 1.0),
           "disk_bytes": ("disk_bytes", 1.0), "gpu_milli": ("gpus", 1000.0)}


def sd_targets(controller: Controller) -> list[dict]:
    out = []
    for name, node in sorted(list(controller.state.nodes.items())):
        address = node.attributes.get("metrics.address")
        if not address:
            continue
        labels = {"node": name, **{f"label_{k}": v for k, v in node.labels.items()}}
        out.append({"targets": [address], "labels": labels})
    return out


class ClusterCollector:
    """Per-node capacity, reservations and measured usage, and the packing efficiency."""

    def __init__(self, controller: Controller):
        self.c = controller

    def describe(self):
        return []

    def collect(self):
        # the event loop changes the cache while this thread reads it: on a clash, read again
        for _ in range(5):
            try:
                return self._collect()
            except RuntimeError:   # "dictionary changed size during iteration"
                continue
        return []

    def _collect(self):
        state = self.c.state
        alloc = state.allocated()
        cap = GaugeMetricFamily("packyard_node_capacity", "What a node offers.", labels=["node", "resource"])
        res = GaugeMetricFamily("packyard_node_allocated", "Reserved on a node, overhead included.",
                                labels=["node", "resource"])
        use = GaugeMetricFamily("packyard_node_usage", "Measured use by a node's instances.",
                                labels=["node", "resource"])
        up = GaugeMetricFamily("packyard_node_ready", "1 if the node's lease is alive.", labels=["node"])
        for name, node in list(state.nodes.items()):
            up.add_metric([name], 1)
            capacity, allocated = ResourceAmounts.of(node.capacity), alloc.get(name, ResourceAmounts())
            for field in RESOURCES:
                unit, scale = AMOUNTS[field]
                cap.add_metric([name, unit], getattr(capacity, field) / scale)
                res.add_metric([name, unit], getattr(allocated, field) / scale)
            usage = state.usage.get(name)
            if usage is not None:
                use.add_metric([name, "cpu_cores"], usage.host.get("cpu_milli", 0) / 1000)
                use.add_metric([name, "memory_bytes"], usage.host.get("memory_bytes", 0))
        for name in list(state.down):
            up.add_metric([name], 0)
        in_use = GaugeMetricFamily("packyard_packing_hosts_in_use", "Nodes holding at least one reservation.")
        in_use.add_metric([], sum(1 for a in alloc.values() if a.cpu_milli or a.memory_bytes))
        bound = GaugeMetricFamily("packyard_packing_lower_bound_hosts",
                                  "Fewest nodes the current reservations could fit on (per-resource bound).")
        bound.add_metric([], lower_bound(state, alloc))
        profile = GaugeMetricFamily("packyard_profile_overhead_bytes",
                                    "Overhead reserved per instance, by kind and size class.",
                                    labels=["kind", "size_class", "source"])
        for kind, p in self.c.learner.profiles().items():
            profile.add_metric([kind, "any", "default"], p.fixed_memory)
            for c in p.learned:
                profile.add_metric([kind, str(c.size_class), "learned"], c.overhead_memory)
        return [cap, res, use, up, in_use, bound, profile]


def lower_bound(state, alloc: dict[str, ResourceAmounts]) -> int:
    """Total reserved / the largest node, per resource, rounded up; the largest of those."""
    nodes = list(state.nodes.values())
    if not nodes:
        return 0
    best = 0
    for field in ("cpu_milli", "memory_bytes"):
        largest = max(n.capacity.get(field, 0) for n in nodes)
        total = sum(getattr(a, field) for a in alloc.values())
        if largest:
            best = max(best, -(-total // largest))
    return int(best)


def serve_http(controller: Controller, host: str, port: int) -> HTTPServer:
    REGISTRY.register(ClusterCollector(controller))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the stdlib's name)
            if self.path.startswith("/metrics"):
                body, kind = generate_latest(REGISTRY), CONTENT_TYPE_LATEST
            elif self.path.startswith("/sd/agents"):
                body, kind = json.dumps(sd_targets(controller)).encode(), "application/json"
            else:
                self.send_error(404, "try /metrics or /sd/agents")
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # quiet: Prometheus scrapes every few seconds
            pass

    server = HTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
