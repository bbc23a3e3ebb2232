"""openat2(2) with RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS: open a path below a directory so that
no symlink, `..` or /proc magic link met on the way can lead outside it, whatever is swapped in
meanwhile (runc's fix for CVE-2021-30465 works the same way). The kernel does the whole walk
atomically against that directory's fd; Python has no binding, so it is called through libc's
syscall(2) (Linux ≥ 5.6; number 437 on every architecture).
"""
from __future__ import annotations

import ctypes
import errno
import os

SYS_OPENAT2 = 437
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_BENEATH = 0x08
_libc = ctypes.CDLL(None, use_errno=True)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def open_beneath(root: str | os.PathLike, relative: str, flags: int = os.O_PATH) -> int:
    """An fd (close-on-exec) of `relative` below the directory `root`; OSError as open(2) gives it,
    EXDEV when the walk would leave `root`, ELOOP for a magic link."""
    rootfd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return openat2(rootfd, relative, flags | os.O_CLOEXEC, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)
    finally:
        os.close(rootfd)


def openat2(dirfd: int, path: str, flags: int, resolve: int) -> int:
    how = _OpenHow(flags, 0, resolve)
    name = os.fsencode(path.lstrip("/") or ".")
    for _ in range(16):              # EAGAIN: a rename raced the walk; the kernel asks for a retry
        fd = _libc.syscall(SYS_OPENAT2, dirfd, name, ctypes.byref(how), ctypes.sizeof(how))
        if fd >= 0:
            return fd
        err = ctypes.get_errno()
        if err != errno.EAGAIN:
            raise OSError(err, os.strerror(err), path)
    raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN), path)


def fd_path(fd: int) -> str:
    """What the kernel says `fd` is (the file it holds, wherever it was renamed to)."""
    return os.readlink(f"/proc/self/fd/{fd}")
