"""Numeric option types checked by click before any call: `--tail -5` or `--timeout 0` is refused
locally with the option's name, never sent to the scheduler."""
import click

from packyard.flagtypes import POSITIVE_SECONDS

NON_NEGATIVE_INT = click.IntRange(min=0)
POSITIVE_FLOAT = POSITIVE_SECONDS
PORT_OR_ZERO = click.IntRange(0, 65535)
