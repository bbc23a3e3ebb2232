"""Restarts in place (issue 13): the pure decision (agent/restarts.py), then the InstanceManager
applying it over a FakeDriver — growing delays, giving up, mode delay, batch completion, a stop
during the wait, and an agent restarted in the middle of a wait."""
from __future__ import annotations

import asyncio
import dataclasses

from agent.drivers.base import ExitResult, InstanceSpec
from agent.restarts import after_exit
from packyard.policies import RestartPolicy
from tests.agent.test_manager import MemoryEtcd, spec, state_is, world  # noqa: F401  (fixture)
from tests.conftest import eventually


def policy_spec(instance_id="a", job_type="service", **policy) -> InstanceSpec:
    p = RestartPolicy(**{"attempts": 3, "interval": 60.0, "delay": 1.0, "mode": "fail", **policy})
    return dataclasses.replace(spec(instance_id), job_type=job_type, restart=p)


EXIT1 = ExitResult(exit_code=1, reason="exit status 1")
EXIT0 = ExitResult(exit_code=0, reason="exit status 0")


def test_restarts_grow_then_stop_within_the_interval():
    s = policy_spec()
    history: list[float] = []
    delays = []
    for now in (100.0, 102.0, 106.0):
        after = after_exit(s, EXIT1, False, history, now)
        delays.append(after.restart_in)
        history.append(now + after.restart_in)
    assert delays == [1.0, 2.0, 4.0]
    assert after.message == "exited with code 1; restarting in 4s (attempt 3 of 3)"
    last = after_exit(s, EXIT1, False, history, 111.0)
    assert (last.state, last.restart_in) == ("failed", None)
    assert (last.reason, last.message) == ("exit status 1", "exited with code 1; not restarted: 3 restarts in 1m already")
    # once the interval has passed the count starts again
    assert after_exit(s, EXIT1, False, history, 200.0).attempt == 1


def test_mode_delay_waits_for_the_interval_instead_of_failing():
    s = policy_spec(attempts=2, interval=60.0, mode="delay")
    after = after_exit(s, EXIT1, False, [100.0, 110.0], 120.0)
    assert after.state == "starting" and after.restart_in == 40.0 and "once the interval has passed" in after.message


def test_a_service_is_restarted_even_after_exit_0_and_a_batch_job_completes():
    assert after_exit(policy_spec(), EXIT0, False, [], 0).state == "starting"
    done = after_exit(policy_spec(job_type="batch"), EXIT0, False, [], 0)
    assert (done.state, done.restart_in) == ("complete", None)
    assert after_exit(policy_spec(job_type="batch"), EXIT1, False, [], 0).state == "starting"


def test_a_service_whose_restarts_are_exhausted_fails_even_after_exit_0():
    """So the scheduler reschedules it (it only reschedules `failed`); attempts 0 tried nothing."""
    for job_type in ("service", "system"):
        ended = after_exit(policy_spec(job_type=job_type, attempts=2), EXIT0, False, [100.0, 110.0], 120.0)
        assert (ended.state, ended.reason, ended.restart_in) == ("failed", "exit status 0", None)
        assert ended.message == "exited with code 0; not restarted: 2 restarts in 1m already"
        assert after_exit(policy_spec(job_type=job_type, attempts=0), EXIT0, False, [], 0).state == "exited"
        # restarts older than the interval do not count: restarted again
        assert after_exit(policy_spec(job_type=job_type, attempts=2), EXIT0, False, [0.0, 10.0], 120.0).state == \
            "starting"


def test_without_a_policy_or_when_stopping_an_end_is_as_before():
    ended = after_exit(spec("a"), EXIT1, False, [], 0)
    assert (ended.state, ended.reason, ended.restart_in) == ("failed", "exit status 1", None)
    oom = after_exit(spec("a"), ExitResult(137, oom_killed=True), False, [], 0)
    assert (oom.state, oom.reason) == ("failed", "OOMKilled")
    assert after_exit(policy_spec(), EXIT1, True, [], 0).state == "stopped"
    assert after_exit(policy_spec(attempts=0), EXIT1, False, [], 0).state == "failed"


# -- the manager applying it ------------------------------------------------------------------------

async def test_a_crashing_instance_is_restarted_in_place_then_fails(world):  # noqa: F811
    etcd, driver, store, manager = world
    m = manager()
    await m.start([policy_spec(attempts=2, delay=0.05)])
    await state_is(etcd, "a", "running")
    for attempt in (1, 2):
        driver.exit("a", 1)
        waiting = await state_is(etcd, "a", "starting")
        assert f"attempt {attempt} of 2" in waiting.reason and waiting.exit_code == 1
        running = await state_is(etcd, "a", "running")
        assert running.restarts == attempt
    assert driver.started == ["a", "a", "a"]
    driver.exit("a", 1)
    failed = await state_is(etcd, "a", "failed")
    assert failed.restarts == 2 and failed.reason == "exit status 1"
    assert [e["message"] for e in failed.events][-1].startswith("exited with code 1; not restarted")
    assert len(failed.events) == 3 and not m.is_active("a") and list(store.saved()) == []


async def crashed_and_waiting(world, delay: float):  # noqa: F811
    """A manager whose instance "a" ran, exited 1 and now waits `delay` to be restarted."""
    etcd, driver, _, manager = world
    m = manager()
    await m.start([policy_spec(delay=delay)])
    await state_is(etcd, "a", "running")
    driver.exit("a", 1)
    await state_is(etcd, "a", "starting")
    return m


async def test_a_stop_during_the_wait_ends_it_without_a_start(world):  # noqa: F811
    etcd, driver, store, manager = world
    m = await crashed_and_waiting(world, delay=30.0)
    await m.stop(["a"], grace=1)
    await state_is(etcd, "a", "stopped")
    assert driver.started == ["a"] and not m.is_active("a")


async def test_a_stop_before_the_wait_begins_ends_it_too(world):  # noqa: F811
    """The stop lands while the `starting` report that precedes the wait is being written: the
    wait (30 s) must not begin at all."""
    etcd, driver, store, manager = world
    armed, gate, writing = asyncio.Event(), asyncio.Event(), asyncio.Event()
    put_many = etcd.put_many

    async def held(items) -> None:     # once armed, the `starting` write waits for the gate
        items = list(items)
        if armed.is_set() and any(b'"state":"starting"' in v for _, v in items):
            writing.set()
            await gate.wait()
        await put_many(items)
    etcd.put_many = held
    m = manager()
    await m.start([policy_spec(delay=30.0)])
    await state_is(etcd, "a", "running")
    armed.set()
    driver.exit("a", 1)
    await asyncio.wait_for(writing.wait(), 2)
    await m.stop(["a"], grace=1)
    gate.set()
    await state_is(etcd, "a", "stopped")
    assert driver.started == ["a"] and not m.is_active("a")


async def test_batch_completes(world):  # noqa: F811
    etcd, driver, store, manager = world
    m = manager()
    await m.start([policy_spec(job_type="batch")])
    await state_is(etcd, "a", "running")
    driver.exit("a", 0)
    done = await state_is(etcd, "a", "complete")
    assert done.exit_code == 0 and driver.started == ["a"]


async def test_an_agent_restarted_during_the_wait_goes_on_with_it(world):  # noqa: F811
    etcd, driver, store, manager = world
    first = await crashed_and_waiting(world, delay=0.3)
    await first.shutdown()                     # the agent exits in the middle of the wait
    second = manager()
    assert await second.recover() == (["a"], [])
    running = await state_is(etcd, "a", "running")
    assert running.restarts == 1 and driver.started == ["a", "a"]     # started once more, not twice


async def test_an_instance_that_died_while_the_agent_was_down_is_restarted(world):  # noqa: F811
    etcd, driver, store, manager = world
    first = manager()
    await first.start([policy_spec(delay=0.05)])
    await state_is(etcd, "a", "running")
    await first.shutdown()
    await driver.destroy(next(h for _, h in store.saved()))   # it died meanwhile
    second = manager()
    assert await second.recover() == (["a"], [])
    await eventually(lambda: driver.started == ["a", "a"], timeout=2, what="restarted")
    running = await state_is(etcd, "a", "running")
    assert running.restarts == 1 and "ended while the agent was down" in running.events[0]["message"]


async def test_restarts_are_counted_per_instance_for_prometheus(world):  # noqa: F811
    from agent.usage import UsageCollector
    etcd, driver, store, manager = world
    m = manager()
    await m.start([policy_spec(delay=0.01)])
    await state_is(etcd, "a", "running")
    driver.exit("a", 1)
    await eventually(lambda: (s := etcd.state("a")) is not None and s.state == "running" and s.restarts == 1,
                     timeout=2, what="restarted")
    (family,) = [f for f in UsageCollector(etcd, "n1", m).collect() if f.name == "packyard_instance_restarts"]
    assert [(s.name, s.labels["packyard_instance"], s.value) for s in family.samples] == [
        ("packyard_instance_restarts_total", "a", 1)]


# -- a start that fails for a reason that may pass (a pull, issue 16) ---------------------------------

PULL = "cannot pull r.example:5000/app:1: manifest unknown"


async def test_a_failed_pull_is_restarted_as_the_policy_says_then_runs(world):  # noqa: F811
    etcd, driver, store, manager = world
    driver.refuse("a", PULL, times=2, restartable=True)
    m = manager()
    await m.start([policy_spec(attempts=3, delay=0.05)])
    running = await state_is(etcd, "a", "running")
    assert running.restarts == 2 and driver.started == ["a"]     # the third start ran
    assert [e["message"] for e in running.events] == [
        f"{PULL}; restarting in 50ms (attempt 1 of 3)", f"{PULL}; restarting in 100ms (attempt 2 of 3)"]
    assert ["starting" in w.get("a", "") for w in etcd.writes].count(True) >= 3   # each wait said so


async def test_a_pull_failing_past_the_attempts_fails_with_the_registrys_reason(world):  # noqa: F811
    etcd, driver, store, manager = world
    driver.refuse("a", PULL, times=10, restartable=True)
    m = manager()
    await m.start([policy_spec(attempts=2, delay=0.05)])
    failed = await state_is(etcd, "a", "failed")
    assert failed.reason == PULL and failed.restarts == 2
    assert failed.events[-1]["message"].startswith(f"{PULL}; not restarted: 2 restarts in")
    assert driver.started == [] and not m.is_active("a") and list(store.saved()) == []
    assert len(driver._refused["a"]) == 10 - 3      # three starts, no more


async def test_a_stop_while_a_failed_pull_waits_ends_it_stopped(world):  # noqa: F811
    etcd, driver, store, manager = world
    driver.refuse("a", PULL, times=10, restartable=True)
    m = manager()
    await m.start([policy_spec(delay=30.0)])
    waiting = await eventually(lambda: (s := etcd.state("a")) is not None and "restarting in" in s.reason and s,
                               timeout=2, what="waiting to pull again")
    assert waiting.state == "starting"
    await m.stop(["a"], grace=1)
    await state_is(etcd, "a", "stopped")
    assert not m.is_active("a")


async def test_a_start_refused_for_good_is_not_restarted(world):  # noqa: F811
    etcd, driver, store, manager = world
    driver.refuse("a", "no such image", times=5)
    m = manager()
    await m.start([policy_spec(attempts=3, delay=0.05)])
    failed = await state_is(etcd, "a", "failed")
    assert failed.reason == "no such image" and failed.restarts == 0 and len(driver._refused["a"]) == 4


async def exits_mid_start(m) -> None:
    """The agent process `m` ends (its tasks with it), as a killed agent would."""
    await m.shutdown()
    for t in m.instances.values():
        if t.task:          # one a start made after shutdown() (shutdown() drops those it cancelled)
            t.task.cancel()
    await asyncio.sleep(0)


async def test_an_agent_restarted_in_the_middle_of_a_start_starts_it_again(world):  # noqa: F811
    etcd, driver, store, manager = world
    driver.start_delay = 0.5                   # a pull under way
    first = manager()
    await first.start([policy_spec()])
    await asyncio.sleep(0.05)
    await exits_mid_start(first)
    assert driver.started == []
    driver.start_delay = 0.0
    second = manager()
    assert await second.recover() == (["a"], [])
    running = await state_is(etcd, "a", "running")
    assert driver.started == ["a"] and running.restarts == 0
    assert driver.discarded == ["a"]     # what the cut-off start may have left was removed first
    assert [h.data.get("unstarted") for _, h in store.saved()] == [None]   # its real handle now


async def test_an_agent_restarted_while_a_failed_pull_waits_goes_on_with_the_wait(world):  # noqa: F811
    etcd, driver, store, manager = world
    driver.refuse("a", PULL, times=1, restartable=True)
    first = manager()
    await first.start([policy_spec(delay=0.3)])
    await eventually(lambda: (s := etcd.state("a")) is not None and "restarting in" in s.reason,
                     timeout=2, what="waiting to pull again")
    await exits_mid_start(first)
    second = manager()
    assert await second.recover() == (["a"], [])
    running = await state_is(etcd, "a", "running")
    assert running.restarts == 1 and driver.started == ["a"]       # the wait counted, one start
    assert running.events[0]["message"] == f"{PULL}; restarting in 300ms (attempt 1 of 3)"


async def test_a_start_refused_after_an_agent_restart_leaves_nothing_kept(world):  # noqa: F811
    etcd, driver, store, manager = world
    driver.start_delay = 0.5
    first = manager()
    await first.start([policy_spec()])
    await asyncio.sleep(0.05)
    await exits_mid_start(first)
    driver.start_delay = 0.0
    driver.refuse("a", "no such image")
    second = manager()
    await second.recover()
    assert (await state_is(etcd, "a", "failed")).reason == "no such image"
    assert list(store.saved()) == [] and not second.is_active("a")
