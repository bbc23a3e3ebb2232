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
    current context's certificates are not sent to some other cluster); --context fills the rest."""
    chosen = None
    if context is not None or scheduler is None:
        chosen = contexts.get(contexts.path(), context)
    if chosen is None:
        return Target(scheduler or DEFAULT_SCHEDULER, tls_dir, None)
    ctx_tls = Path(chosen.tls).expanduser() if chosen.tls else None
    return Target(scheduler or chosen.scheduler, tls_dir if tls_dir is not None else ctx_tls, chosen.name)


def check_addresses(target: Target) -> None:
    """ValueError naming where TARGET's addresses came from when one is not HOST:PORT: bad input,
    refused before any call (gRPC would report an unreachable scheduler, or dial another port)."""
    where = f"context {target.context!r}: scheduler" if target.context else "--scheduler"
    addresses = [a.strip() for a in target.scheduler.split(",") if a.strip()]
    if not addresses:
        raise ValueError(f"{where}: no HOST:PORT given")
    for address in addresses:
        try:
            parse_host_port(address)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None


def connect(target: Target, timeout: float) -> Client:
    """A client for TARGET; tls.TLSError when its certificate directory cannot be used."""
    identity = tls.load(target.tls_dir, "ctl") if target.tls_dir is not None else None
    return Client(target.scheduler, timeout=timeout, identity=identity)
