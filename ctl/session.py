"""Which scheduler ctl talks to, and as whom: flags and environment first, then the context chosen
with --context (or the config file's current one), then 127.0.0.1:7070 in plaintext."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ctl import contexts
from ctl.client import Client
from packyard import tls

DEFAULT_SCHEDULER = "127.0.0.1:7070"


@dataclass(frozen=True)
class Target:
    scheduler: str
    tls_dir: Path | None
    context: str | None         # the context it came from, if any


def resolve(scheduler: str | None, tls_dir: Path | None, context: str | None) -> Target:
    """An address given by flag or env wins and, without an explicit --context, stands alone (the
    current context's certificates are not sent to some other cluster); --context fills the rest.
    contexts.ContextError when an address is not HOST:PORT (named by where it came from)."""
    if scheduler is not None and (problem := address_problem(scheduler)):
        raise contexts.ContextError(f"--scheduler: {problem}")
    chosen = None
    if context is not None or scheduler is None:
        chosen = contexts.get(contexts.path(), context)
    if chosen is None:
        return Target(scheduler or DEFAULT_SCHEDULER, tls_dir, None)
    if scheduler is None and (problem := address_problem(chosen.scheduler)):
        raise contexts.ContextError(f"context {chosen.name}: scheduler: {problem}")
    ctx_tls = Path(chosen.tls).expanduser() if chosen.tls else None
    return Target(scheduler or chosen.scheduler, tls_dir if tls_dir is not None else ctx_tls, chosen.name)


def address_problem(addresses: str) -> str:
    """Why `addresses` (HOST:PORT[,HOST:PORT...]) is not a list of scheduler addresses, or "": a
    typo is bad input (exit 2), not "cannot reach the scheduler". gRPC target URIs (dns:///...,
    unix:...) are left to gRPC."""
    items = [a.strip() for a in addresses.split(",") if a.strip()]    # as Client reads them
    if not items:
        return "no address given (HOST:PORT[,HOST:PORT...])"
    for item in items:
        if "://" in item or item.startswith("unix:"):
            continue
        host, sep, port = item.rpartition(":")
        if not (sep and host and host.strip("[]") and port.isascii() and port.isdigit()
                and 1 <= int(port) <= 65535) or any(c.isspace() for c in item):
            return f"'{item[:80]}' is not HOST:PORT (e.g. 127.0.0.1:7070)"
    return ""


def connect(target: Target, timeout: float) -> Client:
    """A client for TARGET; tls.TLSError when its certificate directory cannot be used."""
    identity = tls.load(target.tls_dir, "ctl") if target.tls_dir is not None else None
    return Client(target.scheduler, timeout=timeout, identity=identity)
