"""Resource quantities: parse what users type ("250m", 0.25, "64Mi", "1G") into exact integers.

cpu is kept in milli-cores and memory/disk in bytes so that sums and comparisons never suffer
float rounding (a host "full" at 3.9999999 cores would strand a 1-core instance).
"""
from __future__ import annotations

import math
import re

# Names of jobs, groups and nodes: DNS labels. Here rather than in spec.py so that the agent can
# check its node name without importing pydantic (several MiB of resident memory).
# \Z, not $: `$` also matches before a trailing newline, and "web\n" must not pass as a name.
DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")

# The most one instance may ask for: limits that catch typos ("64Gi" meant "64Mi" x 1000 instances)
# before they stay pending forever; the job spec refuses more, the agent refuses more plus overhead.
MAX_CPU_MILLI = 1024 * 1000
MAX_MEMORY = 16 << 40
MAX_DISK = 1 << 50
MAX_GPU_MILLI = 64 * 1000

_BINARY = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}
_DECIMAL = {"K": 10**3, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_BYTES_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(Ki|Mi|Gi|Ti|K|k|M|G|T|B)?\s*\Z")
_CPU_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m)?\s*\Z")
# what would break a message's one line: ASCII and C1 controls (NEL), Unicode line separators
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
SHOWN_CHARS = 40     # of a bad value quoted back in an error: a 1 MiB string must not flood the message


class QuantityError(ValueError):
    """A quantity that cannot be parsed; the message says what was expected."""


def shown(value: object) -> str:
    """`value` as quoted back in an error message: shortened when long."""
    text = str(value) if not isinstance(value, int) or abs(value) < 10**30 else "a huge number"
    text = text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "..."
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)     # one line: "\n" stays visible


def _finite(number: object) -> float:
    # float() of a 400-digit integer overflows, and inf/nan survive arithmetic until int() fails
    try:
        f = float(number)                         # type: ignore[arg-type]
    except OverflowError:
        raise QuantityError("is far too large") from None
    if math.isnan(f):
        raise QuantityError("must be a number, not NaN")
    if math.isinf(f):
        raise QuantityError("is far too large" if f > 0 else "must not be negative")
    return f


def parse_cpu_milli(value: object) -> int:
    """Cores as a number (0.25) or a string ("0.25", "250m") -> milli-cores."""
    if isinstance(value, bool):
        raise QuantityError("expected cores as a number (0.25) or milli-cores as a string ('250m')")
    if isinstance(value, (int, float)):
        milli = _finite(value) * 1000
    elif isinstance(value, str):
        match = _CPU_RE.match(value)
        if not match:
            raise QuantityError(f"'{shown(value)}' is not a cpu quantity (use 0.25 or '250m')")
        number = _finite(match.group(1))
        milli = number if match.group(2) else number * 1000
    else:
        raise QuantityError("expected cores as a number (0.25) or milli-cores as a string ('250m')")
    if milli < 0:
        raise QuantityError("must not be negative")
    if math.isinf(milli):
        raise QuantityError("is far too large")
    if milli and milli < 1:
        raise QuantityError("must be at least 1m (0.001 cores)")
    return int(round(milli))


def parse_bytes(value: object) -> int:
    """Bytes as an integer or a string with a unit: Ki/Mi/Gi/Ti (binary), K/M/G/T (decimal)."""
    if isinstance(value, bool):
        raise QuantityError("expected bytes as an integer or a string such as '64Mi'")
    if isinstance(value, int):
        if value < 0:
            raise QuantityError("must not be negative")
        return value                              # exact, however large: the caller caps it
    if isinstance(value, float) and value.is_integer():
        number, unit = value, "B"
    elif isinstance(value, str):
        match = _BYTES_RE.match(value)
        if not match:
            raise QuantityError(
                f"'{shown(value)}' is not a size (use a unit: Ki, Mi, Gi, Ti, K, M, G, T, e.g. '64Mi')")
        number, unit = _finite(match.group(1)), match.group(2) or "B"
    else:
        raise QuantityError("expected bytes as an integer or a string such as '64Mi'")
    if number < 0:
        raise QuantityError("must not be negative")
    scale = _BINARY.get(unit) or _DECIMAL.get(unit) or 1
    return int(round(_finite(number * scale)))


def format_bytes(n: int | float) -> str:
    """Human-readable binary size: 67108864 -> '64Mi'."""
    n = float(n)
    for unit in ("Ti", "Gi", "Mi", "Ki"):
        scale = _BINARY[unit]
        if abs(n) >= scale:
            value = n / scale
            digits = 0 if value >= 100 else 1 if value >= 10 else 2   # three significant digits
            text = f"{value:.{digits}f}"
            return (text.rstrip("0").rstrip(".") if "." in text else text) + unit
    return f"{int(n)}B"


def format_cpu(milli: int | float) -> str:
    """Milli-cores as cores: 250 -> '0.25', 4000 -> '4'."""
    cores = milli / 1000
    return f"{cores:.3f}".rstrip("0").rstrip(".") or "0"
