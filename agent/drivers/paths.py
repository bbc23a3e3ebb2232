"""Host paths a job names (a container image, a VM's kernel, initrd and disk), checked on the agent.

The scheduler already refused relative paths and `..`, but the agent trusts no caller: it resolves
each path (symlinks included) and refuses it unless it lies inside a directory the operator allowed
(`packyard-agent --allowed-dirs`). Otherwise a job could boot /etc/shadow as a kernel, hand the host's
/ to a container as its image, or get there through a symlink planted in an allowed directory.
The resolved path is what the driver then uses, so a symlink swapped after the check gains nothing
unless it is swapped within the (short) time between the check and the use.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from agent.drivers.base import DriverError

# where deploy/ and the docs put images and the VM guest (/srv/images, /srv/vm, /var/lib/packyard/guest)
DEFAULT_ALLOWED_DIRS = ("/srv", "/var/lib/packyard")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def parse_allowed_dirs(text: str) -> tuple[Path, ...]:
    """`--allowed-dirs a,b` -> resolved absolute directories; ValueError naming the bad entry."""
    dirs = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        if not entry.startswith("/") or _CONTROL.search(entry):
            raise ValueError(f"'{entry}' is not an absolute directory")
        dirs.append(Path(os.path.realpath(entry)))
    if not dirs:
        raise ValueError("give at least one directory")
    return tuple(dirs)


def allowed_path(path: object, allowed: Iterable[Path] | None, what: str) -> Path:
    """`path` resolved, if it is a plain absolute path inside one of `allowed` (None: anywhere)."""
    if not isinstance(path, str) or not path.startswith("/") or _CONTROL.search(path) \
            or ".." in path.split("/"):
        raise DriverError(f"{what} {_show(path)} is not an absolute path without '..' or control characters")
    real = Path(os.path.realpath(path))
    if allowed is None:
        return real
    dirs = [Path(os.path.realpath(d)) for d in allowed]
    if any(real == d or d in real.parents for d in dirs):
        return real
    via = f" (it resolves to {real})" if str(real) != path else ""
    raise DriverError(f"{what} {path}{via} is outside the directories this node allows "
                      f"({', '.join(map(str, dirs))}; packyard-agent --allowed-dirs)")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:80] + "..."
