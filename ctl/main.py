"""`ctl`: talk to the packyard scheduler. Bad input exits 2 with one clear line, never a traceback.
The group resolves where to talk to (ctl.session) and how to print (ctl.output); commands that act
on jobs and hosts live here, `certs`, `local`, `config`, `version` and `completion` beside it."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from ctl import contexts, render, session
from ctl.certs_cli import certs
from ctl.client import Client
from ctl.config_cli import config
from ctl.errors import Ctl, fail
from ctl.local_cli import local
from ctl.output import FORMATS, dumps, emit, output_option, remember
from ctl.params import NON_NEGATIVE_INT, POSITIVE_FLOAT
from ctl.version_cli import completion, version
from ctl.watch import follow
from packyard import tls
from packyard.records import TERMINAL
from packyard.spec import MAX_SPEC_BYTES, load_yaml
from packyard.v1 import common_pb2, scheduler_pb2

watch_option = click.option("-w", "--watch", is_flag=True,
                            help="Print again each time it changes (the scheduler streams the changes); Ctrl-C quits.")

# These make no call to a scheduler (or make their own certificates): a context or a --tls
# directory that cannot be used yet must not stop them.
OFFLINE = {"certs", "local", "config", "completion", "version"}


def read_spec(file: Path):
    """The validated job in FILE; a file that cannot be read is bad input (exit 2)."""
    try:
        with file.open("rb") as f:      # bytes, bounded: binary files and /dev/zero are refused, not read
            text = f.read(MAX_SPEC_BYTES + 1)
    except OSError as e:
        fail(f"cannot read {file}: {e.strerror}", 2)
    return load_yaml(text)



@click.group(cls=Ctl, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--scheduler", envvar="PACKYARD_SCHEDULER", default=None,
              help="HOST:PORT[,HOST:PORT...] of the scheduler replicas (env PACKYARD_SCHEDULER; "
                   f"default: the current context's, else {session.DEFAULT_SCHEDULER}).")
@click.option("--timeout", "rpc_timeout", type=POSITIVE_FLOAT, default=10.0, show_default=True, hidden=True)
@click.option("--tls", "tls_dir", envvar="PACKYARD_TLS", type=click.Path(path_type=Path), default=None,
              metavar="DIR", help="Mutual TLS with ctl's certificate in DIR (`ctl certs init`; env PACKYARD_TLS).")
@click.option("--context", "context_name", envvar="PACKYARD_CONTEXT", default=None, metavar="NAME",
              help="A named context of the config file (`ctl config get-contexts`; env PACKYARD_CONTEXT).")
@click.option("-o", "--output", "global_output", type=click.Choice(FORMATS),
              default=None, help="Output format for the command that follows.")
@click.option("--no-color", is_flag=True, help="No colour in tables (also NO_COLOR; none unless stdout is a terminal).")
@click.pass_context
def cli(ctx, scheduler, rpc_timeout, tls_dir, context_name, global_output, no_color):
    """Submit and watch jobs on a packyard cluster."""
    remember(ctx, global_output, no_color)
    if ctx.invoked_subcommand in OFFLINE and ctx.invoked_subcommand != "version":
        ctx.obj = session.Target(scheduler or session.DEFAULT_SCHEDULER, tls_dir, context_name)
        return
    try:
        target = session.resolve(scheduler, tls_dir, context_name)
        if ctx.invoked_subcommand != "version":     # version prints its own, whatever the scheduler
            session.check_addresses(target)
    except (contexts.ContextError, ValueError) as e:
        fail(str(e), 2)
    try:
        ctx.obj = session.connect(target, rpc_timeout)
    except tls.TLSError as e:
        fail(f"--tls: {e}", 2)
    ctx.call_on_close(ctx.obj.close)


for group in (certs, local, config, version, completion):
    cli.add_command(group)


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--wait", is_flag=True, help="Wait until every instance runs (exit 0) or one fails; for an "
              "update that replaces instances, until its deployment has ended (successful: exit 0, "
              "failed or reverted: exit 1) or awaits `ctl promote` (exit 0); for a batch job, until "
              "every instance completed (exit 0) or one failed for good (exit 1).")
@click.option("--timeout", type=POSITIVE_FLOAT, default=300.0, show_default=True, help="Seconds to --wait.")
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
        status = wait_finished(client, reply.name, timeout, quiet=output in ("json", "yaml"))
        emit(render.status_json(status), render.status_text(status), output)
        bad = [i for i in status.instances if i.desired == "run" and i.state != "complete"]
        if bad:
            fail(f"{len(bad)} instance(s) of {reply.name} did not complete: "
                 + ", ".join(_ended(i) for i in bad[:5]) + (" ..." if len(bad) > 5 else ""), 1)
        return
    status = wait_running(client, reply.name, timeout, quiet=output in ("json", "yaml"), version=reply.version)
    emit(render.status_json(status), render.status_text(status), output)
    rollout = _deployment_of(status, reply.version)
    if rollout is not None and rollout.state in ("failed", "reverted"):
        fail(render.deployment_line(rollout), 1)
    bad = [i for i in status.instances if i.desired == "run" and i.state in TERMINAL - {"exited"}]
    if bad:
        fail(f"{len(bad)} instance(s) of {reply.name} did not run: {bad[0].id} {bad[0].state}"
             + (f" ({bad[0].reason})" if bad[0].reason else ""), 1)
    if rollout is not None and rollout.state == "awaiting promotion" and output not in ("json", "yaml"):
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
    """Poll until every instance meant to run is running (or has ended); progress on stderr. For
    an update (the deployment of `version` replaces instances made for an older one), also until
    the deployment ends or awaits promotion: the old instances run meanwhile, and the last new ones
    running says nothing of whether they turn healthy. A job's first deployment replaces nothing:
    all running is what --wait waits for."""
    def done(status, current, _) -> bool:
        if not all(i.state == "running" or i.state in TERMINAL for i in current):
            return False
        rollout = _deployment_of(status, version)
        if (rollout is not None and rollout.state == "failed" and rollout.reverted_to
                and rollout.target == rollout.version):
            return False               # the revert decided with the failure is being written (a revert
            #                            whose own rollout failed rolls another version: it has ended)
        return rollout is None or rollout.state != "running" or all(i.version >= version for i in status.instances)
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
@watch_option
@output_option
@click.pass_obj
def status(client: Client, job: str, list_all: bool, watch: bool, output: str):
    """Show a job's instances: where they run, their state, and why any are pending."""
    request = scheduler_pb2.StatusRequest(name=job)
    if watch:
        follow(client, "WatchStatus", request, render.status_json,
               lambda r, wide: render.status_text(r, list_all, wide), output)
        return
    reply = client.call("Status", request)
    emit(render.status_json(reply), render.status_text(reply, list_all), output,
         wide=render.status_text(reply, list_all, wide=True))


@cli.command(name="list")
@watch_option
@output_option
@click.pass_obj
def list_jobs(client: Client, watch: bool, output: str):
    """List jobs."""
    if watch:
        follow(client, "WatchList", scheduler_pb2.ListRequest(), render.jobs_json,
               lambda r, wide: render.jobs_table(list(r.jobs)), output)
        return
    reply = client.call("List", scheduler_pb2.ListRequest())
    emit(render.jobs_json(reply), render.jobs_table(list(reply.jobs)), output)


@cli.command()
@watch_option
@output_option
@click.pass_obj
def nodes(client: Client, watch: bool, output: str):
    """List hosts: state, capacity, what is reserved on them."""
    if watch:
        follow(client, "WatchNodes", scheduler_pb2.NodesRequest(), render.nodes_json,
               lambda r, wide: render.nodes_table(list(r.nodes), wide), output)
        return
    reply = client.call("Nodes", scheduler_pb2.NodesRequest())
    emit(render.nodes_json(reply), render.nodes_table(list(reply.nodes)), output,
         wide=render.nodes_table(list(reply.nodes), wide=True))


@cli.command()
@click.argument("instance_id")
@click.option("-f", "--follow", is_flag=True, help="Keep printing as the instance writes.")
@click.option("--tail", type=NON_NEGATIVE_INT, default=0, help="Only the last N bytes, whole lines (a line begun before them is left out).")
@output_option
@click.pass_obj
def logs(client: Client, instance_id: str, follow: bool, tail: int, output: str):
    """Print an instance's stdout/stderr (containers) or serial console (VMs)."""
    req = common_pb2.LogsRequest(instance_id=instance_id, tail_bytes=tail, follow=follow)
    if output in ("json", "yaml"):
        data = b"".join(c.data for c in client.stream("Logs", req))
        click.echo(dumps({"id": instance_id, "log": data.decode(errors="replace")}, output))
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
    """A job's versions (the last 10): when, whether stable (its deployment succeeded) or failed, what changed."""
    reply = client.call("History", scheduler_pb2.StatusRequest(name=job))
    emit(render.history_json(reply), render.history_table(reply), output)


@cli.command()
@click.argument("job")
@click.option("--version", type=click.IntRange(min=1), default=None,
              help="The version to go back to (default: the newest stable one before the current; with "
                   "none stable yet, the one the current replaced, unless its deployment failed).")
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
@click.option("--interval", type=POSITIVE_FLOAT, default=2.0, show_default=True, help="Seconds between refreshes.")
@click.option("--once", is_flag=True, help="Print once and exit.")
@output_option
@click.pass_obj
def top(client: Client, interval: float, once: bool, output: str):
    """Every host as bars: reserved, measured use and capacity of cpu and memory."""
    from ctl import top as view
    while True:
        nodes = list(client.call("Nodes", scheduler_pb2.NodesRequest()).nodes)
        if output in ("json", "yaml"):
            click.echo(dumps([view.node_json(n) for n in nodes], output))
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


def main() -> None:
    cli(prog_name="ctl")


if __name__ == "__main__":
    main()
