"""`--watch`: print a view each time the scheduler's stream sends one (it sends only on change),
until Ctrl-C. A terminal is redrawn in place; a pipe gets one document after another: JSON lines
with -o json, YAML documents with -o yaml, tables separated by a blank line."""
from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

import click

from ctl.client import Client
from ctl.output import color_enabled, colorize, dumps

CLEAR = "\x1b[H\x1b[2J"


def follow(client: Client, method: str, request, as_data: Callable, as_text: Callable, output: str) -> None:
    """Stream METHOD(REQUEST) and print each message as AS_DATA(m) (json/yaml) or AS_TEXT(m, wide)."""
    redraw = output in ("table", "wide") and sys.stdout.isatty()
    try:
        for message in client.stream(method, request):
            if output == "json":
                click.echo(json.dumps(as_data(message)))
            elif output == "yaml":
                click.echo("---\n" + dumps(as_data(message), "yaml"))
            else:
                text = as_text(message, output == "wide")
                text = colorize(text) if color_enabled() else text
                if redraw:
                    click.echo(CLEAR + time.strftime("%H:%M:%S  ") + "watching (Ctrl-C to quit)\n" + text)
                else:
                    click.echo(text + "\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        return
