"""agent/drivers/failures.py: a failed start is undone and reported as its own error; a cleanup
tries every step and reports what failed together."""
from __future__ import annotations

import asyncio

import pytest

from agent.drivers.base import DriverError
from agent.drivers.failures import Cleanup, driver_error, undone_on_failure


@pytest.mark.parametrize("error,expected", [
    (DriverError("as it was"), "as it was"),
    (OSError(28, "No space left on device"), "cannot start a: [Errno 28] No space left on device"),
    (KeyError("pid"), "cannot start a: 'pid'"),
], ids=["driver-error-kept", "os-error", "other"])
def test_driver_error(error, expected):
    assert str(driver_error("cannot start a", error)) == expected


def test_driver_error_describes_with_the_drivers_words():
    assert str(driver_error("x", ValueError("first\nsecond"), lambda e: str(e).splitlines()[0])) == "x: first"


async def test_a_failed_start_is_undone_and_its_error_reported():
    undone = []

    async def undo():
        undone.append(True)
        raise OSError("the cleanup failed too")      # not what the user is told

    with pytest.raises(DriverError, match=r"^cannot start a: boom$") as err:
        async with undone_on_failure(undo, "cannot start a"):
            raise RuntimeError("boom")
    assert undone == [True] and isinstance(err.value.__cause__, RuntimeError)


async def test_a_cancelled_start_is_undone_and_stays_cancelled():
    undone, entered = [], asyncio.Event()

    async def start():
        async with undone_on_failure(lambda: asyncio.sleep(0, undone.append(True)), "cannot start a"):
            entered.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(start())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert undone == [True]


async def test_a_start_that_works_is_left_alone():
    async def undo():
        raise AssertionError("undone")
    async with undone_on_failure(undo, "cannot start a"):
        pass


async def test_cleanup_tries_every_step_and_reports_them_together():
    cleanup, done = Cleanup("a"), []
    with cleanup.step(OSError):
        raise OSError("umount: busy")
    with cleanup.step(DriverError):
        await asyncio.sleep(0)
        done.append("second")
    with cleanup.step(DriverError, KeyError):
        raise KeyError("pid")
    with pytest.raises(ValueError), cleanup.step(OSError):   # not expected: not swallowed
        raise ValueError("a bug")
    assert done == ["second"]
    with pytest.raises(DriverError, match=r"^destroying a: umount: busy; 'pid'$"):
        cleanup.done()
    Cleanup("b").done()                                      # nothing failed: nothing raised
