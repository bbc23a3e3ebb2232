"""agent/metrics.py: the same text as prometheus_client for the families the agent exports, served
over HTTP; the process_* series present."""
from __future__ import annotations

import urllib.request

import prometheus_client
from prometheus_client import core

from agent import metrics


def families(mod):
    cpu = mod.CounterMetricFamily("packyard_instance_cpu_seconds", 'CPU "time"\\ used.\nnext',
                                  labels=["node", "packyard_job"])
    cpu.add_metric(["n1", 'odd "job"\\\n'], 3)
    mem = mod.GaugeMetricFamily("packyard_instance_memory_bytes", "Memory.", labels=["node", "kind"])
    mem.add_metric(["n1", "vm"], 2.5)
    mem.add_metric(["n1", "container"], float("inf"))
    empty = mod.GaugeMetricFamily("packyard_host_usage", "Usage.", labels=["node", "resource"])
    return [cpu, mem, empty]


class Collector:
    def __init__(self, mod):
        self.mod = mod

    def collect(self):
        return families(self.mod)


def test_text_is_prometheus_clients():
    theirs = prometheus_client.CollectorRegistry()
    theirs.register(Collector(core))
    ours = metrics.Registry()
    ours.register(Collector(metrics))
    assert ours.render() == prometheus_client.generate_latest(theirs)


def test_served_over_http_with_process_series():
    registry = metrics.Registry()
    registry.register(Collector(metrics))
    registry.register(metrics.ProcessCollector())
    sock = metrics.start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        port = sock.getsockname()[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            assert r.headers["Content-Type"] == metrics.CONTENT_TYPE
            text = r.read().decode()
    finally:
        sock.close()
    assert 'packyard_instance_memory_bytes{kind="vm",node="n1"} 2.5' in text
    rss = next(line for line in text.splitlines() if line.startswith("process_resident_memory_bytes "))
    assert float(rss.split()[1]) > 1 << 20
    assert "process_cpu_seconds_total " in text and "process_open_fds " in text
