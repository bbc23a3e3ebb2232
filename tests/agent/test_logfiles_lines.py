"""`ctl logs --tail` while the writer writes fast and rotates (agent/logfiles.py): a tail gives whole
lines only, none lost nor repeated across a rotation. A writer thread writes generated lines of
varied lengths in pieces (so the file often ends mid-line, as a log process's does between two writes)
and rotates at generated sizes the way s6-log (at a line's end) and virtlogd (anywhere) do; the test
takes tails of generated sizes meanwhile, through the agent's own stream()."""
from __future__ import annotations

import asyncio
import multiprocessing
import random
import re
import time
from pathlib import Path

import pytest

from agent import logfiles

TAI = "@4000000069{:014x}.s"
LINE = re.compile(rb"packyard-(\d+)-x*-(\d+)")


def line(i: int, rng: random.Random, longest: int) -> bytes:
    """Line i: its number at both ends, so a line cut anywhere is told from a whole one."""
    return b"packyard-%d-%s-%d\n" % (i, b"x" * rng.randrange(longest), i)


class Writer(multiprocessing.get_context("fork").Process):
    """Writes lines 0, 1, ... in 1-3 pieces each, rotating once the current file reaches `size`, until
    it has rotated `rotations` times. With `keep`, it deletes the oldest rotated files beyond that many,
    as s6-log and virtlogd do; else none (a follower that lags behind a whole cap loses lines by design,
    test_logfiles.py has that case; a tail does not). A process of its own, as a log process is (a
    thread would take turns with the reader on the GIL)."""

    def __init__(self, path: Path, kind: str, rng: random.Random, size: int, longest: int, rotations: int,
                 keep: int | None = None):
        super().__init__(daemon=True)
        self.path, self.kind, self.rng, self.size, self.longest = path, kind, rng, size, longest
        self.last = rotations
        self.rotations = 0
        self.keep = keep

    def run(self):
        f = open(self.path, "ab", buffering=0)
        i = 0
        while self.rotations < self.last:
            data = line(i, self.rng, self.longest)
            cuts = sorted(self.rng.sample(range(1, len(data)), self.rng.randrange(3)))
            for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True):
                f.write(data[a:b])
                # virtlogd rotates wherever its size check falls, s6-log at a line's end
                if f.tell() >= self.size and (self.kind == "virtlogd" or b == len(data)):
                    f.close()
                    self._rotate()
                    f = open(self.path, "ab", buffering=0)
                    time.sleep(self.rng.uniform(0, 0.003))   # rotations spread over the test's tails
            i += 1
        f.close()

    def _rotate(self):
        self.rotations += 1
        if self.kind == "s6":
            # as s6-log: current → previous → its @ name (new lines go on once current is made again)
            self.path.rename(self.path.parent / "previous")
            time.sleep(self.rng.uniform(0, 0.003))   # s6-log renames it again after a while
            (self.path.parent / "previous").rename(self.path.parent / TAI.format(self.rotations))
            if self.keep is not None and self.rotations > self.keep:
                (self.path.parent / TAI.format(self.rotations - self.keep)).unlink()
        else:
            if self.keep is not None and self.rotations > self.keep:
                Path(f"{self.path}.{self.keep - 1}").unlink()
            for i in range(min(self.rotations, self.keep or self.rotations) - 2, -1, -1):
                Path(f"{self.path}.{i}").rename(f"{self.path}.{i + 1}")
            self.path.rename(f"{self.path}.0")


def tail(path: Path, tail_bytes: int) -> bytes:
    async def collect():
        return b"".join([d async for d in logfiles.stream(path, tail_bytes, active=lambda: True)])
    return asyncio.run(collect())


def whole_consecutive_lines(out: bytes) -> list[int]:
    """The numbers of the lines of `out`; fails on a cut line, a gap or a repeat."""
    assert out == b"" or out.endswith(b"\n"), f"last line cut: {out[-40:]!r}"
    numbers = []
    for text in out.split(b"\n")[:-1]:
        m = LINE.fullmatch(text)
        assert m and m.group(1) == m.group(2), f"a cut line: {text[:40]!r}...{text[-40:]!r}"
        numbers.append(int(m.group(1)))
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))) if numbers else True, \
        f"lines lost or repeated: {numbers}"
    return numbers


@pytest.mark.parametrize("kind, seed, keep", [*((kind, seed, None) for kind in ("s6", "virtlogd") for seed in range(4)),
                                             *(("s6", seed, 1) for seed in range(4, 8))])
def test_a_tail_of_a_log_written_fast_is_whole_lines_none_lost_across_rotation(tmp_path, kind, seed, keep):
    """With `keep`, the writer deletes its oldest files too, as s6-log keeps its cap: a tail's files may
    all be gone before the reader has read them, and it must still give them, and nothing written
    after. (Not virtlogd's: it rotates mid-line, so once its oldest file is deleted the log itself
    begins with the rest of a line, and a tail longer than the log gives that.)"""
    rng = random.Random(f"{kind}{seed}")
    longest = rng.choice([8, 60, 400])
    size = rng.randrange(4 * longest + 64, 20 * longest + 2000)
    if kind == "s6":
        (tmp_path / "d").mkdir()
        path = tmp_path / "d" / "current"
    else:
        path = tmp_path / "vm.log"
    path.write_bytes(b"")
    writer = Writer(path, kind, random.Random(rng.random()), size, longest, rotations=rng.randrange(100, 300),
                    keep=keep)
    writer.start()
    try:
        seen = tails = 0
        while writer.is_alive():
            tails += 1
            tail_bytes = rng.randrange(1, 3 * size)
            out = tail(path, tail_bytes)
            assert len(out) <= tail_bytes, (len(out), tail_bytes)    # the log's end when asked, no more
            numbers = whole_consecutive_lines(out)
            seen += len(numbers)
    finally:
        writer.kill()
        writer.join(10)
    assert writer.exitcode == 0, writer.exitcode
    assert tails > 10 and seen > 0, (tails, seen)    # it did race the writer
