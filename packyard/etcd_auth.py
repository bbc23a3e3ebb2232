"""etcd's users and roles for a TLS cluster (issue 15): each identity may touch only its own keys.

etcd, with client certificate authentication and auth enabled, takes a client certificate's CN as
its user name. `grant` (run with the cluster's `root` pair: `ctl certs grant`, the embedded etcd,
the local cluster, Ansible) makes, idempotently:

  root                     etcd's administrator (the root role): only `ctl certs grant` uses it
  packyard-scheduler       read and write under /packyard/ (the scheduler's keyspace: keys.py)
  packyard-agent:NODE      for each agent-NODE.crt in the directory: NODE's record and usage key
                           (exact keys) and its instances' state (/packyard/state/NODE/), nothing else
  packyard-ctl, packyard-agent, packyard-etcd: no user, so no access (ctl talks to the scheduler only)

then turns authentication on. Run again after `ctl certs issue DIR agent NODE` for a new node.
It drives `etcdctl` (Debian etcd-client), the tool etcd ships for this, rather than the auth API by hand.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from packyard import keys, tls


class GrantError(RuntimeError):
    """etcdctl refused; the message is its own, with the command that failed."""


@dataclass(frozen=True)
class Permission:
    key: str
    prefix: bool


def scheduler_permissions() -> list[Permission]:
    return [Permission(keys.ROOT, prefix=True)]


def agent_permissions(node: str) -> list[Permission]:
    return [Permission(keys.node(node), prefix=False), Permission(keys.usage(node), prefix=False),
            Permission(keys.state_prefix(node), prefix=True)]


def grant(endpoints: str, directory: Path, nodes: Iterable[str] | None = None, timeout: float = 10.0) -> list[str]:
    """Users and roles for the scheduler and each node (default: every agent-NODE.crt in DIRECTORY),
    then auth on; the users granted. `endpoints`: etcd's client URLs, comma-separated."""
    directory = Path(directory)
    nodes = tls.issued_nodes(directory) if nodes is None else list(nodes)
    users = {tls.ROLES["scheduler"]: scheduler_permissions()}
    users.update({tls.agent_common_name(n): agent_permissions(n) for n in nodes})
    run = _etcdctl(endpoints, directory, timeout)
    run("user", "add", "root", "--no-password", exists_ok=True)
    run("role", "add", "root", exists_ok=True)
    run("user", "grant-role", "root", "root")
    for user, permissions in users.items():
        run("role", "add", user, exists_ok=True)
        for p in permissions:
            run("role", "grant-permission", user, *(["--prefix"] if p.prefix else []), "readwrite", p.key)
        run("user", "add", user, "--no-password", exists_ok=True)
        run("user", "grant-role", user, user)
    run("auth", "enable", exists_ok=True)
    return ["root", *users]


def _etcdctl(endpoints: str, directory: Path, timeout: float):
    binary = shutil.which("etcdctl") or "/usr/bin/etcdctl"
    base = [binary, "--endpoints", endpoints, "--cacert", str(directory / "ca.crt"),
            "--cert", str(directory / "root.crt"), "--key", str(directory / "root.key"),
            # etcd is verified by its CA, not by name: its members answer on addresses, not packyard-etcd
            "--insecure-skip-tls-verify", "--command-timeout", f"{timeout:g}s"]
    env = {**os.environ, "ETCDCTL_API": "3"}

    def run(*args: str, exists_ok: bool = False) -> None:
        r = subprocess.run([*base, *args], capture_output=True, text=True, env=env, timeout=timeout + 5)
        if r.returncode == 0:
            return
        out = (r.stderr.strip().splitlines() or [""])[-1]
        if exists_ok and ("already exists" in out or "already enabled" in out):
            return
        raise GrantError(f"etcdctl {' '.join(args)}: {out or f'exit status {r.returncode}'}")
    return run
