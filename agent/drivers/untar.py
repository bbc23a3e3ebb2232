"""Unpacking an image's tar safely: nothing lands outside the destination, nothing gives privilege.

`extract(source, dest)` is the one entry point (the container driver's .tar images; any other
image store can use it for its layers). What it refuses or drops, as Docker/containerd do for
unprivileged images:
- members escaping `dest`: absolute names, `..`, paths through a symlink already unpacked, and
  hard links whose target is outside (tarfile's own tar filter does not check hard links at all:
  a member `x` hard-linked to `/etc/shadow` would link the host's file into the image);
- setuid and setgid bits (cleared, unless the caller unpacks for privileged containers only: issue
  15), device nodes (skipped: runc gives /dev its own);
- owners by name: ids are taken as numbers, never looked up in the host's /etc/passwd.
Absolute symlinks are kept: inside a root filesystem they point into the container's own root.
"""
from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path
from typing import BinaryIO


class UntarError(Exception):
    """The archive is unreadable or a member tries to escape the destination."""


def extract(source: str | os.PathLike | BinaryIO, dest: Path, *, setuid: bool = False) -> None:
    """Unpack the tar (gzip/bzip2/xz too) at `source` (a path, e.g. /proc/self/fd/N, or a file
    object) into the existing directory `dest`. `setuid`: keep setuid/setgid bits, for a tree only
    privileged containers mount (the caller keeps it where no host user can reach it)."""
    chosen = privileged_filter if setuid else rootfs_filter
    try:
        if isinstance(source, (str, os.PathLike)):
            with tarfile.open(source) as tf:
                tf.extractall(dest, filter=chosen, numeric_owner=True)
        else:
            with tarfile.open(fileobj=source) as tf:
                tf.extractall(dest, filter=chosen, numeric_owner=True)
    except (tarfile.TarError, OSError) as e:
        raise UntarError(str(e)) from e


def rootfs_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """tarfile's extraction filter for a root filesystem (see the module docstring)."""
    return _filter(member, dest, clear=stat.S_ISUID | stat.S_ISGID)


def privileged_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """rootfs_filter keeping setuid/setgid: `docker run --privileged` runs an image's setuid
    programs as they are. Escapes and device nodes are refused all the same."""
    return _filter(member, dest, clear=0)


def _filter(member: tarfile.TarInfo, dest: str, clear: int) -> tarfile.TarInfo | None:
    if member.ischr() or member.isblk():
        return None
    checked = tarfile.tar_filter(member, dest)    # escapes refused; it also drops go-w and sticky:
    if member.islnk():
        _refuse_outside(member.linkname, dest, member.name)
    if member.mode is None:
        return checked
    # a root filesystem legitimately has group/other-writable and sticky dirs (/tmp): keep those
    # (from member.mode); setgid on a directory only passes its group on, so it stays
    mode = member.mode & ~clear if not member.isdir() else member.mode & ~(clear & stat.S_ISUID)
    return checked.replace(mode=mode, deep=False)


def _refuse_outside(linkname: str, dest: str, name: str) -> None:
    base = os.path.realpath(dest)
    target = os.path.realpath(os.path.join(base, linkname.lstrip("/")))
    if linkname.startswith("/") or ".." in Path(linkname).parts or os.path.commonpath([base, target]) != base:
        raise tarfile.OutsideDestinationError(tarfile.TarInfo(name), target)
