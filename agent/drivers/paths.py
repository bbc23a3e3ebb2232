"""Host paths a job names (a container image, a VM's kernel, initrd and disk), checked on the agent.

The scheduler already refused relative paths and `..`, but the agent trusts no caller: it resolves
each path (symlinks included) and refuses it unless it lies inside a directory the operator allowed
(`packyard-agent --allowed-dirs`). Otherwise a job could boot /etc/shadow as a kernel, hand the host's
/ to a container as its image, or get there through a symlink planted in an allowed directory.
open_allowed() then opens it once with openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS) from the
allowed directory (beneath.py) and the driver uses that fd (/proc/self/fd/N) from then on, so a
symlink swapped in after the check is never followed (issue 15).

Whatever --allowed-dirs says, it never covers the agent's own state dir (every instance's writable
layer, overlay and VM disk is there), another agent's (marked by STATE_MARKER) or an etcd data dir
(recognised by its member/wal): instances must not feed each other, or etcd's files, as images.
"""
from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from agent.drivers.base import DriverError
from agent.drivers.beneath import fd_path, open_beneath

# where deploy/ and the docs put images and the VM guest (/srv/images, /srv/vm, /var/lib/packyard/guest)
DEFAULT_ALLOWED_DIRS = ("/srv", "/var/lib/packyard")
# where etcd keeps its data by default (Debian's etcd-server; deploy/systemd, Ansible) and the
# scheduler's state dir, which holds its embedded etcd
DEFAULT_PROTECTED_DIRS = ("/var/lib/etcd", "/var/lib/packyard/etcd", "/var/lib/packyard/scheduler")
STATE_MARKER = ".packyard-agent-state"    # written into every agent's state dir (agent/main.py)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass
class Opened:
    """A job's path, opened once: `fd` (O_PATH) is what the driver uses; `real` what it was then."""
    fd: int
    real: Path
    is_dir: bool

    @property
    def proc(self) -> str:
        """A path naming the opened file itself (a magic link: no walk again)."""
        return f"/proc/self/fd/{self.fd}"

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def check_allowed_dirs(allowed: Iterable[Path], protected: Iterable[Path]) -> None:
    """ValueError when an allowed dir is (inside) a protected one: nothing it allows could be used.
    An allowed dir containing a protected one is fine: that part of it is refused at each start."""
    for d in allowed:
        for p in protected:
            p = Path(os.path.realpath(p))
            if d == p or p in d.parents:
                raise ValueError(f"{d} is inside {p} (the agent's state or etcd's data: instances' "
                                 "writable layers), which no job may use as an image")


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


def open_allowed(path: object, allowed: Iterable[Path] | None, what: str,
                 protected: Iterable[Path] = ()) -> Opened:
    """`path` opened (O_PATH) beneath the allowed directory it resolves into, if it is not in (and,
    a directory, does not hold) a `protected` dir, another agent's state dir or etcd's data."""
    real = allowed_path(path, allowed, what)
    dirs = [Path("/")] if allowed is None else [Path(os.path.realpath(d)) for d in allowed]
    root = next(d for d in sorted(dirs, key=lambda d: len(d.parts), reverse=True)
                if real == d or d in real.parents)
    try:
        fd = open_beneath(root, str(real.relative_to(root)))
    except FileNotFoundError:
        raise DriverError(f"{what} {path} does not exist") from None
    except OSError as e:
        why = "it was swapped for a link leading outside" if e.errno in (18, 40) else e.strerror
        raise DriverError(f"{what} {path}: cannot open it below {root}: {why}") from None
    opened = Opened(fd, Path(fd_path(fd)), stat.S_ISDIR(os.fstat(fd).st_mode))
    try:
        _refuse_protected(opened, [Path(os.path.realpath(p)) for p in protected], root, what, str(path))
    except DriverError:
        opened.close()
        raise
    return opened


def _refuse_protected(opened: Opened, protected: list[Path], root: Path, what: str, path: str) -> None:
    real = opened.real
    for p in protected:
        if real == p or p in real.parents or (opened.is_dir and real in p.parents):
            raise DriverError(f"{what} {path} is in the agent's state or etcd's data ({p}), which "
                              "no job may use, whatever --allowed-dirs says")
    for d in (real if opened.is_dir else real.parent, *(real if opened.is_dir else real.parent).parents):
        if (d / STATE_MARKER).exists() or (d / "member" / "wal").is_dir():
            raise DriverError(f"{what} {path} is in {d}, an agent's state or etcd's data, which no "
                              "job may use, whatever --allowed-dirs says")
        if d == root:
            break


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:80] + "..."
