"""cancel_and_wait ends a task that lost a cancellation (Python 3.11's wait_for race, made here on
purpose: the task swallows the first CancelledError, as wait_for does when its call completes)."""
import asyncio

from packyard.tasks import cancel_and_wait


async def test_a_task_that_swallows_a_cancellation_is_ended_all_the_same():
    swallowed = []

    async def loop():
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed.append(True)   # carries on, as after a lost cancellation

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task, poll=0.05), 5)
    assert task.cancelled() and swallowed == [True]


async def test_an_ended_task_is_left_as_it_is():
    async def fails():
        raise ValueError("boom")

    task = asyncio.create_task(fails())
    await asyncio.wait({task})
    await cancel_and_wait(task)   # its exception retrieved, not raised
    assert isinstance(task.exception(), ValueError)
