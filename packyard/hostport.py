"""HOST:PORT flags of the scheduler and the agent (--listen, --metrics, ...), checked when parsed so a
bad one is a usage error naming the flag (exit 2), not a traceback from bind() or a hang."""
from __future__ import annotations

import click


def parse_host_port(value: str) -> tuple[str, int]:
    """('127.0.0.1', 7070) from '127.0.0.1:7070'; '[::1]:7070' keeps its brackets. ValueError why not."""
    host, sep, port = value.rpartition(":")
    shown = value[:80]
    if (not sep or not host.strip("[]") or not (port.isascii() and port.isdigit())
            or any(c.isspace() for c in value)):
        raise ValueError(f"'{shown}' is not HOST:PORT")
    if int(port) > 65535:
        raise ValueError(f"'{shown}': port {int(port)} is out of range (0-65535)")
    return host, int(port)


class HostPort(click.ParamType):
    """A HOST:PORT string, kept as given (the programs pass it on as a string)."""
    name = "HOST:PORT"

    def convert(self, value, param, ctx):
        if value is None:
            return None
        try:
            parse_host_port(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)
        return str(value)


HOST_PORT = HostPort()


def check_etcd(ctx, param, value: str | None) -> str | None:
    """--etcd's callback: every member's URL checked when parsed (was: a ValueError traceback at connect)."""
    if value is None:
        return None
    from packyard.etcd import parse_endpoints  # grpc and friends: only once there is a value
    try:
        parse_endpoints(value)
    except ValueError as e:
        raise click.BadParameter(str(e), ctx, param) from None
    return value
