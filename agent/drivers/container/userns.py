"""User namespaces: a container's root is an unprivileged host uid (Docker's userns-remap, Podman's
rootful --userns model).

One range per node, from /etc/subuid and /etc/subgid (the entry of `packyard-agent --userns-remap
NAME`, default `packyard`; deploy/local/setup.sh and the Ansible role add it): container ids
0..65535 are host ids START..START+65535, for every container of the node, as Docker keeps one
remapped root per daemon. (A range per instance would need a copy of each image per instance:
runc 1.1.5 has no idmapped mounts.)

What the mapped root must be able to reach, since the kernel checks it as that host uid:
- the image: the built-in busybox tree and extracted .tar images are kept in their own cache
  (images/userns-UID-GID/) with every owner shifted into the range, once per image (shift()); a
  directory image is used as it is, so inside it is only as readable and writable as its modes
  allow to "other" (its root-owned files are not the container root's);
- the instance's writable layer (overlay upper/) is owned by the mapped root, so `/` is its own;
- the bundle's path: runc, already in the user namespace, mounts the rootfs by its host path, so
  every directory above it must be searchable by others (o+x), as Docker requires of its root dir.
"""
from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

from agent.drivers.container import rootfs
from agent.drivers.container.runc import IdMap

SUBUID, SUBGID = Path("/etc/subuid"), Path("/etc/subgid")
DEFAULT_NAME = "packyard"
SIZE = 65536                  # container ids 0..65535: what images use (nobody is 65534)
OVERFLOW = 65534              # an id an image has beyond the range becomes nobody's


class UsernsError(Exception):
    """No usable id range, or a path the mapped root cannot reach."""


def id_map(name: str = DEFAULT_NAME, subuid: Path = SUBUID, subgid: Path = SUBGID) -> IdMap:
    """The node's range: the first of `name`'s entries in each file holding SIZE ids."""
    uid, gid = _start(name, subuid), _start(name, subgid)
    return IdMap(uid=uid, gid=gid, size=SIZE)


def _start(name: str, path: Path) -> int:
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise UsernsError(f"cannot read {path}: {e.strerror}") from e
    for line in lines:
        fields = line.strip().split(":")
        if len(fields) == 3 and fields[0] == name and fields[1].isdigit() and fields[2].isdigit():
            start, count = int(fields[1]), int(fields[2])
            if count >= SIZE and start > 0:
                return start
    raise UsernsError(f"no range of {SIZE} ids for '{name}' in {path} (add e.g. '{name}:1000000:{SIZE}'; "
                      "deploy/local/setup.sh does)")


def shift(root: Path, ids: IdMap) -> None:
    """Own every file below `root` by the mapped ids: id N becomes START+N. Idempotent (ids already
    in the range stay), so a shift cut short is finished by the next. chown clears setuid/setgid
    bits: they are put back. (File capabilities, security.capability, are not carried over.)"""
    _shift_one(root, ids)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            _shift_one(Path(dirpath, name), ids)


def _shift_one(path: Path, ids: IdMap) -> None:
    st = os.lstat(path)
    uid, gid = _mapped(st.st_uid, ids.uid, ids.size), _mapped(st.st_gid, ids.gid, ids.size)
    if (uid, gid) == (st.st_uid, st.st_gid):
        return
    os.lchown(path, uid, gid)
    if not stat.S_ISLNK(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
        os.chmod(path, stat.S_IMODE(st.st_mode))


def _mapped(n: int, start: int, size: int) -> int:
    if start <= n < start + size:
        return n
    return start + (n if n < size else OVERFLOW)


def unreachable(path: Path, ids: IdMap) -> str:
    """The first directory from / down to `path` the mapped root (host uid ids.uid, not in any of
    its groups) may not search, or ""."""
    for d in reversed([path, *path.parents]):
        try:
            st = os.stat(d)
        except OSError:
            return str(d)
        if st.st_uid == ids.uid:
            bit = stat.S_IXUSR
        elif st.st_gid == ids.gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return str(d)
    return ""


def shifted_build(ids: IdMap, build: Callable[[str | None, Path], Path] = rootfs.lower_dir
                  ) -> Callable[[str | None, Path], Path]:
    """rootfs.LowerLayers' build for containers under `ids`: the layer `build` makes (in the cache
    LowerLayers is given, one per id range), shifted once; a `shifted` stamp beside it says so."""
    def shifted(image: str | None, cache: Path) -> Path:
        root = build(image, cache)
        stamp = root.parent / "shifted"
        if not stamp.exists():
            shift(root, ids)
            stamp.write_text(f"{ids.uid}:{ids.gid}:{ids.size}\n")
        return root
    return shifted
