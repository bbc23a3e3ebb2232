"""Root filesystems: an image (directory, .tar, or the built-in busybox one) as the read-only lower
layer of a per-instance overlayfs, so images are never modified and each instance writes its own
upper layer. The overlay also lets runc create its mount points (/proc, /dev, /sys...) in images
that lack them.

Cache layout under the driver's state dir:
    images/default/rootfs           busybox + its applet symlinks, built once
    images/tar-<hash>/rootfs        a .tar image, extracted once (hash of path, size, mtime)
    images/privileged/tar-<hash>/   the same for privileged containers: setuid bits kept (issue 15)
The driver keeps images/ 0700: setuid programs of an image (registry layers, privileged .tars) must
not be reachable by the host's users, only through a container's overlay.
"""
from __future__ import annotations

import asyncio
import ctypes
import errno
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from agent.drivers import untar

BUSYBOX = "/bin/busybox"
MNT_DETACH = 2
MS_NOSUID, MS_NODEV = 2, 4
SKELETON = ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root",
            "run", "var/tmp")
_libc = ctypes.CDLL(None, use_errno=True)


class RootfsError(Exception):
    """An image could not be prepared or an overlay mounted/unmounted."""


def lower_dir(image: str | None, cache: Path, *, setuid: bool = False) -> Path:
    """The directory to use as the read-only lower layer for `image` (a path, or the driver's
    /proc/self/fd/N of the image it opened: then named by what it resolves to). `setuid`: a .tar's
    setuid/setgid bits are kept (privileged containers only: give them a cache of their own)."""
    if image is None:
        return default_rootfs(cache)
    path = Path(image)
    if path.is_dir():
        return path
    if path.is_file() and os.path.realpath(path).endswith(".tar"):
        return extracted_tar(path, cache, setuid=setuid)
    if not path.exists():
        raise RootfsError(f"image {image} does not exist")
    raise RootfsError(f"image {image} is neither a directory nor a .tar file")


class LowerLayers:
    """Each image's lower layer, built or extracted once (seconds for a big .tar) off the event
    loop. Starts asking for the same image at once wait for one build: twenty starts of a burst
    landing on a fresh host each built their own busybox tree, and the burst took ~1 s (issue 12).
    A failed build is not kept: the next start tries again, and says why if it fails again."""

    def __init__(self, cache: Path, build: Callable[[str | None, Path], Path] | None = None):
        """`build(image, cache)`: makes the layer (lower_dir; a test passes its own)."""
        self.cache = cache
        self.build = build or lower_dir
        self._built: dict[tuple, asyncio.Future[Path]] = {}

    async def get(self, image: str | None) -> Path:
        if image and os.path.isdir(image):
            return Path(image)
        key = _key(image)
        built = self._built.get(key)
        if built is None:
            built = self._built[key] = asyncio.ensure_future(asyncio.to_thread(self.build, image, self.cache))
            built.add_done_callback(lambda f: self._forget_failed(key, f))
        return await asyncio.shield(built)   # a cancelled start leaves the build to the others

    def warm(self) -> None:
        """Start building the built-in image now, before a start needs it."""
        asyncio.ensure_future(self.get(None)).add_done_callback(
            lambda f: f.cancelled() or f.exception())   # its failure is for the first start to tell

    def _forget_failed(self, key: tuple, built: asyncio.Future[Path]) -> None:
        if built.cancelled() or built.exception() is not None:
            self._built.pop(key, None)


def _key(image: str | None) -> tuple:
    """What identifies a built layer: a .tar replaced at the same path is built again."""
    if image is None:
        return ("default",)
    try:
        st = os.stat(image)
    except OSError:
        return ("missing", image)                  # build() says why
    return (image, st.st_ino, st.st_size, st.st_mtime_ns)


def default_rootfs(cache: Path) -> Path:
    target = cache / "default" / "rootfs"
    if target.is_dir():
        return target
    if not os.access(BUSYBOX, os.X_OK):
        raise RootfsError(f"no image given and {BUSYBOX} is missing (install busybox-static)")

    def build(root: Path) -> None:
        for d in SKELETON:
            (root / d).mkdir(parents=True, exist_ok=True)
        (root / "tmp").chmod(0o1777)
        shutil.copy2(BUSYBOX, root / "bin/busybox")
        applets = subprocess.run([BUSYBOX, "--list-full"], capture_output=True, text=True, check=True)
        for applet in applets.stdout.split():
            link = root / applet
            if applet != "bin/busybox" and not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to("/bin/busybox")
        (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
        (root / "etc/group").write_text("root:x:0:\n")

    return _build_once(target, build)


def privileged_lower_dir(image: str | None, cache: Path) -> Path:
    """lower_dir for privileged containers (LowerLayers' build): setuid bits kept."""
    return lower_dir(image, cache, setuid=True)


def extracted_tar(tar: Path, cache: Path, *, setuid: bool = False) -> Path:
    st = tar.stat()
    key = hashlib.sha1(f"{tar.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    target = cache / f"tar-{key}" / "rootfs"
    if target.is_dir():
        return target

    def build(root: Path) -> None:
        try:
            untar.extract(tar, root, setuid=setuid)
        except untar.UntarError as e:
            raise RootfsError(f"cannot extract {tar.resolve()}: {e}") from e

    return _build_once(target, build)


def _build_once(target: Path, build) -> Path:
    """Build into a temporary directory and rename it into place, so that a half-built rootfs
    (agent killed meanwhile) is never used."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    try:
        build(tmp)
        tmp.chmod(0o755)
        os.rename(tmp, target)
    except OSError as e:
        if target.is_dir():             # built concurrently: use theirs
            return target
        raise RootfsError(f"cannot build {target}: {e}") from e
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def mount_overlay(lower: Path | Sequence[Path], instance_dir: Path, *, owner: tuple[int, int] | None = None,
                  nosuid: bool = True) -> Path:
    """Mount lower + instance_dir/{upper,work} at instance_dir/rootfs and return that path.
    `owner`: the host (uid, gid) of the writable layer, so the container's root owns `/` (a user
    namespace's mapped root); `nosuid` (all but privileged containers): nosuid,nodev, so that the
    setuid programs and device nodes an image carries give nothing (issue 15). `lower`: one
    directory, or a registry image's layers, topmost first (issue 16)."""
    lowers = [lower] if isinstance(lower, Path) else list(lower)
    rootfs, upper, work = instance_dir / "rootfs", instance_dir / "upper", instance_dir / "work"
    for d in (rootfs, upper, work):
        d.mkdir(parents=True, exist_ok=True)
    if owner is not None:
        for d in (upper, work):
            os.chown(d, *owner)
    for p in (*lowers, upper, work):
        if any(c in str(p) for c in ",:\\"):
            raise RootfsError(f"overlayfs cannot take a path containing ',', ':' or '\\': {p}")
    opts = f"lowerdir={':'.join(map(str, lowers))},upperdir={upper},workdir={work}".encode()
    flags = MS_NOSUID | MS_NODEV if nosuid else 0
    if _libc.mount(b"overlay", bytes(rootfs), b"overlay", flags, opts) != 0:
        err = ctypes.get_errno()
        raise RootfsError(f"cannot mount overlay at {rootfs}: {os.strerror(err)}")
    return rootfs


def unmount(path: Path) -> None:
    """Unmount `path` (lazily, so a process still inside cannot make this fail). Idempotent."""
    while _libc.umount2(bytes(path), MNT_DETACH) == 0:
        pass                             # stacked mounts: unmount them all
    err = ctypes.get_errno()
    if err not in (errno.EINVAL, errno.ENOENT):          # EINVAL: not a mount point
        raise RootfsError(f"cannot unmount {path}: {os.strerror(err)}")


def is_mounted(path: Path) -> bool:
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)
