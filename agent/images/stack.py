"""A path looked up in a stack of unpacked layers as the container will see it: overlayfs's merged
view of them (the topmost entry wins; a whiteout, a 0/0 character device, hides what is below it; an
opaque directory, `trusted.overlay.opaque=y`, hides the directories below it; a directory hides a
non-directory below it).

layers.py asks it where a hard link's target is when the target is not in the layer being unpacked
but in one below (a later layer that hard-links a file an earlier one shipped), as containerd finds
it in the mounted snapshot and umoci in the rootfs it unpacks into.

Only the layer directories' own entries are read, each step lstat'ed: nothing on the host outside
the layers is reached. A symlink on the way is followed as the container would follow it, inside the
image's root (an absolute target from the root, `..` stopping at the root), at most MAX_HOPS times.
"""
from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Sequence
from pathlib import Path

MAX_HOPS = 40              # Linux's limit of symlinks followed in one lookup


def parts(rel: str) -> list[str]:
    """`rel` (relative to the image's root, or absolute from it) as names, `..` stopping at the root."""
    return [p for p in posixpath.normpath("/" + rel).split("/") if p]


def find(layers: Sequence[Path], rel: str) -> Path | None:
    """The entry that shows at `rel` in the merged view of `layers` (topmost first): its path inside
    the one layer it comes from, not followed if it is a symlink; None if nothing shows there."""
    names, hops = parts(rel), 0
    while True:
        followed = _walk(layers, names)
        if not isinstance(followed, list):
            return followed
        hops += 1
        if hops > MAX_HOPS:
            return None
        names = followed


def _walk(layers: Sequence[Path], names: list[str]) -> Path | None | list[str]:
    """One lookup of `names`: the entry, None, or the names to look up instead (a symlink on the way)."""
    below = list(layers)          # the layers whose directory at names[:i] shows in the merged view
    for i in range(len(names)):
        here = "/".join(names[:i + 1])
        shown: list[Path] = []
        for layer in below:
            path = layer / here
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if stat.S_ISDIR(st.st_mode):
                shown.append(layer)
                if _opaque(path):
                    break
                continue
            if shown:             # a directory above hides whatever this is
                break
            if _whiteout(st) or i == len(names) - 1:
                return None if _whiteout(st) else path
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(path)
                base = "" if target.startswith("/") else "/".join(names[:i])
                return parts(posixpath.join(base, target, *names[i + 1:]))
            return None           # a file where a directory would have to be
        if not shown:
            return None
        below = shown
    return below[0] / "/".join(names) if names else None


def _whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False
