"""HTTP servers for /metrics that listen at once, whatever the host's DNS.

The stdlib's `HTTPServer.server_bind` names the server `socket.getfqdn(host)`, a reverse DNS
lookup of the address it binds, used only for SERVER_NAME in a WSGI environ. On a host whose
resolver does not answer (an agent in its own network namespace, an air-gapped machine) that
lookup waits out glibc's timeouts, 5 s x 2 attempts, before /metrics listens: every agent start
in a test cluster waited 10 s on it. Both servers here bind with the address as their name and
are otherwise the stdlib's and prometheus_client's own.
"""
from __future__ import annotations

import socket
import socketserver
import threading
from http.server import ThreadingHTTPServer
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer


class _NoReverseLookup:
    """Binds as socketserver does, names itself by its address instead of reverse DNS."""

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]
        setup = getattr(self, "setup_environ", None)     # wsgiref's WSGIServer builds its base environ here
        if setup is not None:
            setup()


class HTTPServer(_NoReverseLookup, ThreadingHTTPServer):
    """A threading HTTP server (the scheduler's /metrics and /sd/agents)."""
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args) -> None:      # Prometheus scrapes every few seconds
        pass


def serve_metrics(host: str, port: int, registry: CollectorRegistry = REGISTRY) -> ThreadingWSGIServer:
    """prometheus_client's WSGI app (gzip, OpenMetrics negotiation, concurrent scrapes) on
    host:port in a daemon thread, as `prometheus_client.start_http_server` serves it; IPv6 too."""
    family, *_ = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]

    class Server(_NoReverseLookup, ThreadingWSGIServer):
        address_family = family

    server = make_server(host, port, make_wsgi_app(registry), Server, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
