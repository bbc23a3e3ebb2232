"""How ctl prints a reply: `-o table|wide|json|yaml`, given to a command or before it (`ctl -o json
nodes`), and colour in tables only when stdout is a terminal (NO_COLOR and --no-color turn it off)."""
from __future__ import annotations

import json
import os
import re
import sys

import click

FORMATS = ["table", "wide", "json", "yaml"]


def _resolve(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    """The command's own -o wins; else the one given before the subcommand; else a table."""
    if value is not None:
        return value
    return ctx.find_root().meta.get("packyard.output") or "table"


output_option = click.option("-o", "--output", type=click.Choice(FORMATS), default=None, callback=_resolve,
                             help="Output format (default: table; also accepted before the command).")


def remember(ctx: click.Context, output: str | None, no_color: bool) -> None:
    """What the group's options said, for the commands to read (the group runs first)."""
    ctx.meta["packyard.output"] = output
    ctx.meta["packyard.color"] = (not no_color and not os.environ.get("NO_COLOR")
                                  and sys.stdout.isatty())


def color_enabled() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.find_root().meta.get("packyard.color"))


# States as the tables print them: what is fine, what is on its way, what needs a look
_COLOURS = {"green": ("running", "ready", "complete", "successful", "passing"),
            "yellow": ("pending", "starting", "stopping", "draining", "awaiting promotion", "unknown"),
            "red": ("failed", "lost", "down", "reverted", "failing", "unhealthy")}
_WORD = re.compile(r"(?<![\w-])(" + "|".join(w for ws in _COLOURS.values() for w in ws) + r")(?![\w-])")
_COLOUR_OF = {w: c for c, ws in _COLOURS.items() for w in ws}


def colorize(text: str) -> str:
    """State words coloured in place: padding is already done, so the columns stay aligned."""
    return _WORD.sub(lambda m: click.style(m.group(1), fg=_COLOUR_OF[m.group(1)]), text)


def dumps(data, output: str) -> str:
    if output == "yaml":
        import yaml
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip("\n")
    return json.dumps(data, indent=2)


def emit(data, text: str, output: str, wide: str | None = None) -> None:
    """DATA as JSON/YAML, else the table TEXT (WIDE: the table with more columns, where there is one)."""
    if output in ("json", "yaml"):
        click.echo(dumps(data, output))
        return
    table = wide if output == "wide" and wide is not None else text
    click.echo(colorize(table) if color_enabled() else table)
