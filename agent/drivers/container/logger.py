"""A container's log process: s6-log (Debian `s6`) reads the container's stdout+stderr from a pipe
and writes them into the instance's log directory, rotating by size, so that a log never grows past
its cap however fast the container writes (a `yes` writes hundreds of MB/s: a rotation checked now
and then, copytruncate style, would overrun the cap by far).

    logs/<cid>/current                  what the container writes now
    logs/<cid>/@<TAI64N>.s              rotated files, the name sorts oldest first (.u: a `current`
                                        left by an s6-log that was killed, kept the same way)
    logs/<cid>/lock, state              s6-log's own

Like conmon or containerd-shim, it is a process of its own per instance, in its own session, holding
the read end of the container's pipe: it outlives an agent restart, and the new agent finds it again
by its pid and start time (in the handle). It ends by itself when the container's last process has
closed the pipe (EOF), after writing the last line (see ContainerDriver._flush_log for a last line
without a newline).

The cap: `current` is rotated when it comes within `tolerance` of `max_size`, and s6-log writes at
most WRITE_MAX bytes past that check (-b: one read of stdin, at most a line of LINE_LIMIT held across
reads), so with tolerance >= WRITE_MAX no file exceeds max_size; s6-log keeps `max_files - 1` rotated
files besides `current` (during a rotation, until the oldest is deleted, the new `current` beside
one rotated file too many is empty: the bytes never pass max_size × max_files). The bytes kept are
at least (max_size - tolerance) per rotated file. Lines longer than LINE_LIMIT are cut in two
(s6-log logs lines).
"""
from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import os
import select
import shutil
import signal
import termios
import time
from dataclasses import dataclass
from pathlib import Path

from agent.drivers.base import DriverError
from agent.drivers.process import start_time

BINARY = "s6-log"
LINE_LIMIT = 8192            # s6-log -l: a longer line is cut (its default)
READ_SIZE = 8192             # skalibs' stdin buffer: what one read brings
WRITE_MAX = LINE_LIMIT + 2 * READ_SIZE   # the most one write can add past the rotation check
MIN_SIZE = 2 * WRITE_MAX     # s6-log's tolerance may be at most half the size
MAX_SIZE = 268435455         # s6-log's largest `s`
READY_SECONDS = 5.0
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}   # none of the agent's own environment


class LogCapError(ValueError):
    """A log cap the agent cannot enforce (its flags' message)."""


@dataclass(frozen=True)
class LogCap:
    """Each instance's log: at most `max_files` files (the current one included) of at most
    `max_size` bytes each. Kubelet's default: 10 MiB × 5 files."""
    max_size: int = 10 * 1024 * 1024
    max_files: int = 5

    def __post_init__(self):
        if not MIN_SIZE <= self.max_size <= MAX_SIZE:
            raise LogCapError(f"must be between {MIN_SIZE} ({MIN_SIZE // 1024}Ki) and {MAX_SIZE} bytes "
                              f"(s6-log's limits), not {self.max_size}")
        if self.max_files < 2:
            raise LogCapError(f"must be at least 2 (the current file and one rotated), not {self.max_files}")

    def script(self, log_dir: Path) -> list[str]:
        """s6-log's logging script: n rotated files kept, rotation at size s minus tolerance l."""
        return [f"n{self.max_files - 1}", f"s{self.max_size}", f"l{WRITE_MAX}", str(log_dir)]

    def argv(self, binary: str, log_dir: Path, notify_fd: int) -> list[str]:
        # -b: read no more while a write is pending (bounded memory; a slow disk slows the container)
        return [binary, "-b", "-d", str(notify_fd), "-l", str(LINE_LIMIT), *self.script(log_dir)]


@dataclass(frozen=True)
class LogProcess:
    """The running log process, as the handle keeps it."""
    pid: int
    start_time: int

    def data(self) -> dict:
        return {"pid": self.pid, "start_time": self.start_time}

    @staticmethod
    def from_data(data: dict | None) -> LogProcess | None:
        if not data or not data.get("pid"):
            return None
        return LogProcess(int(data["pid"]), int(data.get("start_time", 0)))


def binary() -> str | None:
    return shutil.which(BINARY)


def start(cap: LogCap, log_dir: Path, read_fd: int, stderr_path: Path) -> LogProcess:
    """Start s6-log on the read end of the container's pipe, in a session of its own; return once it
    has opened its log directory (its readiness notification), so `current` exists."""
    exe = binary()
    if exe is None:
        raise DriverError(f"{BINARY} not found (Debian package s6)")
    log_dir.parent.mkdir(parents=True, exist_ok=True)
    # s6-log makes its files 0644: the directory is what keeps them (a job's env, printed) root's
    log_dir.mkdir(mode=0o700, exist_ok=True)
    os.chmod(log_dir, 0o700)
    notify_r, notify_w = os.pipe()
    err = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        pid = os.posix_spawn(exe, cap.argv(exe, log_dir, 3), ENV, setsid=True, file_actions=[
            (os.POSIX_SPAWN_DUP2, read_fd, 0),
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_DUP2, err, 2),
            (os.POSIX_SPAWN_DUP2, notify_w, 3)])
    finally:
        os.close(notify_w)
        os.close(err)
    try:
        ready = select.select([notify_r], [], [], READY_SECONDS)[0] and os.read(notify_r, 1) == b"\n"
    finally:
        os.close(notify_r)
    if not ready:
        _end_now(pid)
        raise DriverError(f"{BINARY} did not start on {log_dir}: {_tail(stderr_path)}")
    return LogProcess(pid, start_time(pid))


def find(process: LogProcess | None) -> int | None:
    """A pidfd on the log process, if it is still the one the handle names (pid and start time)."""
    if process is None:
        return None
    try:
        pidfd = os.pidfd_open(process.pid)
    except OSError:
        return None
    try:
        if start_time(process.pid) == process.start_time:
            return pidfd
    except (OSError, ValueError):
        pass
    os.close(pidfd)
    return None


async def ended(pidfd: int, seconds: float) -> bool:
    """Whether the process ends within `seconds` (a pidfd is readable once it has ended). Polled:
    this is waited for once per instance, at its end, and must not steal the loop's reader on the
    pidfd from another waiter."""
    deadline = time.monotonic() + seconds
    while not select.select([pidfd], [], [], 0)[0]:
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def drained(pipe_fd: int, seconds: float) -> bool:
    """Whether the pipe is empty (the log process has read all) within `seconds`."""
    deadline = time.monotonic() + seconds
    count = array.array("i", [0])
    while True:
        try:
            fcntl.ioctl(pipe_fd, termios.FIONREAD, count)
        except OSError:
            return False
        if count[0] == 0:
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.02)


def signal_it(pidfd: int, sig: int) -> None:
    with contextlib.suppress(OSError):
        signal.pidfd_send_signal(pidfd, sig)


def reap(pidfd: int) -> None:
    """Collect its status if it is this agent's child (not after an agent restart)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)


def _end_now(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip().splitlines()[-1]
    except (OSError, IndexError):
        return "no message"
