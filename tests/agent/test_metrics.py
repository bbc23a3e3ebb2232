"""The agent's /metrics: prometheus_client serving the usage collector's families under the names
and labels dashboards and alert rules use, next to the process_* series."""
from __future__ import annotations

import gzip
import http.server
import socket
import urllib.request

import prometheus_client

from agent.usage import UsageCollector
from packyard.httpserve import HTTPServer, serve_metrics
from packyard.records import UsageRecord

LABELS = 'kind="vm",node="n1",packyard_group="web",packyard_instance="i1",packyard_job="j1"'


class NoInstances:
    instances: dict = {}


def collector() -> UsageCollector:
    c = UsageCollector(etcd=None, node="n1", manager=NoInstances())
    c.latest = UsageRecord(node="n1", at=0.0, host={"cpu_milli": 250, "memory_bytes": 1234567},
                           instances={"i1": {"kind": "vm", "job": "j1", "group": "web", "cpu_milli": 1,
                                             "memory_bytes": 1234567, "oom_kills": 2,
                                             "overhead_memory_bytes": 4096}})
    c.cpu_seconds["i1"] = 3.5
    return c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_names_labels_and_the_standard_float_format():
    registry = prometheus_client.CollectorRegistry()
    registry.register(collector())
    text = prometheus_client.generate_latest(registry).decode()
    assert f"packyard_instance_cpu_seconds_total{{{LABELS}}} 3.5" in text
    assert f"packyard_instance_memory_bytes{{{LABELS}}} 1.234567e+06" in text
    assert f"packyard_instance_oom_kills_total{{{LABELS}}} 2.0" in text
    assert f"packyard_instance_overhead_memory_bytes{{{LABELS}}} 4096.0" in text
    assert 'packyard_host_usage{node="n1",resource="cpu_milli"} 250.0' in text
    assert "# TYPE packyard_instance_restarts_total counter" in text
    assert "# TYPE packyard_instance_check_failures_total counter" in text


def test_served_over_http_with_process_series_and_openmetrics():
    registry = prometheus_client.CollectorRegistry()
    registry.register(collector())
    prometheus_client.ProcessCollector(registry=registry)
    port = free_port()
    server = serve_metrics("127.0.0.1", port, registry)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics",
                                         headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        with urllib.request.urlopen(request, timeout=5) as r:
            assert r.headers["Content-Type"].startswith("application/openmetrics-text")
            assert r.read().decode().endswith("# EOF\n")
    finally:
        server.shutdown()
        server.server_close()
    assert f"packyard_instance_memory_bytes{{{LABELS}}} 1.234567e+06" in text
    rss = next(line for line in text.splitlines() if line.startswith("process_resident_memory_bytes "))
    assert float(rss.split()[1]) > 1 << 20


def test_metrics_listen_without_a_reverse_dns_lookup(monkeypatch):
    """http.server names itself by socket.getfqdn(address): where the resolver does not answer
    (an agent in its own network namespace) that waited 10 s before /metrics listened."""
    def no_dns(*_):
        raise AssertionError("reverse DNS lookup while binding")
    monkeypatch.setattr(socket, "getfqdn", no_dns)
    registry = prometheus_client.CollectorRegistry()
    registry.register(collector())
    for host in ("127.0.0.1", "::1"):
        port = free_port()
        server = serve_metrics(host, port, registry)
        try:
            url = f"http://{host if ':' not in host else f'[{host}]'}:{port}/metrics"
            gz = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
            with urllib.request.urlopen(gz, timeout=5) as r:
                assert r.headers["Content-Encoding"] == "gzip"
                assert b"packyard_host_usage" in gzip.decompress(r.read())
        finally:
            server.shutdown()
            server.server_close()
    plain = HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    try:
        assert plain.server_name == "127.0.0.1" and plain.server_port == plain.server_address[1]
    finally:
        plain.server_close()
