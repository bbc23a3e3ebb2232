"""`ctl certs`: the certificates for mutual TLS between ctl, the scheduler and the agents."""
from __future__ import annotations

import subprocess
from pathlib import Path

import click

from ctl.errors import fail
from ctl.output import emit, output_option
from packyard import tls


@click.group()
def certs():
    """Certificates for mutual TLS between ctl, the scheduler and the agents."""


@certs.command("init")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--days", type=int, default=365, show_default=True, help="How long the certificates are valid.")
@click.option("--force", is_flag=True, help="Replace an existing CA (every host then needs the new files).")
@output_option
def certs_init(directory: Path, days: int, force: bool, output: str):
    """Write a cluster CA and certificates for the scheduler, the agents and ctl into DIRECTORY."""
    try:
        written = tls.init(directory, days=days, force=force)
    except tls.TLSError as e:
        fail(str(e), 2)
    emit({"directory": str(directory), "written": [str(p) for p in written]}, "\n".join(map(str, written)), output)
    click.echo(f"start packyard-scheduler and ctl with --tls {directory} (or PACKYARD_TLS); each reads only "
               "ca.crt and its own <role>.crt/.key; each agent needs its node's pair: `ctl certs issue "
               f"{directory} agent NODE`; keep ca.key and root.key off the hosts", err=True)


@certs.command("issue")
@click.argument("directory", type=click.Path(path_type=Path))
@click.argument("role", type=click.Choice(["agent", "etcd"]))
@click.argument("name")
@click.option("--ip", "ips", multiple=True, help="etcd: an address the member is dialled at (repeat).")
@click.option("--days", type=int, default=365, show_default=True, help="How long the certificate is valid.")
@output_option
def certs_issue(directory: Path, role: str, name: str, ips: tuple[str, ...], days: int, output: str):
    """Write a certificate signed by DIRECTORY's CA for one node's agent (`agent NODE`:
    agent-NODE.crt/.key, the only pair that agent runs with) or one etcd member (`etcd MEMBER --ip A`)."""
    try:
        written = tls.issue(directory, role, name, days=days, ips=ips)
    except tls.TLSError as e:
        fail(str(e), 2)
    emit({"directory": str(directory), "role": role, "name": name, "written": [str(p) for p in written]},
         "\n".join(map(str, written)), output)
    if role == "agent":
        click.echo(f"give node {name} ca.crt and agent-{name}.crt/.key; then `ctl certs grant {directory} "
                   "--etcd URL` lets it write its keys in etcd", err=True)


@certs.command("grant")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--etcd", "endpoints", required=True, help="etcd's client URLs (comma list).")
@output_option
def certs_grant(directory: Path, endpoints: str, output: str):
    """Set up etcd's users and roles with DIRECTORY's root pair and turn authentication on: the
    scheduler gets /packyard/, each node with an agent-NODE certificate in DIRECTORY its own keys,
    ctl nothing. Safe to run again (after issuing a certificate for a new node)."""
    from packyard import etcd_auth
    try:
        users = etcd_auth.grant(endpoints, directory)
    except (etcd_auth.GrantError, OSError, subprocess.TimeoutExpired) as e:
        fail(str(e), 1)
    emit({"users": list(users)}, "\n".join(users), output)
