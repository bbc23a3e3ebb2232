"""Which scheduler ctl talks to, and as whom: flags and environment first, then the context chosen
with --context (or the config file's current one), then 127.0.0.1:7070 in plaintext."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ctl import contexts
from ctl.client import Client
from packyard import tls
from packyard.hostport import parse_host_port

DEFAULT_SCHEDULER = "127.0.0.1:7070"


@dataclass(frozen=True)
class Target:
    scheduler: str
    tls_dir: Path | None
    context: str | None         # the context it came from, if any


def resolve(scheduler: str | None, tls_dir: Path | None, context: str | None) -> Target:
    """An address given by flag or env wins and, without an explicit --context, stands alone (the
    current context's certificates are not sent to some other cluster); --context fills the rest.
    The addresses are checked by `check_addresses`, apart: `ctl version` answers whatever they are."""
    chosen = None
    if context is not None or scheduler is None:
        chosen = contexts.get(contexts.path(), context)
    if chosen is None:
        return Target(DEFAULT_SCHEDULER if scheduler is None else scheduler, tls_dir, None)
    ctx_tls = Path(chosen.tls).expanduser() if chosen.tls else None
    return Target(chosen.scheduler if scheduler is None else scheduler, tls_dir if tls_dir is not None else ctx_tls, chosen.name)


def check_addresses(target: Target) -> None:
    """ValueError naming where TARGET's addresses came from when one is not HOST:PORT: bad input,
    refused before any call (gRPC would report an unreachable scheduler, or dial another port)."""
    where = f"context {target.context!r}: scheduler" if target.context else "--scheduler"
    if problem := address_problem(target.scheduler):
        raise ValueError(f"{where}: {problem}")


def address_problem(addresses: str) -> str:
    """Why `addresses` (HOST:PORT[,HOST:PORT...]) is not a list of scheduler addresses, or "": a
    typo is bad input (exit 2), not "cannot reach the scheduler". gRPC target URIs (dns:///...,
    unix:...) are left to gRPC."""
    items = [a.strip() for a in addresses.split(",") if a.strip()]    # as Client reads them
    if not items:
        return "no HOST:PORT given"
    for item in items:
        if "://" in item or item.startswith("unix:"):
            continue
        try:
            _, port = parse_host_port(item)
        except ValueError as e:
            return f"{e} (e.g. 127.0.0.1:7070)" if str(e).endswith("is not HOST:PORT") else str(e)
        if port == 0:           # a server's "any port", never one to dial
            return f"'{item[:80]}': port 0 is not a scheduler's port"
    return ""


def connect(target: Target, timeout: float) -> Client:
    """A client for TARGET; tls.TLSError when its certificate directory cannot be used."""
    identity = tls.load(target.tls_dir, "ctl") if target.tls_dir is not None else None
    return Client(target.scheduler, timeout=timeout, identity=identity)
