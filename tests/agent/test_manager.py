"""InstanceManager through its seams: a FakeDriver, a MemoryHandleStore and a Reporter over an
in-memory stand-in for etcd. No process, no etcd: what the manager does with states and handles."""
from __future__ import annotations

import asyncio
import gc

import pytest

from agent.drivers.base import InstanceSpec
from agent.drivers.fake import FakeDriver
from agent.handles import MemoryHandleStore, NoHandleStore
from agent.manager import InstanceManager
from agent.reporter import Reporter
from packyard import keys, records
from packyard.etcd import KV
from packyard.records import StateRecord
from tests.conftest import eventually

NODE = "n1"


class MemoryEtcd:
    """What a Reporter asks of Etcd, in a dict; each put_many call is kept (one write each)."""

    def __init__(self) -> None:
        self.kv: dict[str, bytes] = {}
        self.writes: list[dict[str, str]] = []      # each write: key's instance id -> state

    async def put_many(self, items) -> None:
        items = dict(items)
        self.kv.update(items)
        self.writes.append({keys.last(k): records.loads(StateRecord, v).state for k, v in items.items()})

    async def get_prefix(self, prefix: str) -> tuple[int, list[KV]]:
        return 0, [KV(k, v, 0) for k, v in sorted(self.kv.items()) if k.startswith(prefix)]

    def state(self, instance_id: str) -> StateRecord | None:
        raw = self.kv.get(keys.state(NODE, instance_id))
        return records.loads(StateRecord, raw) if raw is not None else None


def spec(instance_id: str, kind: str = "container", gpus: tuple[int, ...] = ()) -> InstanceSpec:
    return InstanceSpec(id=instance_id, job="j", group="g", kind=kind, cpu_milli=100,
                        memory_bytes=1 << 20, config={}, gpus=gpus)


@pytest.fixture
def world(tmp_path):
    """(etcd stand-in, driver, store, a function making a manager over them: an agent process)."""
    etcd, driver, store = MemoryEtcd(), FakeDriver("container", tmp_path), MemoryHandleStore()
    managers: list[InstanceManager] = []

    def manager(**kw) -> InstanceManager:
        m = InstanceManager(NODE, tmp_path, {"container": driver}, Reporter(etcd, NODE),
                            **{"store": store, **kw})
        managers.append(m)
        return m
    yield etcd, driver, store, manager
    for m in managers:
        for t in m.instances.values():
            if t.task:
                t.task.cancel()


async def state_is(etcd: MemoryEtcd, instance_id: str, state: str) -> StateRecord:
    return await eventually(lambda: (s := etcd.state(instance_id)) is not None and s.state == state and s,
                            timeout=2, what=f"{instance_id} {state}")


async def test_start_confirms_starting_then_keeps_the_handle_until_the_end(world):
    etcd, driver, store, manager = world
    m = manager()
    assert await m.start([spec("a", gpus=(1,)), spec("b", kind="vm")]) == [
        ("a", True, ""), ("b", False, f"no vm driver on node {NODE}")]
    assert etcd.writes[0] == {"a": "starting", "b": "failed"}      # before start() returned
    await state_is(etcd, "a", "running")
    assert [(s.id, s.gpus, h.id) for s, h in store.saved()] == [("a", (1,), "a")]

    driver.exit("a", 3)
    ended = await state_is(etcd, "a", "failed")
    assert (ended.exit_code, ended.reason) == (3, "exit status 3")
    assert list(store.saved()) == [] and not m.is_active("a")


async def test_a_failed_start_is_reported_and_nothing_is_kept(world):
    etcd, driver, store, manager = world
    driver.refuse("a", "no such image")
    m = manager()
    await m.start([spec("a")])
    assert (await state_is(etcd, "a", "failed")).reason == "no such image"
    assert list(store.saved()) == [] and not m.is_active("a")


async def test_stop_while_starting_stops_it_once_started(tmp_path):
    etcd, driver = MemoryEtcd(), FakeDriver("container", tmp_path, start_delay=0.05)
    m = InstanceManager(NODE, tmp_path, {"container": driver}, Reporter(etcd, NODE), store=NoHandleStore())
    await m.start([spec("a")])
    await m.stop(["a"], grace=1)
    await state_is(etcd, "a", "stopped")
    assert "running" not in [w.get("a") for w in etcd.writes]


async def test_instant_starts_are_confirmed_running_in_one_write(world):
    etcd, driver, store, manager = world
    m = manager(store=NoHandleStore(), instant=True)
    results = await m.start([spec("a"), spec("b"), spec("c", kind="vm")])
    assert [ok for _, ok, _ in results] == [True, True, False]
    assert etcd.writes == [{"a": "running", "b": "running", "c": "failed"}]
    assert list(store.saved()) == []

    await m.stop(["a"], grace=1)
    await state_is(etcd, "a", "stopped")
    assert m.instances.keys() == {"b"}


async def test_an_instant_start_stopped_while_it_started_is_stopped(tmp_path):
    etcd, driver = MemoryEtcd(), FakeDriver("container", tmp_path, start_delay=0.05)
    m = InstanceManager(NODE, tmp_path, {"container": driver}, Reporter(etcd, NODE),
                        store=NoHandleStore(), instant=True)
    starting = asyncio.create_task(m.start([spec("a")]))
    await asyncio.sleep(0.01)
    assert await m.stop(["a"], grace=1) == ["a"]
    assert await starting == [("a", True, "")]
    await state_is(etcd, "a", "stopped")
    assert not m.is_active("a")


@pytest.mark.parametrize("count", [1, 9, 40])
async def test_shutdown_leaves_what_it_followed_to_reference_counting(world, count):
    """An agent's exit cancels the task following each instance. A cancelled task keeps its
    CancelledError, whose traceback holds the task's frames: were the instance's record still
    pointing at the task, each instance would be a reference cycle, found by the collector only
    (a simulated host's 100,000: a 1.6 s pause). Dropped, the records go by reference counting."""
    etcd, driver, store, manager = world
    m = manager()
    ids = [f"i{k}" for k in range(count)]
    await m.start([spec(i) for i in ids])
    for i in ids:
        await state_is(etcd, i, "running")
    gc.collect()
    gc.disable()
    try:
        await m.shutdown()
        await asyncio.sleep(0)                 # the cancellations land in the tasks
        m.instances.clear()
        assert gc.collect() == 0
    finally:
        gc.enable()


async def test_recover_adopts_the_living_and_reports_the_dead_and_the_lost(world):
    etcd, driver, store, manager = world
    first = manager()
    await first.start([spec("alive", gpus=(0, 2)), spec("dies")])
    await state_is(etcd, "dies", "running")
    await state_is(etcd, "alive", "running")
    await first.shutdown()                     # the agent exits; its instances keep running

    await driver.destroy(next(h for s, h in store.saved() if s.id == "dies"))   # ended meanwhile
    await Reporter(etcd, NODE).report(StateRecord(id="unknown", state="running"))
    second = manager()
    assert await second.recover() == (["alive"], ["dies"])
    assert second.instances["alive"].spec.gpus == (0, 2)
    assert [s.id for s, _ in store.saved()] == ["alive"]
    assert (await state_is(etcd, "dies", "failed")).reason == "ended while the agent was down"
    assert (await state_is(etcd, "unknown", "failed")).reason == "the agent lost track of it"

    driver.exit("alive", 0)                    # followed again by the new manager
    await state_is(etcd, "alive", "exited")
    assert list(store.saved()) == []



async def test_a_drivers_progress_shows_while_starting_and_not_after(world):
    etcd, driver, store, manager = world
    m = manager()
    driver.start_delay = 0.3              # a pull in progress
    await m.start([spec("p")])
    m.progress("p", "pulling 12/48 MiB")
    s = await eventually(lambda: (s := etcd.state("p")) is not None and s.reason == "pulling 12/48 MiB" and s,
                         timeout=2, what="progress reported")
    assert s.state == "starting"
    await state_is(etcd, "p", "running")
    m.progress("p", "pulling 48/48 MiB")  # late news from a finished pull changes nothing
    await asyncio.sleep(0.05)
    assert etcd.state("p").state == "running" and etcd.state("p").reason == ""


async def test_the_logs_of_instances_whose_records_left_etcd_are_swept(world, tmp_path):
    """A log stays while its instance runs here or etcd holds its state; a purge (its state deleted)
    takes the log, rotated files and log directories too. Anything of a known instance stays."""
    etcd, driver, store, manager = world
    m = manager()
    await m.start([spec("ended"), spec("running"), spec("purged")])
    for i in ("ended", "running", "purged"):
        await state_is(etcd, i, "running")
    driver.exit("ended", 0)
    driver.exit("purged", 0)
    await eventually(lambda: set(m.instances) == {"running"}, timeout=2, what="ends handled")
    logs = tmp_path / "logs"
    for name in ("purged.log.0", "gone-long-ago.log", "ended.log.1"):
        (logs / name).write_text("x\n")
    (logs / "a-container-dir").mkdir()
    (logs / "a-container-dir" / "current").write_text("x\n")
    del etcd.kv[keys.state(NODE, "purged")]                       # the scheduler purged its job
    assert await m.sweep_logs() == ["a-container-dir", "gone-long-ago.log", "purged.log", "purged.log.0"]
    assert sorted(p.name for p in logs.iterdir()) == ["ended.log", "ended.log.1", "running.log"]
    assert await m.sweep_logs() == []
