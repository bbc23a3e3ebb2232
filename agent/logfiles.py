"""Reading an instance's log across its rotation, for `ctl logs` (with --tail and -f).

A log is a file that its writer rotates by renaming it and starting a new one; the rotated files lie
beside it, and the oldest are deleted:
    - s6-log (containers, agent/drivers/container/logger.py): `DIR/current`, rotated `DIR/@<TAI64N>.s`
      (or `.u`), whose names sort oldest first, through `DIR/previous` (the newest of them, briefly);
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
from typing import BinaryIO

CHUNK = 64 * 1024
START_ATTEMPTS = 100     # listings of the files for a tail, each undone by a rotation: then from the oldest (-f), or nothing
S6_ROTATED = re.compile(r"@[0-9a-f]{24}\.[su]")


def segments(path: Path) -> list[Path]:
    """The files of the log whose current file is `path`, oldest first, `path` last."""
    try:
        names = os.listdir(path.parent)
    except OSError:
        return [path]
    if path.name == "current":
        # s6-log rotates current to `previous`, then to its @ name: in between, the file is `previous`
        # (a listing without it would miss it: a tail too long, a follower repeating)
        rotated = sorted(n for n in names if S6_ROTATED.fullmatch(n)) + [n for n in names if n == "previous"]
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
    nothing more is yet). Holds at most one file open (a snapshot: the few files of its span)."""

    def __init__(self, path: Path, tail_bytes: int = 0, snapshot: bool = False):
        """`snapshot`: up to the end the log had here, not what is written after (a `yes` writes faster
        than a reader could catch up with)."""
        self.path = path
        self._file = None
        self._ino: int | None = None
        self._cut = False        # the bytes up to the first newline end a line begun before the tail
        self._snapshot = snapshot
        # with snapshot: the files of the span, opened, oldest first, each with the offset it ends at
        self._span: list[tuple[BinaryIO, int]] = []
        for _ in range(START_ATTEMPTS):
            if self._open_span(tail_bytes) if snapshot else self._start(tail_bytes):
                return
        # (a snapshot still unopened after so many rotations gives nothing rather than more than asked)

    def _plan(self, files: list[tuple[Path, os.stat_result]],
              tail_bytes: int) -> list[tuple[Path, os.stat_result, int]]:
        """The files (as listed) a tail of `tail_bytes` (0: all) takes, oldest first, each with the offset
        to begin at: from one byte before the tail, to tell whether it begins a line (and drop it if
        not; sets `_cut`)."""
        total = sum(st.st_size for _, st in files)
        self._cut = 0 < tail_bytes < total
        skip = total - tail_bytes - 1 if self._cut else 0
        for i, (_, st) in enumerate(files):     # the first file that has what --tail asks for
            if skip < st.st_size:
                return [(files[i][0], files[i][1], skip), *((p, st, 0) for p, st in files[i + 1:])]
            skip -= st.st_size
        # nothing asked for: the end of the newest
        return [(files[-1][0], files[-1][1], files[-1][1].st_size)] if files else []

    def _open_span(self, tail_bytes: int) -> bool:
        """For a snapshot: open every file of the log, then list them; if the listing has the same
        files (names and inodes) as were opened, no rotation came between, and the tail is taken from
        the files held, each up to its size as listed. False when one came, to do it again.
        Not one file after the other, as a follower reads, finding the next after the end of each by
        its inode in a new listing: s6-log rotates a `yes`'s log through its whole cap in less time
        than a loaded machine takes to read one file, so the files after the one read (the last one
        too), or the one read itself, were deleted meanwhile; the reader went on from the oldest file
        left, newer than where the tail was to end, and on to the end of `current` (three times the
        tail asked for). Nor by listing first and opening after: a file deleted in between frees its
        inode number, which a new file of the log may be given (ext4 does), and opened by the name
        listed (`current`) it looked like the file listed. An open file keeps its bytes and its inode
        number, whatever the writer renames or deletes after: the listing made after the files were
        opened can be taken at its word."""
        held: dict[int, BinaryIO] = {}
        opened: list[tuple[Path, int]] = []
        try:
            for p in segments(self.path):
                try:
                    f = open(p, "rb")
                except OSError:
                    continue                  # renamed or deleted since listed: the listing will differ
                ino = os.fstat(f.fileno()).st_ino
                if ino in held:               # a file under two names (see _once): counted once
                    f.close()
                    continue
                held[ino] = f
                opened.append((p, ino))
            files = _once(self.path)
            if opened != [(p, st.st_ino) for p, st in files]:
                return False
            for _, st, begin in self._plan(files, tail_bytes):
                f = held.pop(st.st_ino)
                f.seek(begin)
                self._span.append((f, st.st_size))
            return True
        finally:
            for f in held.values():
                f.close()

    def _start(self, tail_bytes: int) -> bool:
        """Open the file where the tail begins, as the files were listed: False when one was renamed
        (a rotation) or deleted between the listing and the open, to list them again."""
        if not (plan := self._plan(_listing(self.path), tail_bytes)):
            return True
        p, st, begin = plan[0]
        return self._open(p, st.st_ino) and self._file.seek(begin) >= 0

    def read(self, size: int = CHUNK) -> bytes:
        while True:
            data = self._read(size)
            if not self._cut or not data:
                return data
            end = data.find(b"\n")       # the line begun before the tail: left out
            if end >= 0:
                self._cut = False
                if data[end + 1:]:
                    return data[end + 1:]

    def _read(self, size: int) -> bytes:
        while self._snapshot:
            if not self._span:
                return b""
            f, end = self._span[0]
            if data := f.read(max(0, min(size, end - f.tell()))):
                return data
            f.close()
            self._span.pop(0)
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
        for f, _ in self._span:
            f.close()
        self._span = []
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
        for _ in range(START_ATTEMPTS):
            files = _listing(self.path)
            inos = [st.st_ino for _, st in files]
            after = inos.index(self._ino) + 1 if self._ino in inos else 0
            if after == len(files):
                return False
            p, st = files[after]
            if self._open(p, st.st_ino):      # else renamed or deleted since: list them again
                return True
        return False

    def _open(self, p: Path, ino: int | None = None) -> bool:
        """Open `p` (if given, only if it is still the file of inode `ino`)."""
        try:
            f = open(p, "rb")
        except OSError:
            return False
        if ino is not None and os.fstat(f.fileno()).st_ino != ino:
            f.close()
            return False
        self.close()
        self._file, self._ino = f, os.fstat(f.fileno()).st_ino
        return True


async def stream(path: Path, tail_bytes: int = 0, follow: bool = False, active: Callable[[], bool] = lambda: False,
                 poll: float = 0.2) -> AsyncIterator[bytes]:
    """The log's bytes; with `follow`, waiting for more (every `poll` s) while `active()`. Without
    `follow`, whole lines (as `kubectl logs`): a last line the writer is still writing is left out;
    once the writer has ended, a last line without newline is how the log ends, and is given."""
    reader = Reader(path, tail_bytes, snapshot=not follow)
    held: list[bytes] = []    # without follow: what came after the last newline read
    try:
        while True:
            if data := reader.read():
                if not follow:
                    data, held = _whole_lines(held, data)
                if data:
                    yield data
                continue
            if not follow:
                if held and not active():
                    yield b"".join(held)
                return
            if not active():
                # what was written before it ended, if the reader was at the end meanwhile
                while data := reader.read():
                    yield data
                return
            await asyncio.sleep(poll)
    finally:
        reader.close()


def _whole_lines(held: list[bytes], data: bytes) -> tuple[bytes, list[bytes]]:
    """The lines that `data` ends (after what was `held`), and what is held after them."""
    end = data.rfind(b"\n") + 1
    if end == 0:
        return b"", [*held, data]
    return b"".join([*held, data[:end]]), [data[end:]] if end < len(data) else []


def _listing(path: Path) -> list[tuple[Path, os.stat_result]]:
    """segments(path) with each file's stat, as they were at one moment: a listing is the directory's
    names then each one's stat, and a rotation between the two would give a name the inode of the
    file after it (`current` the new one's: the one renamed missed); so it is listed until twice the
    same (a rotation in between changes the second)."""
    files = None
    for _ in range(START_ATTEMPTS):
        again = _once(path)
        if files is not None and [(p, st.st_ino) for p, st in files] == [(p, st.st_ino) for p, st in again]:
            return again
        files = again
    return files


def _once(path: Path) -> list[tuple[Path, os.stat_result]]:
    """segments(path) with each file's stat, each file once: a file under two names (s6-log links
    `previous` to its @ name, then unlinks it) would be counted twice, and read again after itself."""
    files, seen = [], set()
    for p in segments(path):
        if (st := _stat(p)) is not None and st.st_ino not in seen:
            seen.add(st.st_ino)
            files.append((p, st))
    return files


def _stat(p: Path) -> os.stat_result | None:
    try:
        return p.stat()
    except OSError:
        return None
