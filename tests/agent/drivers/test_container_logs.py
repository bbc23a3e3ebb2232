"""A container's log under its cap, on real runc and a real s6-log (agent/drivers/container/logger.py):
a `yes` stays under max_size × max_files, lines across a rotation read back in order, a last line
without newline kept, the log process found again after an agent restart and ended by destroy."""
from __future__ import annotations

import asyncio
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent import logfiles
from agent.drivers.base import Handle
from agent.drivers.container import ContainerDriver
from agent.drivers.container import logger as logger_mod
from agent.drivers.container.logger import LogCap, LogCapError
from tests.agent.conftest import RUNC, needs_root, needs_runc
from tests.agent.drivers.test_container import Harness, alive, leftovers, until

KI = 1024
CAP = LogCap(max_size=64 * KI, max_files=3)


@pytest.fixture
async def capped(node, state_dir, subnet):
    h = Harness(node, state_dir, subnet, log_cap=CAP)
    yield h
    assert await h.close() == []


def read(path) -> bytes:
    reader = logfiles.Reader(path)
    try:
        out = b""
        while data := reader.read():
            out += data
        return out
    finally:
        reader.close()


def log_files(current) -> dict[str, int]:
    """The log's files and sizes now (one deleted by s6-log while listed is left out)."""
    found = {}
    for p in logfiles.segments(current):
        try:
            found[p.name] = p.stat().st_size
        except FileNotFoundError:
            pass
    return found


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


# -- the cap's arithmetic -----------------------------------------------------------------------

def test_the_cap_gives_s6_log_a_tolerance_no_write_can_overrun():
    assert LogCap().script(Path("/l")) == [
        "n4", f"s{10 * KI * KI}", f"l{logger_mod.WRITE_MAX}", "/l"]     # kubelet's 10 MiB × 5
    assert logger_mod.WRITE_MAX * 2 <= logger_mod.MIN_SIZE              # s6-log: l at most s/2


@pytest.mark.parametrize("size, files, field", [(4 * KI, 5, "between"), (2**31, 5, "between"),
                                                 (64 * KI, 1, "at least 2")])
def test_a_cap_it_cannot_enforce_is_refused(size, files, field):
    with pytest.raises(LogCapError, match=field):
        LogCap(max_size=size, max_files=files)


# -- real containers ------------------------------------------------------------------------------

@pytest.mark.integration
@needs_root()
@needs_runc()
async def test_a_yes_container_stays_under_its_cap(capped):
    d = capped.driver
    h = await capped.start("t.g.0-yes", ["yes", "packyard"])
    current = d.log_path(h)
    await until(lambda: len(log_files(current)) == CAP.max_files, timeout=10)
    sizes = []
    for _ in range(30):                   # 3 s of a container writing as fast as it can
        await asyncio.sleep(0.1)
        sizes.append(log_files(current))
    logger_pid = h.data["logger"]["pid"]
    print(f"log process (s6-log) RSS while `yes` writes: {rss_kib(logger_pid)} KiB")
    for seen in sizes:
        # (during a rotation, before the oldest is deleted, the new current beside them is empty)
        assert len([n for n, size in seen.items() if size]) <= CAP.max_files, seen
        assert max(seen.values()) <= CAP.max_size, seen
        assert sum(seen.values()) <= CAP.max_size * CAP.max_files, seen
    # it did write, and rotated (any one sample may fall in the instant s6-log prunes old files)
    assert max(sum(seen.values()) for seen in sizes) > CAP.max_size
    tail = read(current)[-4096:].decode()
    assert set(tail.splitlines()[1:]) == {"packyard"}       # whole lines, nothing but yes's
    await d.stop(h, grace_seconds=0.2)
    await d.wait(h)
    await d.destroy(h)
    assert not alive(logger_pid) and leftovers(d, h) == []


@pytest.mark.integration
@needs_root()
@needs_runc()
async def test_tails_of_a_yes_container_are_whole_lines(capped):
    """`ctl logs --tail N` as the agent serves it (logfiles.stream, no -f) while s6-log writes and
    rotates as fast as a `yes` makes it: whole lines only, never one cut at either end."""
    d = capped.driver
    word = "packyard-logs-line"
    h = await capped.start("t.g.0-tail", ["sh", "-c", f"trap 'exit 0' TERM; yes {word} & wait"])
    current = d.log_path(h)
    await until(lambda: len(log_files(current)) >= 2, timeout=10)
    rng = random.Random(current.name)
    for _ in range(200):
        tail_bytes = rng.randrange(1, 2 * CAP.max_size)
        out = b"".join([data async for data in logfiles.stream(current, tail_bytes, active=lambda: True)])
        assert len(out) <= tail_bytes and out.endswith(b"\n"), (tail_bytes, out[-40:])
        assert set(out.decode().splitlines()) == {word}, (tail_bytes, out[:40], out[-40:])
    await d.stop(h, grace_seconds=0.2)
    await d.wait(h)
    await d.destroy(h)


@pytest.mark.integration
@needs_root()
@needs_runc()
async def test_lines_before_and_after_a_rotation_read_back_in_order(capped):
    d = capped.driver
    # ~65 KB of numbered lines: more than one file (rotated at 64 KiB less the tolerance), less than three
    h = await capped.start("t.g.0-seq", ["sh", "-c", "i=1; while [ $i -le 12000 ]; do echo $i; i=$((i+1)); done; "
                                         "printf 'the end, no newline'"])
    await asyncio.wait_for(d.wait(h), 30)
    current = d.log_path(h)
    files = log_files(current)
    assert len(files) >= 2, files                           # rotated at least once
    expected = "".join(f"{i}\n" for i in range(1, 12001)) + "the end, no newline\n"
    assert read(current).decode() == expected               # in order, and the last line kept
    await d.destroy(h)
    assert read(current).decode() == expected               # kept after destroy...
    d.remove_logs(h)
    assert not current.parent.exists()                      # ...until removed, rotated files too


@pytest.mark.integration
@needs_root()
@needs_runc()
async def test_the_log_process_outlives_an_agent_restart_and_ends_with_destroy(capped):
    first = capped.driver
    h = await capped.start("t.g.0-keep", ["sh", "-c", "echo before; while sleep 0.05; do echo after; done"])
    current = first.log_path(h)
    await until(lambda: b"before\n" in read(current))
    logger = dict(h.data["logger"])
    assert os.getsid(logger["pid"]) == logger["pid"]        # a session of its own
    first.close()                                            # the agent goes away
    second = capped.driver = ContainerDriver(capped.node, capped.state_dir, capped.subnet, runc=RUNC,
                                             log_cap=CAP)
    handle = Handle(**json.loads(json.dumps(h.__dict__)))    # as persisted by the agent
    assert await second.recover(handle)
    assert await second.recover(handle)                      # twice: still one log process
    assert handle.data["logger"] == logger and alive(logger["pid"])
    assert len([p for p in os.listdir("/proc") if p.isdigit() and _is_logger_of(int(p), current.parent)]) == 1
    size = current.stat().st_size
    await until(lambda: current.stat().st_size > size)       # still writing to the same file
    await second.stop(handle, grace_seconds=0.2)
    await second.wait(handle)
    await second.destroy(handle)
    assert not alive(logger["pid"])                          # destroy ended it, after the container
    assert read(current).startswith(b"before\nafter\n")


def _is_logger_of(pid: int, log_dir) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return bool(argv) and argv[0].endswith(b"s6-log") and str(log_dir).encode() in argv


@pytest.mark.integration
@needs_root()
@needs_runc()
async def test_following_reads_every_line_across_rotations_while_it_writes(capped):
    """`ctl logs -f` as the agent serves it (logfiles.stream), from the first line while s6-log
    rotates under it: every line once, in order, up to the last."""
    d = capped.driver
    h = await capped.start("t.g.0-follow", ["sh", "-c", "sleep 0.3; i=1; while [ $i -le 12000 ]; do "
                                            "echo $i; i=$((i+1)); done"])
    ended = asyncio.ensure_future(d.wait(h))
    got = b""
    async for data in logfiles.stream(d.log_path(h), follow=True, active=lambda: not ended.done(), poll=0.02):
        got += data
    await ended
    assert len(log_files(d.log_path(h))) >= 2                # it did rotate
    assert got.decode() == "".join(f"{i}\n" for i in range(1, 12001))


@pytest.mark.parametrize("flags, message", [
    (["--log-max-size", "1Ki"], "--log-max-size: must be between 49152 (48Ki)"),
    (["--log-max-size", "lots"], "--log-max-size: 'lots' is not a size"),
    (["--log-max-files", "1"], "--log-max-files: must be at least 2"),
])
def test_the_agent_refuses_a_log_cap_it_cannot_enforce(tmp_path, flags, message):
    r = subprocess.run([sys.executable, "-m", "agent.main", "--etcd", "http://127.0.0.1:1", "--node", "x",
                        "--state-dir", str(tmp_path), *flags], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert message in r.stderr


@pytest.mark.integration
@needs_root()
@needs_runc()
async def test_a_restart_in_place_goes_on_in_the_same_log(capped):
    """As the agent restarts an instance: wait, destroy, start the same id again. The first run's
    log process has ended (its lock released), the second appends to the same log."""
    d = capped.driver
    for n in (1, 2):
        h = await capped.start("t.g.0-again", ["sh", "-c", f"echo run {n}; printf 'partial {n}'"])
        await asyncio.wait_for(d.wait(h), 10)
        await d.destroy(h)
        assert leftovers(d, h) == []
    assert read(d.log_path(h)) == b"run 1\npartial 1\nrun 2\npartial 2\n"
