"""`ctl config`: the named contexts of ctl's config file (ctl.contexts), as `kubectl config` has them."""
from __future__ import annotations

from pathlib import Path

import click

from ctl import contexts, session
from ctl.errors import fail
from ctl.output import emit, output_option


def _guard(action, *args, **kwargs):
    try:
        return action(*args, **kwargs)
    except contexts.ContextError as e:
        fail(str(e), 2)


@click.group()
def config():
    """Named contexts (a scheduler address and a TLS directory) in ~/.config/packyard/ctl.toml
    (or the file PACKYARD_CTL_CONFIG names, or PACKYARD_CONFIG when it names a ctl file)."""


@config.command("get-contexts")
@output_option
def get_contexts(output: str):
    """List the contexts; the current one is marked with *."""
    file = contexts.path()
    data = _guard(contexts.load, file)
    current = data.get("current-context")
    items = [{"name": name, "current": name == current, "scheduler": c["scheduler"], "tls": c.get("tls")}
             for name, c in sorted(data.get("contexts", {}).items())]
    from ctl.render import table
    text = table(["CURRENT", "NAME", "SCHEDULER", "TLS"],
                 [["*" if i["current"] else "", i["name"], i["scheduler"], i["tls"] or "-"] for i in items])
    emit({"path": str(file), "current": current, "contexts": items}, text, output)


@config.command("current-context")
@output_option
def current_context(output: str):
    """Print the current context's name (exit 1 when none is set)."""
    current = _guard(contexts.load, contexts.path()).get("current-context")
    if not current:
        fail(f"no current context in {contexts.path()}", 1)
    emit({"path": str(contexts.path()), "current": current}, current, output)


@config.command("set-context")
@click.argument("name")
@click.option("--scheduler", required=True, help="HOST:PORT[,HOST:PORT...] of the scheduler replicas.")
@click.option("--tls", "tls_dir", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="ctl's certificate directory for this cluster.")
@click.option("--use", is_flag=True, help="Also make it the current context.")
@output_option
def set_context(name: str, scheduler: str, tls_dir: Path | None, use: bool, output: str):
    """Add or replace the context NAME."""
    if problem := session.address_problem(scheduler):
        fail(f"--scheduler: {problem}", 2)
    tls = str(tls_dir.expanduser().resolve()) if tls_dir else None
    _guard(contexts.put, contexts.path(), name, scheduler, tls, select=use)
    current = _guard(contexts.load, contexts.path()).get("current-context") == name
    _done({"path": str(contexts.path()), "name": name, "scheduler": scheduler, "tls": tls, "current": current},
          f"context {name} written to {contexts.path()}" + ("; now current" if use else ""), output)


@config.command("use-context")
@click.argument("name")
@output_option
def use_context(name: str, output: str):
    """Make NAME the current context."""
    _guard(contexts.select, contexts.path(), name)
    _done({"path": str(contexts.path()), "current": name}, f"switched to context {name}", output)


@config.command("delete-context")
@click.argument("name")
@output_option
def delete_context(name: str, output: str):
    """Remove the context NAME."""
    _guard(contexts.delete, contexts.path(), name)
    _done({"path": str(contexts.path()), "deleted": name}, f"context {name} deleted", output)


def _done(data: dict, note: str, output: str) -> None:
    """A change made: the note on stderr as before (stdout stays empty for scripts), or DATA as
    JSON/YAML on stdout when asked for (issue 17: -o on every command)."""
    if output in ("json", "yaml"):
        emit(data, note, output)
    else:
        click.echo(note, err=True)
