"""Reading a log across its rotation (agent/logfiles.py): the order of the files of s6-log and
virtlogd, --tail across files, following while the writer rotates, and which entries of a logs
directory belong to no kept log. Plain files, rotated here the way each writer does (rename)."""
from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from agent import logfiles
from agent.logfiles import Reader, segments, stale

TAI = "@4000000069{:014x}.s"


def s6_rotate(d: Path, n: int) -> None:
    """As s6-log: current renamed to @<TAI64N>.s (names in time order), a new current."""
    (d / "current").rename(d / TAI.format(n))
    (d / "current").write_bytes(b"")


def virtlogd_rotate(path: Path, backups: int) -> None:
    """As virtlogd: FILE.i → FILE.i+1 (the oldest dropped), FILE → FILE.0, a new FILE."""
    Path(f"{path}.{backups - 1}").unlink(missing_ok=True)
    for i in range(backups - 2, -1, -1):
        if Path(f"{path}.{i}").exists():
            Path(f"{path}.{i}").rename(f"{path}.{i + 1}")
    path.rename(f"{path}.0")
    path.write_bytes(b"")


def read_all(reader: Reader) -> bytes:
    out = b""
    while data := reader.read(7):
        out += data
    return out


def read_once(path: Path, tail_bytes: int = 0) -> bytes:
    reader = Reader(path, tail_bytes)
    try:
        return read_all(reader)
    finally:
        reader.close()


def test_s6_files_oldest_first_then_current(tmp_path):
    d = tmp_path / "c1"
    d.mkdir()
    for name in (TAI.format(20), TAI.format(3), "current", "lock", "state", "@x.s"):
        (d / name).write_bytes(b"")
    (d / "@400000006900000000000003.u").write_bytes(b"")
    assert [p.name for p in segments(d / "current")] == [         # a .u in time order too
        TAI.format(3), "@400000006900000000000003.u", TAI.format(20), "current"]
    (d / "previous").write_bytes(b"")      # s6-log rotating: the newest rotated file, not yet renamed
    assert [p.name for p in segments(d / "current")][-2:] == ["previous", "current"]


def test_virtlogd_files_highest_number_first(tmp_path):
    f = tmp_path / "vm.log"
    for name in ("vm.log", "vm.log.0", "vm.log.2", "vm.log.10", "vm.log.x", "vm.log.1"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in segments(f)] == ["vm.log.10", "vm.log.2", "vm.log.1", "vm.log.0", "vm.log"]


def test_reads_every_file_in_order_and_tail_spans_files(tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    (d / "current").write_bytes(b"one\n")
    s6_rotate(d, 1)
    (d / "current").write_bytes(b"two\n")
    s6_rotate(d, 2)
    (d / "current").write_bytes(b"three\n")
    assert read_once(d / "current") == b"one\ntwo\nthree\n"
    # whole lines: one begun before the last N bytes is left out
    assert read_once(d / "current", tail_bytes=8) == b"three\n"
    assert read_once(d / "current", tail_bytes=9) == b"three\n"
    assert read_once(d / "current", tail_bytes=10) == b"two\nthree\n"
    assert read_once(d / "current", tail_bytes=6) == b"three\n"
    assert read_once(d / "current", tail_bytes=5) == b""
    assert read_once(d / "current", tail_bytes=1000) == b"one\ntwo\nthree\n"


def test_an_older_agents_single_file_comes_first(tmp_path):
    (tmp_path / "c.log").write_bytes(b"before the upgrade\n")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "current").write_bytes(b"after\n")
    assert read_once(tmp_path / "c" / "current") == b"before the upgrade\nafter\n"
    assert stale(["c", "c.log", "d.log"], [tmp_path / "c" / "current"]) == ["d.log"]
    logfiles.remove(tmp_path / "c" / "current")
    assert os.listdir(tmp_path) == []


def test_a_plain_file_without_rotation(tmp_path):
    f = tmp_path / "old.log"
    f.write_bytes(b"a\nb\n")
    assert read_once(f, tail_bytes=2) == b"b\n"
    assert read_once(tmp_path / "missing.log") == b""


@pytest.mark.parametrize("writer", ["s6", "virtlogd"])
def test_a_reader_at_the_end_goes_on_across_rotations(tmp_path, writer):
    """Lines written before a rename, after the reader's last read, are read before the new file;
    so are whole files rotated twice while the reader waited."""
    if writer == "s6":
        (tmp_path / "d").mkdir()
        path = tmp_path / "d" / "current"
        path.write_bytes(b"")
        counter = iter(range(1, 100))

        def rotate():
            s6_rotate(path.parent, next(counter))
    else:
        path = tmp_path / "vm.log"
        path.write_bytes(b"")

        def rotate():
            virtlogd_rotate(path, backups=3)

    def write(text: bytes):
        with open(path, "ab") as f:
            f.write(text)

    write(b"1\n")
    reader = Reader(path)
    assert read_all(reader) == b"1\n"
    write(b"2\n")
    rotate()                       # "2" was written to the file now rotated, unread
    write(b"3\n")
    rotate()
    write(b"4\n")
    assert read_all(reader) == b"2\n3\n4\n"
    assert read_all(reader) == b""
    rotate()                       # nothing new: the new current is empty
    write(b"5\n")
    assert read_all(reader) == b"5\n"
    reader.close()


def test_a_reader_whose_file_was_deleted_goes_on_with_the_oldest_left(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "current").write_bytes(b"a\n")
    reader = Reader(d / "current")
    assert read_all(reader) == b"a\n"
    s6_rotate(d, 1)
    (d / "current").write_bytes(b"b\n")
    s6_rotate(d, 2)
    (d / "current").write_bytes(b"c\n")
    (d / TAI.format(1)).unlink()   # the reader's file, deleted as the oldest
    # the reader still holds it: whatever is left in it, then the files left, in order
    assert read_all(reader) == b"b\nc\n"
    reader.close()


@pytest.mark.parametrize("writer", ["s6", "virtlogd"])
async def test_a_tail_is_the_log_as_asked_even_once_the_writer_has_deleted_its_files(tmp_path, writer):
    """Without -f: the last N bytes of the log when asked, no more, none lost, even when the writer
    rotates through its whole cap while the reader is still in the first file of the tail (a `yes`
    on a loaded machine): the files after it, the last one too, are deleted before the reader gets
    to them, and the files written since are no part of the tail."""
    lines = [b"line-%02d\n" % i for i in range(100)]           # 8 bytes each
    if writer == "s6":
        (tmp_path / "d").mkdir()
        path = tmp_path / "d" / "current"
        counter = iter(range(1, 100))

        def rotate():
            s6_rotate(path.parent, next(counter))
            for p in segments(path)[:-3]:     # as s6-log keeps its cap: the oldest deleted
                p.unlink()
    else:
        path = tmp_path / "vm.log"

        def rotate():
            virtlogd_rotate(path, backups=2)

    def write(first: int, n: int):
        with open(path, "ab") as f:
            f.write(b"".join(lines[first:first + n]))

    path.write_bytes(b"")
    for first in (0, 4):
        write(first, 4)
        rotate()
    write(8, 3)
    with open(path, "ab") as f:
        f.write(b"line-1")                   # a last line still being written: left out
    assert [p.stat().st_size for p in segments(path)] == [32, 32, 30]
    # from the middle of line 2, in the first file: lines 3 to 10
    tail = logfiles.stream(path, tail_bytes=75, active=lambda: True)
    got = [await tail.__anext__()]
    assert got == [lines[3]]                 # the reader is at the end of the first file
    with open(path, "ab") as f:
        f.write(b"1\n")
    for first in range(11, 31, 4):           # the writer goes on through its whole cap, and again
        rotate()
        write(first, 4)
    now = b"".join(p.read_bytes() for p in segments(path))
    assert now.startswith(b"line-1") and b"line-10" not in now     # every file of the tail deleted
    got += [data async for data in tail]
    assert b"".join(got) == b"".join(lines[3:11])


async def test_stream_follows_until_the_instance_ends(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "current").write_bytes(b"x\n")
    active = True
    got = []

    async def follow():
        async for data in logfiles.stream(d / "current", follow=True, active=lambda: active, poll=0.01):
            got.append(data)

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.05)
    with open(d / "current", "ab") as f:
        f.write(b"y\n")
    s6_rotate(d, 1)
    (d / "current").write_bytes(b"z\n")
    active = False
    await asyncio.wait_for(task, 5)
    assert b"".join(got) == b"x\ny\nz\n"


@pytest.mark.parametrize("active", [True, False])
async def test_a_tail_leaves_out_a_last_line_still_being_written(tmp_path, active):
    """Without -f: a last line without newline is left out while the writer may still end it, given
    once the writer has ended (how its log ends)."""
    d = tmp_path / "d"
    d.mkdir()
    (d / "current").write_bytes(b"one\ntw")
    s6_rotate(d, 1)
    (d / "current").write_bytes(b"o\nthr")
    got = b"".join([data async for data in logfiles.stream(d / "current", active=lambda: active)])
    assert got == (b"one\ntwo\n" if active else b"one\ntwo\nthr")


def test_stale_entries_of_a_logs_directory(tmp_path):
    kept = [tmp_path / "web.g.0" / "current", tmp_path / "vm-1.log", tmp_path / "older.log"]
    names = ["web.g.0", "web.g.1", "vm-1.log", "vm-1.log.0", "vm-1.log.12", "vm-2.log", "vm-2.log.0",
             "older.log", "gone.log"]
    assert stale(names, kept) == ["web.g.1", "vm-2.log", "vm-2.log.0", "gone.log"]


def test_remove_takes_the_rotated_files(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    for name in ("current", TAI.format(1), "lock"):
        (d / name).write_bytes(b"")
    logfiles.remove(d / "current")
    assert not d.exists()
    for name in ("vm.log", "vm.log.0", "vm.log.1", "vm.logx"):
        (tmp_path / name).write_bytes(b"")
    logfiles.remove(tmp_path / "vm.log")
    assert sorted(os.listdir(tmp_path)) == ["vm.logx"]
