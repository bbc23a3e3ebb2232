"""Numeric option types checked by click before any call: `--tail -5` or `--timeout 0` is refused
locally with the option's name, never sent to the scheduler."""
import click

NON_NEGATIVE_INT = click.IntRange(min=0)
POSITIVE_INT = click.IntRange(min=1)
POSITIVE_FLOAT = click.FloatRange(min=0, min_open=True, max=1e9)     # max also refuses inf
PORT_OR_ZERO = click.IntRange(0, 65535)
