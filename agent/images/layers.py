"""Unpacking one layer blob into a directory of its own, an overlayfs lower layer.

Safe by construction, whatever the tar holds: members are checked by tarfile's `tar_filter`
(no absolute paths, no `..`, nothing reached through a symlink out of the layer, no link out of it),
device nodes are skipped (an image brings no devices; a privileged container gets the host's),
setuid and setgid bits are cleared unless the layer is unpacked for privileged containers only
(issue 16, as a .tar image's are: drivers/untar.py; overlays are mounted nosuid,nodev as well).
Whiteouts, as the OCI image spec says, become overlayfs's own: `.wh.NAME` a 0/0 character device
NAME, `.wh..wh..opq` the directory's `trusted.overlay.opaque=y`. Owners are shifted into the node's
user-namespace range while unpacking (issue 12/15: the mapped root must own what the image's root
owns), so a layer is unpacked once per id range and never chowned afterwards.
The caller unpacks into a temporary directory and renames it into place (store.py): a layer cut
short is never used.
"""
from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:                 # the container driver imports this package
    from agent.drivers.container.runc import IdMap


WHITEOUT, OPAQUE = ".wh.", ".wh..wh..opq"
OVERFLOW = 65534


class LayerError(Exception):
    """A layer could not be unpacked."""


def unpack(blob: Path, dest: Path, ids: IdMap | None, *, setuid: bool = False) -> int:
    """Unpack `blob` (tar, gzip, bzip2 or xz) into the empty directory `dest`; its size in bytes.
    `setuid`: keep setuid/setgid bits (a tree only privileged containers use)."""
    clear = 0 if setuid else stat.S_ISUID | stat.S_ISGID
    whiteouts: list[str] = []
    opaque: list[str] = []

    def checked(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
        name = os.path.basename(member.name.rstrip("/"))
        parent = os.path.dirname(member.name.rstrip("/"))
        if name == OPAQUE:
            opaque.append(parent)
            return None
        if name.startswith(WHITEOUT):
            whiteouts.append(os.path.join(parent, name[len(WHITEOUT):]))
            return None
        if member.isdev():
            return None
        safe = tarfile.tar_filter(member, path)
        mode = member.mode if member.mode is not None else safe.mode
        # a root filesystem has group/other-writable and sticky dirs (/tmp): kept; setgid on a
        # directory only passes its group on, so it stays
        mode &= ~clear if not member.isdir() else ~(clear & stat.S_ISUID)
        uid, gid = (member.uid, member.gid) if ids is None else (_shift(member.uid, ids.uid, ids.size),
                                                                  _shift(member.gid, ids.gid, ids.size))
        return safe.replace(mode=mode, uid=uid, gid=gid, uname="", gname="", deep=False)

    try:
        with tarfile.open(blob, "r:*") as tf:
            tf.extractall(dest, filter=checked, numeric_owner=True)
    except (tarfile.TarError, OSError, EOFError, KeyError) as e:   # KeyError: a hard link to nothing
        raise LayerError(f"cannot unpack layer {blob.name}: {e}") from e
    for rel in whiteouts:
        _whiteout(dest, rel, ids)
    for rel in opaque:
        d = _inside(dest, rel)
        d.mkdir(parents=True, exist_ok=True)
        os.setxattr(d, "trusted.overlay.opaque", b"y", follow_symlinks=False)
    return _size(dest)


def _whiteout(dest: Path, rel: str, ids: IdMap | None) -> None:
    target = _inside(dest, rel)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() or target.is_symlink():
        raise LayerError(f"layer both adds and deletes {rel}")
    os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0))
    if ids is not None:
        os.lchown(target, ids.uid, ids.gid)


def _inside(dest: Path, rel: str) -> Path:
    """dest/rel without following any symlink out of dest (rel comes from the tar)."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if ".." in parts or not parts and rel not in ("", "."):
        raise LayerError(f"whiteout path {rel!r} leaves the layer")
    path = dest
    for p in parts:
        path = path / p
        if path.is_symlink():
            raise LayerError(f"whiteout path {rel!r} goes through a symlink")
    return path


def _shift(n: int, start: int, size: int) -> int:
    return start + (n if 0 <= n < size else OVERFLOW)


def _size(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total
