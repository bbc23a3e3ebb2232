"""Reading an instance's log across its rotation, for `ctl logs` (with --tail and -f).

A log is a file that its writer rotates by renaming it and starting a new one; the rotated files lie
beside it, and the oldest are deleted:
    - s6-log (containers, agent/drivers/container/logger.py): `DIR/current`, rotated `DIR/@<TAI64N>.s`
      (or `.u`), whose names sort oldest first;
    - virtlogd (VM consoles): `FILE`, rotated `FILE.0` (the newest) ... `FILE.N` (the oldest);
    - a plain file (a container started by an older agent): no rotated files; once such an
      instance is restarted by a newer agent, its log goes on in a directory beside that file, which
      is then the oldest file of the log.
A rename keeps the file's inode, so a reader that has reached the end of the file it reads finds where
to go on: the files after that inode in the order above; and if its file was deleted meanwhile (it
lagged behind by the whole cap), every file left is newer, so it goes on with the oldest.
"""
from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

CHUNK = 64 * 1024
S6_ROTATED = re.compile(r"@[0-9a-f]{24}\.[su]")


def segments(path: Path) -> list[Path]:
    """The files of the log whose current file is `path`, oldest first, `path` last."""
    try:
        names = os.listdir(path.parent)
    except OSError:
        return [path]
    if path.name == "current":
        rotated = sorted(n for n in names if S6_ROTATED.fullmatch(n))
        older = path.parent.with_name(path.parent.name + ".log")   # before an agent upgrade
        if older.exists():
            return [older, *(path.parent / n for n in rotated), path]
    else:
        numbered = re.compile(re.escape(path.name) + r"\.(\d+)")
        found = [(int(m.group(1)), n) for n in names if (m := numbered.fullmatch(n))]
        rotated = [n for _, n in sorted(found, reverse=True)]
    return [*(path.parent / n for n in rotated), path]


def stale(names: list[str], kept: list[Path]) -> list[str]:
    """Of the entries (`names`) of a logs directory, those that belong to none of the `kept` logs
    (their current files): not such a file, its rotated files, nor its log process's directory."""
    mine = set()
    for p in kept:
        if p.name == "current":
            mine |= {p.parent.name, p.parent.name + ".log"}     # and an older agent's single file
        else:
            mine.add(p.name)
    numbered = re.compile(r"(.*)\.\d+")
    return [n for n in names if n not in mine and not ((m := numbered.fullmatch(n)) and m.group(1) in mine)]


def remove(path: Path) -> None:
    """Remove a log: its current file and rotated files (with their directory, for s6-log's)."""
    for p in segments(path):
        p.unlink(missing_ok=True)
    if path.name == "current":
        shutil.rmtree(path.parent, ignore_errors=True)


def exists(path: Path) -> bool:
    return any(p.exists() for p in segments(path))


class Reader:
    """Reads one log's bytes in order across rotation: `read()` gives what is there now (b"" when
    nothing more is yet). Holds at most one file open."""

    def __init__(self, path: Path, tail_bytes: int = 0):
        self.path = path
        self._file = None
        self._ino: int | None = None
        files = [(p, s) for p in segments(path) if (s := _size(p)) is not None]
        skip = max(0, sum(s for _, s in files) - tail_bytes) if tail_bytes > 0 else 0
        for p, size in files:            # the first file that has what --tail asks for
            if skip < size and self._open(p):
                self._file.seek(skip)
                return
            skip -= size
        if files:                        # everything skipped: from the end of the newest
            self._open(files[-1][0]) and self._file.seek(0, os.SEEK_END)

    def read(self, size: int = CHUNK) -> bytes:
        while True:
            if self._file is None:
                if not self._advance():
                    return b""
                continue
            data = self._file.read(size)
            if data:
                return data
            if not self._rotated():
                return b""
            data = self._file.read(size)     # written before the rename, after our last read
            if data:
                return data
            if not self._advance():
                return b""

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _rotated(self) -> bool:
        """Whether the file read is no longer the current one."""
        try:
            return os.stat(self.path).st_ino != self._ino
        except OSError:
            return False          # between a rename and the new current: not yet

    def _advance(self) -> bool:
        """Go on with the file after the one read (see the module's doc)."""
        files = segments(self.path)
        inos = [_ino(p) for p in files]
        after = inos.index(self._ino) + 1 if self._ino in inos else 0
        for p in files[after:]:
            if self._open(p):
                return True
        return False

    def _open(self, p: Path) -> bool:
        try:
            f = open(p, "rb")
        except OSError:
            return False
        self.close()
        self._file, self._ino = f, os.fstat(f.fileno()).st_ino
        return True


async def stream(path: Path, tail_bytes: int = 0, follow: bool = False, active: Callable[[], bool] = lambda: False,
                 poll: float = 0.2) -> AsyncIterator[bytes]:
    """The log's bytes; with `follow`, waiting for more (every `poll` s) while `active()`."""
    reader = Reader(path, tail_bytes)
    try:
        while True:
            data = reader.read()
            if data:
                yield data
                continue
            if not follow or not active():
                # what was written before it ended, if the reader was at the end meanwhile
                while data := reader.read():
                    yield data
                return
            await asyncio.sleep(poll)
    finally:
        reader.close()


def _size(p: Path) -> int | None:
    try:
        return p.stat().st_size
    except OSError:
        return None


def _ino(p: Path) -> int | None:
    try:
        return p.stat().st_ino
    except OSError:
        return None
