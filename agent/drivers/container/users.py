"""`container.user` ("UID[:GID]", numbers or names) -> the ids the process runs with.

As Docker does: a name is looked up in the image's /etc/passwd or /etc/group; a user without a group
gets its passwd entry's group (0 when the image has no entry for it), and the user's supplementary
groups are the /etc/group entries naming it. The files are read only when a user is given, from the
image's lower layer, never through a symlink (an image's /etc/passwd -> /host/etc/passwd must not
make the agent read the host's files).
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from agent.drivers.base import DriverError
from agent.drivers.container.runc import User
from packyard.privilege import parse_user

MAX_FILE = 1 << 20


def resolve(value: str | None, image_root: Path, what: str) -> User:
    """The user `value` asks for in the image at `image_root`; DriverError `what: ...` if it names
    a user or group the image does not have."""
    if value is None:
        return User()
    try:
        user, group = parse_user(value)
    except ValueError as e:
        raise DriverError(f"{what}: {e}") from None
    entry = None
    if isinstance(user, str) or group is None:         # the passwd entry: by name, or the uid's
        key = 0 if isinstance(user, str) else 2
        entry = next((e for e in _entries(image_root, "passwd") if e[key] == str(user) and len(e) > 3
                      and _num(e[2]) is not None), None)
        if entry is None and isinstance(user, str):
            raise DriverError(f"{what}: no user '{user}' in the image's /etc/passwd")
    uid = user if isinstance(user, int) else _num(entry[2])
    if isinstance(group, str):
        found = next((e for e in _entries(image_root, "group") if e[0] == group and _num(e[2]) is not None), None)
        if found is None:
            raise DriverError(f"{what}: no group '{group}' in the image's /etc/group")
        return User(uid=uid, gid=_num(found[2]))
    if group is not None:
        return User(uid=uid, gid=group)
    gid = (_num(entry[3]) if entry is not None else None) or 0
    members = [_num(e[2]) for e in _entries(image_root, "group")
               if entry is not None and len(e) > 3 and entry[0] in e[3].split(",")]
    return User(uid=uid, gid=gid, groups=tuple(sorted({g for g in members if g is not None and g != gid})))


def _num(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and int(text) < 2**32 - 1 else None


def _entries(root: Path, name: str) -> list[list[str]]:
    """The lines of root/etc/<name> split at ':' (with at least 3 fields); [] if there is none."""
    text = _read_in(root, ("etc", name))
    return [fields for line in text.splitlines() if not line.startswith("#")
            for fields in [line.split(":")] if len(fields) >= 3]


def _read_in(root: Path, parts: tuple[str, ...]) -> str:
    """root/parts..., opened one component at a time without following a symlink; "" if absent."""
    fds: list[int] = []
    try:
        fds.append(os.open(root, os.O_RDONLY | os.O_DIRECTORY))
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            flags = os.O_RDONLY | os.O_NOFOLLOW | (os.O_NONBLOCK if last else os.O_DIRECTORY)
            fds.append(os.open(part, flags, dir_fd=fds[-1]))
        if not stat.S_ISREG(os.fstat(fds[-1]).st_mode):
            return ""
        with os.fdopen(os.dup(fds[-1]), "rb") as f:
            return f.read(MAX_FILE).decode(errors="replace")
    except OSError:
        return ""          # missing, a symlink, not a directory: as if the image had none
    finally:
        for fd in fds:
            os.close(fd)
