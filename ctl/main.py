"""`ctl`: talk to the packyard scheduler. Bad input exits 2 with one clear line, never a traceback."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import click
import grpc

from ctl import render
from ctl.client import Client, SchedulerUnreachable
from packyard import tls
from packyard.records import TERMINAL
from packyard.spec import MAX_SPEC_BYTES, SpecError, load_yaml
from packyard.v1 import common_pb2, scheduler_pb2

# gRPC codes that mean the request itself was wrong (the user must change it): exit 2
BAD_INPUT = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
             grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS}
output_option = click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table",
                             show_default=True, help="Output format.")


def fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def read_spec(file: Path):
    """The validated job in FILE; a file that cannot be read is bad input (exit 2)."""
    try:
        with file.open("rb") as f:      # bytes, bounded: binary files and /dev/zero are refused, not read
            text = f.read(MAX_SPEC_BYTES + 1)
    except OSError as e:
        fail(f"cannot read {file}: {e.strerror}", 2)
    return load_yaml(text)


def emit(data, text: str, output: str) -> None:
    click.echo(json.dumps(data, indent=2) if output == "json" else text)


class Ctl(click.Group):
    """Turns every expected failure into `error: ...` and an exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SpecError as e:
            fail("invalid job spec:\n  " + "\n  ".join(e.errors), 2)
        except SchedulerUnreachable as e:
            fail(str(e), 1)
        except grpc.RpcError as e:
            fail(e.details() or e.code().name, 2 if e.code() in BAD_INPUT else 1)
        except OSError as e:
            fail(str(e), 2)


@click.group(cls=Ctl, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--scheduler", envvar="PACKYARD_SCHEDULER", default="127.0.0.1:7070", show_default=True,
              help="HOST:PORT[,HOST:PORT...] of the scheduler replicas (env PACKYARD_SCHEDULER).")
@click.option("--timeout", "rpc_timeout", type=float, default=10.0, show_default=True, hidden=True)
@click.option("--tls", "tls_dir", envvar="PACKYARD_TLS", type=click.Path(path_type=Path), default=None,
              metavar="DIR", help="Mutual TLS with ctl's certificate in DIR (`ctl certs init`; env PACKYARD_TLS).")
@click.pass_context
def cli(ctx, scheduler, rpc_timeout, tls_dir):
    """Submit and watch jobs on a packyard cluster."""
    identity = None
    # certs and local make their own certificates: a DIR that does not exist yet is fine for them
    if tls_dir is not None and ctx.invoked_subcommand not in ("certs", "local"):
        try:
            identity = tls.load(tls_dir, "ctl")
        except tls.TLSError as e:
            fail(f"--tls: {e}", 2)
    ctx.obj = Client(scheduler, timeout=rpc_timeout, identity=identity)
    ctx.call_on_close(ctx.obj.close)


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--wait", is_flag=True, help="Wait until every instance runs (exit 0) or one fails; for an "
              "update that replaces instances, until its deployment has ended (successful: exit 0, "
              "failed or reverted: exit 1) or awaits `ctl promote` (exit 0); for a batch job, until "
              "every instance completed (exit 0) or one failed for good (exit 1).")
@click.option("--timeout", type=float, default=300.0, show_default=True, help="Seconds to --wait.")
@output_option
@click.pass_obj
def submit(client: Client, file: Path, wait: bool, timeout: float, output: str):
    """Submit the job in FILE (YAML)."""
    spec = read_spec(file)
    reply = client.call("Submit", scheduler_pb2.SubmitRequest(spec_json=spec.to_json()))
    if not wait:
        data = {"name": reply.name, "version": reply.version, "changed": reply.changed,
                "instances": list(reply.instance_ids)}
        verb = "submitted" if reply.changed else "unchanged"
        emit(data, f"job {reply.name} {verb} (version {reply.version}, "
                   f"{len(reply.instance_ids)} instances)", output)
        return
    if spec.type == "batch":
        status = wait_finished(client, reply.name, timeout, quiet=output == "json")
        emit(render.status_json(status), render.status_text(status), output)
        bad = [i for i in status.instances if i.desired == "run" and i.state != "complete"]
        if bad:
            fail(f"{len(bad)} instance(s) of {reply.name} did not complete: "
                 + ", ".join(_ended(i) for i in bad[:5]) + (" ..." if len(bad) > 5 else ""), 1)
        return
    status = wait_running(client, reply.name, timeout, quiet=output == "json", version=reply.version)
    emit(render.status_json(status), render.status_text(status), output)
    rollout = _deployment_of(status, reply.version)
    if rollout is not None and rollout.state in ("failed", "reverted"):
        fail(render.deployment_line(rollout), 1)
    bad = [i for i in status.instances if i.desired == "run" and i.state in TERMINAL - {"exited"}]
    if bad:
        fail(f"{len(bad)} instance(s) of {reply.name} did not run: {bad[0].id} {bad[0].state}"
             + (f" ({bad[0].reason})" if bad[0].reason else ""), 1)
    if rollout is not None and rollout.state == "awaiting promotion" and output != "json":
        click.echo(f"canaries of version {reply.version} are healthy; `ctl promote {reply.name}` "
                   "rolls out the rest", err=True)


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@output_option
@click.pass_obj
def plan(client: Client, file: Path, output: str):
    """Show where the job in FILE would go, without submitting it. Exit 1 if some instance
    could not be placed."""
    spec = read_spec(file)
    reply = client.call("Plan", scheduler_pb2.SubmitRequest(spec_json=spec.to_json()))
    data = {"name": reply.name, "changed": reply.changed, "version": reply.version,
            "changes": list(reply.changes), "replaces": reply.replaces,
            "instances": [{"id": i.id, "group": i.group, "action": i.action, "node": i.node,
                           "reason": i.reason, "reserved": render.resources_json(i.reserved)}
                          for i in reply.instances]}
    emit(data, render.plan_table(reply), output)
    if any(i.action == "place" and not i.node for i in reply.instances):
        sys.exit(1)


def wait_running(client: Client, name: str, timeout: float, quiet: bool,
                 version: int = 0) -> scheduler_pb2.JobStatus:
    """Poll until every instance meant to run is running (or has ended); progress on stderr. While
    the deployment of `version` still replaces instances made for an older one, also until it
    ends or awaits promotion: the old instances run meanwhile, so "all running" alone says nothing."""
    def done(status, current, _) -> bool:
        if not all(i.state == "running" or i.state in TERMINAL for i in current):
            return False
        rollout = _deployment_of(status, version)
        return rollout is None or rollout.state != "running" or all(i.version >= version for i in current)
    return _wait(client, name, timeout, quiet, "running", "", done)


def _deployment_of(status: scheduler_pb2.JobStatus, version: int) -> scheduler_pb2.Deployment | None:
    """The deployment rolling out `version`, if the job's current one does (not one superseding it)."""
    if version and status.HasField("deployment") and status.deployment.version == version:
        return status.deployment
    return None


SETTLED_AFTER = 1.0    # seconds a failure must stand: a reschedule replaces it within milliseconds


def wait_finished(client: Client, name: str, timeout: float, quiet: bool) -> scheduler_pb2.JobStatus:
    """Poll until every instance of a batch job meant to run has ended: complete, or failed and
    not replaced by a reschedule (seen failed for SETTLED_AFTER seconds); progress on stderr."""
    failed_since: dict[str, float] = {}

    def finished(_, current, now: float) -> bool:
        nonlocal failed_since
        failed_since = {i.id: failed_since.get(i.id, now) for i in current if i.state in TERMINAL - {"complete"}}
        return all(i.state == "complete" or now - failed_since.get(i.id, now) >= SETTLED_AFTER
                   and i.id in failed_since for i in current)
    return _wait(client, name, timeout, quiet, "complete", " to complete", finished)


def _wait(client: Client, name: str, timeout: float, quiet: bool, goal: str, purpose: str,
          done) -> scheduler_pb2.JobStatus:
    """Poll the job's status until `done(status, instances meant to run, now)`; a progress line on stderr
    counting those in state `goal`; exit 1 naming one that is not there yet at the timeout."""
    started = time.monotonic()
    deadline, last = started + timeout, ""
    while True:
        status = client.call("Status", scheduler_pb2.StatusRequest(name=name))
        current = [i for i in status.instances if i.desired == "run"]
        counts: dict[str, int] = {}
        for i in current:
            counts[i.state] = counts.get(i.state, 0) + 1
        line = f"{name}: {counts.get(goal, 0)}/{len(current)} {goal} (" \
            + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ")"
        if line != last and not quiet:
            click.echo(line, err=True)
            last = line
        now = time.monotonic()
        if current and done(status, current, now):
            return status
        if now > deadline:
            waiting = [i for i in current if i.state not in TERMINAL and i.state != goal]
            why = f": {waiting[0].id} {waiting[0].state} ({waiting[0].reason})" if waiting else ""
            fail(f"timed out after {timeout:g}s waiting for {name}{purpose}{why}", 1)
        # a Status of 100,000 instances costs the scheduler a fraction of a second: poll big jobs less
        time.sleep(max(0.05 if now - started < 2 else 0.25, len(current) / 100_000))


def _ended(i: scheduler_pb2.Instance) -> str:
    code = f" with exit code {i.exit_code}" if i.has_exit_code else ""
    return f"{i.id} {i.state}{code}" + (f" ({i.reason})" if i.reason and "exit status" not in i.reason else "")


@cli.command()
@click.argument("job")
@click.option("--all", "list_all", is_flag=True,
              help=f"List every instance (default: a summary when more than {render.SUMMARY_OVER}).")
@output_option
@click.pass_obj
def status(client: Client, job: str, list_all: bool, output: str):
    """Show a job's instances: where they run, their state, and why any are pending."""
    reply = client.call("Status", scheduler_pb2.StatusRequest(name=job))
    emit(render.status_json(reply), render.status_text(reply, list_all), output)


@cli.command(name="list")
@output_option
@click.pass_obj
def list_jobs(client: Client, output: str):
    """List jobs."""
    reply = client.call("List", scheduler_pb2.ListRequest())
    data = [{"name": j.name, "state": j.state, "priority": j.priority, "version": j.version,
             "instances": dict(j.instances_by_state)} for j in reply.jobs]
    emit(data, render.jobs_table(list(reply.jobs)), output)


@cli.command()
@output_option
@click.pass_obj
def nodes(client: Client, output: str):
    """List hosts: state, capacity, what is reserved on them."""
    reply = client.call("Nodes", scheduler_pb2.NodesRequest())
    emit([render.node_json(n) for n in reply.nodes], render.nodes_table(list(reply.nodes)), output)


@cli.command()
@click.argument("instance_id")
@click.option("-f", "--follow", is_flag=True, help="Keep printing as the instance writes.")
@click.option("--tail", type=int, default=0, help="Only the last N bytes.")
@output_option
@click.pass_obj
def logs(client: Client, instance_id: str, follow: bool, tail: int, output: str):
    """Print an instance's stdout/stderr (containers) or serial console (VMs)."""
    req = common_pb2.LogsRequest(instance_id=instance_id, tail_bytes=tail, follow=follow)
    if output == "json":
        data = b"".join(c.data for c in client.stream("Logs", req))
        click.echo(json.dumps({"id": instance_id, "log": data.decode(errors="replace")}))
        return
    out = sys.stdout.buffer
    for chunk in client.stream("Logs", req):
        out.write(chunk.data)
        out.flush()


@cli.command()
@click.argument("job")
@output_option
@click.pass_obj
def history(client: Client, job: str, output: str):
    """A job's versions (the last 10): when, whether stable (its deployment succeeded), what changed."""
    reply = client.call("History", scheduler_pb2.StatusRequest(name=job))
    emit(render.history_json(reply), render.history_table(reply), output)


@cli.command()
@click.argument("job")
@click.option("--version", type=click.IntRange(min=1), default=None,
              help="The version to go back to (default: the newest stable one before the current).")
@output_option
@click.pass_obj
def rollback(client: Client, job: str, version: int | None, output: str):
    """Go back to an earlier version of a job, rolled out like any change (a new version)."""
    reply = client.call("Rollback", scheduler_pb2.RollbackRequest(name=job, version=version or 0))
    emit({"name": reply.name, "version": reply.version, "changed": reply.changed,
          "instances": list(reply.instance_ids)},
         f"job {reply.name}: " + (f"rolling back as version {reply.version}" if reply.changed
                                  else f"already at that spec (version {reply.version})"), output)


@cli.command()
@click.argument("job")
@output_option
@click.pass_obj
def promote(client: Client, job: str, output: str):
    """Let a deployment whose canaries are healthy roll out the rest."""
    reply = client.call("Promote", scheduler_pb2.StatusRequest(name=job))
    emit(render.deployment_json(reply), f"job {job}: " + render.deployment_line(reply), output)


@cli.command()
@click.argument("job")
@click.option("--purge", is_flag=True,
              help="Also forget the job once its instances have ended (its records leave etcd).")
@output_option
@click.pass_obj
def stop(client: Client, job: str, purge: bool, output: str):
    """Stop every instance of a job (SIGTERM, then SIGKILL after a grace period)."""
    reply = client.call("Stop", scheduler_pb2.StopRequest(name=job, purge=purge))
    emit({"name": reply.name, "stopping": reply.stopping, "purge": reply.purge},
         f"job {reply.name}: stopping {reply.stopping} instance(s)"
         + ("; purged once they have ended" if reply.purge else ""), output)


@cli.command()
@click.option("--interval", type=float, default=2.0, show_default=True, help="Seconds between refreshes.")
@click.option("--once", is_flag=True, help="Print once and exit.")
@output_option
@click.pass_obj
def top(client: Client, interval: float, once: bool, output: str):
    """Every host as bars: reserved, measured use and capacity of cpu and memory."""
    from ctl import top as view
    while True:
        nodes = list(client.call("Nodes", scheduler_pb2.NodesRequest()).nodes)
        if output == "json":
            click.echo(json.dumps([view.node_json(n) for n in nodes], indent=2))
            return
        text = view.render(nodes)
        if once or not sys.stdout.isatty():
            click.echo(text)
            return
        click.echo("\x1b[H\x1b[2J" + time.strftime("%H:%M:%S  ") + "ctl top (Ctrl-C to quit)\n" + text)
        try:
            time.sleep(interval)
        except KeyboardInterrupt:
            return


@cli.command()
@output_option
@click.pass_obj
def profiles(client: Client, output: str):
    """Overhead profiles: the default formula, what was learned from measurements, the evidence."""
    reply = client.call("Profiles", scheduler_pb2.ProfilesRequest())
    emit([render.profile_json(p) for p in reply.profiles], render.profiles_table(list(reply.profiles)), output)


@cli.group()
def certs():
    """Certificates for mutual TLS between ctl, the scheduler and the agents."""


@certs.command("init")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--days", type=int, default=365, show_default=True, help="How long the certificates are valid.")
@click.option("--force", is_flag=True, help="Replace an existing CA (every host then needs the new files).")
def certs_init(directory: Path, days: int, force: bool):
    """Write a cluster CA and certificates for the scheduler, the agents and ctl into DIRECTORY."""
    try:
        written = tls.init(directory, days=days, force=force)
    except tls.TLSError as e:
        fail(str(e), 2)
    click.echo("\n".join(str(p) for p in written))
    click.echo(f"start packyard-scheduler and ctl with --tls {directory} (or PACKYARD_TLS); each reads only "
               "ca.crt and its own <role>.crt/.key; each agent needs its node's pair: `ctl certs issue "
               f"{directory} agent NODE`; keep ca.key and root.key off the hosts", err=True)


@certs.command("issue")
@click.argument("directory", type=click.Path(path_type=Path))
@click.argument("role", type=click.Choice(["agent", "etcd"]))
@click.argument("name")
@click.option("--ip", "ips", multiple=True, help="etcd: an address the member is dialled at (repeat).")
@click.option("--days", type=int, default=365, show_default=True, help="How long the certificate is valid.")
def certs_issue(directory: Path, role: str, name: str, ips: tuple[str, ...], days: int):
    """Write a certificate signed by DIRECTORY's CA for one node's agent (`agent NODE`:
    agent-NODE.crt/.key, the only pair that agent runs with) or one etcd member (`etcd MEMBER --ip A`)."""
    try:
        written = tls.issue(directory, role, name, days=days, ips=ips)
    except tls.TLSError as e:
        fail(str(e), 2)
    click.echo("\n".join(str(p) for p in written))
    if role == "agent":
        click.echo(f"give node {name} ca.crt and agent-{name}.crt/.key; then `ctl certs grant {directory} "
                   "--etcd URL` lets it write its keys in etcd", err=True)


@certs.command("grant")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--etcd", "endpoints", required=True, help="etcd's client URLs (comma list).")
def certs_grant(directory: Path, endpoints: str):
    """Set up etcd's users and roles with DIRECTORY's root pair and turn authentication on: the
    scheduler gets /packyard/, each node with an agent-NODE certificate in DIRECTORY its own keys,
    ctl nothing. Safe to run again (after issuing a certificate for a new node)."""
    from packyard import etcd_auth
    try:
        users = etcd_auth.grant(endpoints, directory)
    except (etcd_auth.GrantError, OSError, subprocess.TimeoutExpired) as e:
        fail(str(e), 1)
    click.echo("\n".join(users))


@cli.group()
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
@click.option("--prometheus-port", type=int, default=9090, show_default=True,
              help="Start Prometheus on 127.0.0.1:PORT scraping everything (0: don't).")
@click.option("--tls", "use_tls", is_flag=True,
              help="Mutual TLS on every gRPC port (certificates in WORKDIR/tls).")
@click.option("--registry", is_flag=True,
              help="A local image registry on the bridge (port 5000) with packyard/busybox:1 in it.")
def local_up(hosts: int, workdir: Path, capacity: str, drivers: str, jobs: tuple[Path, ...], once: bool,
             prometheus_port: int, use_tls: bool, registry: bool):
    """Start etcd, the scheduler and HOSTS agents; submit JOBS; run until Ctrl-C."""
    import signal as _signal

    from ctl.local import LocalCluster
    if os.geteuid() != 0:
        fail("ctl local up needs root (network namespaces, cgroups)", 2)
    cluster = LocalCluster(workdir, hosts=hosts, capacity=capacity, drivers=drivers,
                           labels=[{"zone": "a" if i % 2 else "b"} for i in range(1, hosts + 1)],
                           prometheus_port=prometheus_port or None, tls=use_tls, registry=registry)
    click.echo(f"starting scheduler + {hosts} agents (logs in {workdir}/logs) ...", err=True)
    try:
        cluster.up()
    except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", "") or ""
        fail(f"the local cluster did not start: {e} {detail}".strip(), 1)
    code = 0
    try:
        click.echo(f"scheduler: {cluster.scheduler_address}   etcd: {cluster.etcd_endpoint}", err=True)
        if use_tls:
            click.echo(f"mutual TLS: export PACKYARD_TLS={cluster.tls_dir}", err=True)
        if cluster.prometheus:
            click.echo(f"prometheus: {cluster.prometheus_url}  (Grafana dashboards: deploy/grafana/)", err=True)
        click.echo(cluster.ctl("nodes").stdout)
        for job in jobs:
            r = cluster.ctl("submit", str(job), "--wait", "--timeout", "120", timeout=180)
            click.echo(r.stdout + r.stderr)
            code = code or r.returncode
        if not once:
            click.echo(f"cluster is up: export PACKYARD_SCHEDULER={cluster.scheduler_address}; "
                       "Ctrl-C tears it down", err=True)
            def interrupt(*_):
                raise KeyboardInterrupt
            _signal.signal(_signal.SIGTERM, interrupt)
            while True:
                _signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        click.echo("tearing the cluster down ...", err=True)
        cluster.down()
    sys.exit(code)


def main() -> None:
    cli(prog_name="ctl")


if __name__ == "__main__":
    main()
