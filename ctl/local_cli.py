"""`ctl local up`: a local multi-host cluster on this machine, which plain `ctl` then reaches
through the `local` context it writes and selects."""
from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import click

from ctl import contexts
from ctl.errors import fail
from ctl.params import PORT_OR_ZERO

LOCAL_CONTEXT = "local"


def select_local_context(scheduler: str, tls_dir: Path | None) -> str:
    """Write the `local` context and make it current, so that plain `ctl nodes` in another terminal
    reaches this cluster without an export; the line to print says so (or why it could not)."""
    file = contexts.path()
    try:
        contexts.put(file, LOCAL_CONTEXT, scheduler, str(tls_dir.resolve()) if tls_dir else None, select=True)
    except (contexts.ContextError, OSError) as e:
        return f"could not write the local context ({e}): export PACKYARD_SCHEDULER={scheduler}"
    return f"context {LOCAL_CONTEXT} ({scheduler}) written to {file} and selected"


def _network(value: str) -> str:
    try:
        net = ipaddress.ip_network(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    if net.version != 4 or net.num_addresses < 8:
        raise click.BadParameter("an IPv4 network of at least 8 addresses, such as 10.213.0.0/24")
    return value


def _checked_flags(prefix: str, capacity: str, drivers: str) -> None:
    """The flags each agent is started with, refused here (exit 2, the flag named) rather than by
    agents that fail after etcd and the scheduler are up. Interface names are at most 15 characters:
    the longest, host 50's veth end, is PREFIX + 'h50o'."""
    from agent import drivercheck, fingerprint
    from packyard.quantity import DNS_LABEL
    from packyard.records import ResourceAmounts
    if not DNS_LABEL.match(prefix) or len(prefix) > 11:
        raise click.BadParameter("a DNS label of at most 11 characters (lowercase letters, digits, '-')",
                                 param_hint="'--prefix'")
    for flag, check in (("--capacity", lambda: fingerprint.parse_capacity(capacity, ResourceAmounts())),
                        ("--drivers", lambda: drivercheck.driver_names(drivers))):
        try:
            check()
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint=f"'{flag}'") from None


@click.group()
def local():
    """A local multi-host cluster on this machine (each host a network namespace)."""


@local.command("up")
@click.option("--hosts", type=click.IntRange(1, 50), default=3, show_default=True)
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("/tmp/packyard-local"),
              show_default=True, help="State dirs and logs of every process.")
@click.option("--capacity", default="cpu=2,memory=2Gi", show_default=True, help="Each host's capacity.")
@click.option("--drivers", default="container,vm", show_default=True, help="Drivers each agent runs.")
@click.option("--submit", "jobs", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Job file(s) to submit (and wait for) once the cluster is up.")
@click.option("--once", is_flag=True, help="Tear the cluster down after submitting instead of waiting for Ctrl-C.")
@click.option("--prometheus-port", type=PORT_OR_ZERO, default=9090, show_default=True,
              help="Start Prometheus on 127.0.0.1:PORT scraping everything (0: don't).")
@click.option("--tls", "use_tls", is_flag=True,
              help="Mutual TLS on every gRPC port (certificates in WORKDIR/tls).")
@click.option("--registry", is_flag=True,
              help="A local image registry on the bridge (port 5000) with packyard/busybox:1 in it.")
# where the cluster lives, so that a second one (a test's, a colleague's) can run beside the first
@click.option("--net", default="10.213.0.0/24", show_default=True, callback=lambda _c, _p, v: _network(v),
              help="The hosts' bridge network (the bridge takes .1, hosts .2 on).")
@click.option("--prefix", default="pk", show_default=True,
              help="Names of the hosts' network namespaces and nodes: PREFIX-host1, ...")
@click.option("--scheduler-port", type=click.IntRange(1, 65535), default=7070, show_default=True)
@click.option("--etcd-port", type=click.IntRange(1, 65535), default=2379, show_default=True,
              help="The embedded etcd's client port (its peer port is the next one).")
def local_up(hosts: int, workdir: Path, capacity: str, drivers: str, jobs: tuple[Path, ...], once: bool,
             prometheus_port: int, use_tls: bool, registry: bool, net: str, prefix: str,
             scheduler_port: int, etcd_port: int):
    """Start etcd, the scheduler and HOSTS agents; submit JOBS; run until Ctrl-C."""
    import signal as _signal

    from ctl.local import LocalCluster
    _checked_flags(prefix, capacity, drivers)
    if os.geteuid() != 0:
        fail("ctl local up needs root (network namespaces, cgroups)", 2)
    cluster = LocalCluster(workdir, hosts=hosts, capacity=capacity, drivers=drivers, net=net, prefix=prefix,
                           scheduler_port=scheduler_port, etcd_port=etcd_port,
                           labels=[{"zone": "a" if i % 2 else "b"} for i in range(1, hosts + 1)],
                           prometheus_port=prometheus_port or None, tls=use_tls, registry=registry)
    def interrupt(*_):
        raise KeyboardInterrupt
    # SIGTERM is Ctrl-C from the first step on: a cluster stopped while it comes up is torn down too
    _signal.signal(_signal.SIGTERM, interrupt)
    click.echo(f"starting scheduler + {hosts} agents (logs in {workdir}/logs) ...", err=True)
    code = 0
    try:
        try:
            cluster.up()
        except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
            detail = getattr(e, "stderr", "") or ""
            fail(f"the local cluster did not start: {e} {detail}".strip(), 1)
        click.echo(f"scheduler: {cluster.scheduler_address}   etcd: {cluster.etcd_endpoint}", err=True)
        click.echo(select_local_context(cluster.scheduler_address, cluster.tls_dir if use_tls else None), err=True)
        if use_tls:
            click.echo(f"mutual TLS: certificates in {cluster.tls_dir} (the local context uses them)", err=True)
        if cluster.prometheus:
            click.echo(f"prometheus: {cluster.prometheus_url}  (Grafana dashboards: deploy/grafana/)", err=True)
        click.echo(cluster.ctl("nodes").stdout)
        for job in jobs:
            r = cluster.ctl("submit", str(job), "--wait", "--timeout", "120", timeout=180)
            click.echo(r.stdout + r.stderr)
            code = code or r.returncode
        if not once:
            click.echo("cluster is up: plain `ctl nodes` reaches it (context local); Ctrl-C tears it down",
                       err=True)
            while True:
                _signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        click.echo("tearing the cluster down ...", err=True)
        cluster.down()
    sys.exit(code)
