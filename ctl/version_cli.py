"""`ctl version` (client and, when reachable, scheduler) and `ctl completion SHELL` (click's own
completion scripts)."""
from __future__ import annotations

import os
import platform

import click
from click.shell_completion import get_completion_class

from ctl.client import SchedulerUnreachable
from ctl.output import emit, output_option
from packyard.about import packyard_version
from packyard.v1 import scheduler_pb2

VERSION_TIMEOUT = 3.0    # seconds: a version answer is instant or the scheduler is not there


@click.command()
@output_option
@click.pass_obj
def version(client, output: str):
    """ctl's version and, when it answers, the scheduler's."""
    import grpc
    data = {"client": {"version": packyard_version(), "python": platform.python_version()},
            "scheduler": None}
    try:
        reply = client.call("Version", scheduler_pb2.VersionRequest(), timeout=VERSION_TIMEOUT)
        data["scheduler"] = {"version": reply.version, "python": reply.python, "leader": reply.leader,
                             "address": ",".join(client.addresses)}
    except (SchedulerUnreachable, grpc.RpcError) as e:
        data["scheduler_error"] = str(e) if isinstance(e, SchedulerUnreachable) else (e.details() or e.code().name)
    text = f"client: {data['client']['version']}\n" + (
        f"scheduler: {data['scheduler']['version']} ({data['scheduler']['address']})" if data["scheduler"]
        else f"scheduler: unknown ({data['scheduler_error']})")
    emit(data, text, output)


SHELLS = ["bash", "zsh", "fish"]


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
@output_option
@click.pass_context
def completion(ctx: click.Context, shell: str, output: str):
    """Print the completion script for SHELL: `eval "$(ctl completion bash)"`, or for zsh
    `eval "$(ctl completion zsh)"`, or for fish `ctl completion fish | source`."""
    root = ctx.find_root()
    prog = root.info_name or "ctl"
    var = "_" + prog.replace("-", "_").replace(".", "_").upper() + "_COMPLETE"
    cls = get_completion_class(shell)
    os.environ.pop(var, None)
    script = cls(root.command, {}, prog, var).source()
    if output in ("json", "yaml"):        # -o on every command (issue 17); the script itself otherwise
        emit({"shell": shell, "script": script}, script, output)
    else:
        click.echo(script)
