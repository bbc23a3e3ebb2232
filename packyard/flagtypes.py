"""Number-of-seconds options checked by click where they are parsed, for ctl, the scheduler and the
agent alike: `--timeout 0`, `--confirm-timeout -1` or `--usage-interval nan` is refused with the
option's name (exit 2) instead of reaching time.sleep or the deadline maths. click's FloatRange
alone lets nan through (every comparison with nan is false) and inf where only a maximum is open."""
from __future__ import annotations

import math

import click


class Seconds(click.FloatRange):
    """A finite number of seconds, at least `minimum` (above it when `open_min`)."""
    name = "seconds"

    def __init__(self, minimum: float = 0, open_min: bool = True) -> None:
        super().__init__(min=minimum, min_open=open_min)

    def convert(self, value, param, ctx):
        seconds = super().convert(value, param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{value} is not a finite number of seconds", param, ctx)
        return seconds


POSITIVE_SECONDS = Seconds()
