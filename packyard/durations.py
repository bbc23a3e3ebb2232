"""Durations as a spec writes them: `500ms`, `5s`, `10m`, `1h`, or a sum of those (`1m30s`), as
Go's time.ParseDuration (Nomad's specs) reads them; kept as float seconds and written back in the
shortest form that reads to the same value, so a stored spec validates to the same JobSpec.

A bare number is refused rather than guessed: `interval: 60` could mean seconds or milliseconds;
only `0` needs no unit (as in Go: zero is zero in any unit), so `delay: 0` reads as it is meant.
A negative duration is refused as such (`-5s`), whatever field it is for.
"""
from __future__ import annotations

import re

UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
MAX_SECONDS = 366 * 24 * 3600.0      # a year: beyond it a typo, not a policy


class DurationError(ValueError):
    """Not a duration; the message says what is accepted."""


def parse_duration(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DurationError("expected a duration such as 500ms, 5s, 10m or 1h")
    text = str(value).strip()
    if re.fullmatch(r"0+(\.0+)?", text):
        return 0.0
    if re.fullmatch(r"-\s*\d.*", text):
        raise DurationError(f"'{text[:40]}' is negative: a duration is 0 or more (such as 500ms, 5s, 10m, 1h)")
    if isinstance(value, (int, float)) or re.fullmatch(r"\d+(\.\d+)?", text):
        raise DurationError(f"'{text}' has no unit: write {text}s, or ms, m, h")
    pos, total = 0, 0.0
    for m in _PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise DurationError(f"'{text[:40]}' is not a duration (such as 500ms, 5s, 10m, 1h or 1m30s)")
    if total > MAX_SECONDS:
        raise DurationError(f"'{text}' is longer than a year")
    return round(total, 3)


def format_duration(seconds: float) -> str:
    """The shortest spelling that parse_duration reads back to `seconds` (to the millisecond)."""
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    out = ""
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        n, ms = divmod(ms, size)
        if n:
            out += f"{n}{unit}"
    return out
