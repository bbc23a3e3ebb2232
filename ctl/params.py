"""Numeric option types checked by click before any call: `--tail -5` or `--timeout 0` is refused
locally with the option's name, never sent to the scheduler."""
import math

import click


class PositiveSeconds(click.FloatRange):
    """A finite number of seconds above 0 (inf and nan would reach time.sleep and the deadline maths)."""
    name = "seconds"

    def __init__(self) -> None:
        super().__init__(min=0, min_open=True)

    def convert(self, value, param, ctx):
        seconds = super().convert(value, param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{value} is not a finite number of seconds", param, ctx)
        return seconds


NON_NEGATIVE_INT = click.IntRange(min=0)
POSITIVE_FLOAT = PositiveSeconds()
PORT_OR_ZERO = click.IntRange(0, 65535)
