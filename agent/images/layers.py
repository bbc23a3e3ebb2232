"""Unpacking one layer blob into a directory of its own, an overlayfs lower layer.

Safe by construction, whatever the tar holds: members' names are checked by tarfile's `tar_filter`
(no absolute paths, no `..`, nothing reached through a symlink out of the layer). Hard links are
made here, not by tarfile (its `tar_filter` does not check where they point: `x -> ../../etc/shadow`
linked the host's file into the layer): the target is looked up in the merged view of this layer so
far and the layers below it (stack.py), never outside them, a symlink there linked or copied as the
symlink it is; an absolute target, one rising above the image's root (`../`) or one naming nothing
there is refused. A target in this layer is linked; one in a layer below is copied into this layer,
with the owner and mode it has there (the layers below were unpacked for the same id range), as
overlayfs's copy-up would and containerd's apply onto the mounted snapshot does (a link across
layer directories would tie shared layers' files together).
Device nodes are skipped (an image brings no devices; a privileged container gets the host's),
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
import posixpath
import shutil
import stat
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent.images import stack

if TYPE_CHECKING:                 # the container driver imports this package
    from agent.drivers.container.runc import IdMap


WHITEOUT, OPAQUE = ".wh.", ".wh..wh..opq"
OVERFLOW = 65534


class LayerError(Exception):
    """A layer could not be unpacked."""


@dataclass(frozen=True)
class Unpacked:
    bytes: int                  # what the unpacked layer holds
    from_below: int             # hard links whose target was copied from the layers below: the
                                # tree depends on them, not only on the blob (store.py keys it so)


def unpack(blob: Path, dest: Path, ids: IdMap | None, *, setuid: bool = False,
           below: Sequence[Path] = ()) -> Unpacked:
    """Unpack `blob` (tar, gzip, bzip2 or xz) into the empty directory `dest`.
    `setuid`: keep setuid/setgid bits (a tree only privileged containers use). `below`: the image's
    layers under this one, unpacked for the same ids, topmost first (where hard links may point)."""
    clear = 0 if setuid else stat.S_ISUID | stat.S_ISGID
    whiteouts: list[str] = []
    opaque: list[str] = []
    copies: dict[Path, Path] = {}      # a file copied from below -> its copy here (links to it share it)

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
        if member.islnk():
            _hard_link(safe.name, member.linkname, Path(path), below, copies, clear)
            return None
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
    except (tarfile.TarError, OSError, EOFError) as e:
        raise LayerError(f"cannot unpack layer {blob.name}: {e}") from e
    except LayerError as e:
        raise LayerError(f"cannot unpack layer {blob.name}: {e}") from None
    for rel in whiteouts:
        _whiteout(dest, rel, ids)
    for rel in opaque:
        d = _inside(dest, rel)
        d.mkdir(parents=True, exist_ok=True)
        os.setxattr(d, "trusted.overlay.opaque", b"y", follow_symlinks=False)
    return Unpacked(_size(dest), len(copies))


def _hard_link(name: str, linkname: str, dest: Path, below: Sequence[Path], copies: dict[Path, Path],
               clear: int) -> None:
    """The tar's hard link `name` -> `linkname` made in `dest` (see the module's docstring)."""
    what = f"hard link {name[:200]!r} -> {linkname[:200]!r}"
    # absolute: refused as drivers/untar.py and tarfile's data filter do (tar writers store hard
    # links relative to the archive's root; GNU tar strips a leading '/')
    if not linkname or linkname.startswith("/") or posixpath.normpath(linkname).split("/")[0] == "..":
        raise LayerError(f"{what} leaves the image's root")
    source = stack.find([dest, *below], linkname)
    if source is None:
        raise LayerError(f"{what} names nothing in this layer or the layers below it")
    st = os.lstat(source)
    if stat.S_ISDIR(st.st_mode):
        raise LayerError(f"{what} names a directory")
    path = dest / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir() and not path.is_symlink():
        raise LayerError(f"{what} would replace a directory")
    path.unlink(missing_ok=True)
    inside = source.is_relative_to(dest)
    copy = copies.get(source)
    if inside or (copy is not None and os.path.lexists(copy)):
        os.link(source if inside else copy, path, follow_symlinks=False)   # the link itself, not its target
    elif stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(source), path)
        os.lchown(path, st.st_uid, st.st_gid)
        copies[source] = path
    elif stat.S_ISREG(st.st_mode):
        shutil.copyfile(source, path, follow_symlinks=False)
        os.chown(path, st.st_uid, st.st_gid)
        os.chmod(path, stat.S_IMODE(st.st_mode) & ~clear)     # after chown, which clears setuid bits
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        copies[source] = path
    else:
        raise LayerError(f"{what} names neither a file nor a symlink")


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
