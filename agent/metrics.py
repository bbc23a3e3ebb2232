"""The agent's /metrics: Prometheus text exposition (format 0.0.4) of its collectors, served by one
small thread.

prometheus_client is what the scheduler uses; in the agent, importing it (with the http.server,
wsgiref, urllib.request and email modules it pulls in) cost ~3 MiB of the 60 MiB budget (issue 5),
for what is here: two metric family types, a registry and a plain HTTP responder. The output is
the same as prometheus_client's for these families (tests/agent/test_metrics.py compares them),
including the process_* series of its default collector.
"""
from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time

log = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _number(v: float) -> str:
    v = float(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v)


def _label_value(v: str) -> str:
    return v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class MetricFamily:
    type = "untyped"
    suffix = ""

    def __init__(self, name: str, documentation: str, labels: list[str] | tuple[str, ...] = ()):
        self.name = name + self.suffix
        self.documentation = documentation
        self.labels = tuple(labels)
        self.samples: list[tuple[dict[str, str], float]] = []

    def add_metric(self, values: list[str], value: float) -> None:
        self.samples.append((dict(zip(self.labels, values, strict=True)), value))

    def render(self) -> str:
        doc = self.documentation.replace("\\", r"\\").replace("\n", r"\n")
        lines = [f"# HELP {self.name} {doc}", f"# TYPE {self.name} {self.type}"]
        for labels, value in self.samples:
            text = ",".join(f'{k}="{_label_value(str(v))}"' for k, v in sorted(labels.items()))
            lines.append(f"{self.name}{{{text}}} {_number(value)}" if text else f"{self.name} {_number(value)}")
        return "\n".join(lines) + "\n"


class CounterMetricFamily(MetricFamily):
    type = "counter"
    suffix = "_total"


class GaugeMetricFamily(MetricFamily):
    type = "gauge"


class ProcessCollector:
    """process_* of this process, as Prometheus' client libraries export them."""

    def collect(self) -> list[MetricFamily]:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        boot = 0.0
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime "):
                    boot = float(line.split()[1])
        out = []
        for cls, name, doc, value in (
                (GaugeMetricFamily, "process_virtual_memory_bytes", "Virtual memory size in bytes.",
                 float(fields[20])),
                (GaugeMetricFamily, "process_resident_memory_bytes", "Resident memory size in bytes.",
                 float(fields[21]) * PAGE_SIZE),
                (GaugeMetricFamily, "process_start_time_seconds",
                 "Start time of the process since unix epoch in seconds.", float(fields[19]) / CLOCK_TICKS + boot),
                (CounterMetricFamily, "process_cpu_seconds", "Total user and system CPU time spent in seconds.",
                 (float(fields[11]) + float(fields[12])) / CLOCK_TICKS),
                (GaugeMetricFamily, "process_open_fds", "Number of open file descriptors.",
                 float(len(os.listdir("/proc/self/fd"))))):
            family = cls(name, doc)
            family.add_metric([], value)
            out.append(family)
        return out


class Registry:
    def __init__(self) -> None:
        self._collectors: list = []
        self._lock = threading.Lock()

    def register(self, collector) -> None:
        with self._lock:
            self._collectors.append(collector)

    def unregister(self, collector) -> None:
        with self._lock:
            self._collectors.remove(collector)

    def render(self) -> bytes:
        with self._lock:
            collectors = list(self._collectors)
        parts = []
        for c in collectors:
            try:
                parts += [family.render() for family in c.collect()]
            except Exception:   # one broken collector must not take the others' series down
                log.exception("metrics collector %r failed", c)
        return "".join(parts).encode()


REGISTRY = Registry()
REGISTRY.register(ProcessCollector())


def start_http_server(port: int, addr: str = "0.0.0.0", registry: Registry = REGISTRY) -> socket.socket:
    """Serve the registry on ADDR:PORT (every path; one connection at a time) from a daemon thread;
    the listening socket is returned (closing it stops the thread)."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((addr, port))
    sock.listen(16)
    threading.Thread(target=_serve, args=(sock, registry), name="metrics-http", daemon=True).start()
    return sock


def _serve(sock: socket.socket, registry: Registry) -> None:
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:          # closed
            return
        with conn:
            try:
                conn.settimeout(5)
                _answer(conn, registry)
            except OSError as e:     # a client that went away or never sent its request
                log.debug("metrics request: %s", e)


def _answer(conn: socket.socket, registry: Registry) -> None:
    request, deadline = b"", time.monotonic() + 5
    while b"\r\n\r\n" not in request and b"\n\n" not in request and len(request) < 16384:
        chunk = conn.recv(4096)
        if not chunk or time.monotonic() > deadline:
            break
        request += chunk
    method = request.split(b" ", 1)[0]
    if method not in (b"GET", b"HEAD"):
        conn.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        return
    body = registry.render()
    head = (f"HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode()
    conn.sendall(head + (body if method == b"GET" else b""))
