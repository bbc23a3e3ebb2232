"""Leader election on a real etcd: one leader at a time, takeover when it dies or resigns, and
the fencing token that keeps a deposed leader's placements out of etcd."""
import asyncio

import pytest

from packyard import keys
from scheduler.leader import Leadership
from tests.conftest import eventually
from tests.scheduler.inprocess import start_agent, start_scheduler
from tests.scheduler.test_controller import spec


@pytest.fixture
async def start(etcd):
    """Start a replica's election; whatever a test leaves running is abandoned at its end, so a
    failed test's leader (renewing its lease in its own thread) can't keep the key from the next
    test's replicas."""
    started = []

    async def start(etcd, name, ttl=2, margin=None):
        changes = []
        ld = Leadership(etcd, name, ttl=ttl, on_change=changes.append, poll=0.05, margin=margin)
        ld.start()
        started.append(ld)
        return ld, changes
    yield start
    for ld in started:
        await ld.abandon()      # (returns at once for one already resigned or abandoned)
    await etcd.delete(keys.LEADER)


async def die(ld: Leadership) -> None:
    """Like SIGKILL: no more renewals, no revoke; the lease is left to expire."""
    await ld.abandon()


async def test_exactly_one_of_several_replicas_leads(start, etcd):
    replicas = [await start(etcd, f"r{i}") for i in range(3)]
    await eventually(lambda: any(ld.leading for ld, _ in replicas), what="a leader")
    await asyncio.sleep(1.0)   # several renewals and polls: nobody else may take over meanwhile
    leaders = [ld for ld, _ in replicas if ld.leading]
    assert len(leaders) == 1
    assert (await etcd.get(keys.LEADER)).decode() == leaders[0].identity
    for ld, changes in replicas:
        assert changes == ([True] if ld is leaders[0] else [])
    for ld, _ in replicas:
        await ld.resign()


async def test_a_dead_leader_is_replaced_after_its_lease_expires(start, etcd):
    first, _ = await start(etcd, "first")
    await eventually(lambda: first.leading, what="first leads")
    second, changes = await start(etcd, "second")
    await eventually(lambda: second.leader == "first", what="second sees the leader")
    assert not second.leading
    await die(first)
    loop = asyncio.get_running_loop()
    died = loop.time()
    await eventually(lambda: second.leading, timeout=10, what="takeover")
    took = loop.time() - died
    assert changes == [True]
    assert took >= 1.0, f"took over after {took:.2f} s, before a 2 s lease could have expired"
    await second.resign()


async def test_resigning_hands_over_at_once(start, etcd):
    first, _ = await start(etcd, "first", ttl=30)
    await eventually(lambda: first.leading, what="first leads")
    second, _ = await start(etcd, "second", ttl=30)
    await first.resign()
    assert not first.leading
    # a 30 s lease: only the revoke can explain a quick takeover
    await eventually(lambda: second.leading, timeout=5, what="takeover after resign")
    await second.resign()


async def test_a_leader_whose_key_was_taken_steps_down(start, etcd):
    ld, changes = await start(etcd, "me")
    await eventually(lambda: ld.leading, what="leads")
    await etcd.delete(keys.LEADER)
    await etcd.put(keys.LEADER, b"someone-else")
    await eventually(lambda: not ld.leading, timeout=5, what="step down")
    assert changes == [True, False]
    await ld.resign()
    await etcd.delete(keys.LEADER)


async def test_a_deposed_leaders_placements_are_refused_by_etcd(start, etcd, tmp_path):
    """The leader key's revision rides in every placement transaction: once another replica
    holds the key, a stale leader's commits write nothing, even before it notices."""
    agent = await start_agent(etcd, "n1", tmp_path / "n1")
    sched = await start_scheduler(etcd)
    ld, _ = await start(etcd, "stale", ttl=30)
    await eventually(lambda: ld.leading, what="leads")
    sched.controller.follow(ld)
    # another replica holds the key now; with a 30 s lease ours renews (and notices) only every
    # 10 s, so meanwhile it still believes it leads, like a leader that stalled
    await etcd.delete(keys.LEADER)
    await etcd.put(keys.LEADER, b"new-leader")
    assert ld.leading
    reply = await sched.submit(spec(count=2))  # API writes are not fenced: any replica takes them
    assert len(reply.instance_ids) == 2
    await asyncio.sleep(1.0)                   # evaluations run and try to place
    _, kvs = await etcd.get_prefix(keys.instances_of("shop"))
    from packyard import records
    assert len(kvs) == 2 and all(not records.loads(records.InstanceRecord, kv.value).node for kv in kvs)
    await ld.abandon()
    await sched.close()
    await agent.kill()
    await etcd.delete(keys.LEADER)


async def test_a_follower_serves_the_api_and_places_once_it_leads(start, etcd, tmp_path):
    agent = await start_agent(etcd, "n1", tmp_path / "n1")
    leader_ld, _ = await start(etcd, "other", ttl=2)
    await eventually(lambda: leader_ld.leading, what="other leads")
    sched = await start_scheduler(etcd)
    mine, _ = await start(etcd, "mine", ttl=2)
    sched.controller.follow(mine)
    await eventually(lambda: len(sched.controller.state.nodes) == 1, what="node seen")
    reply = await sched.submit(spec(count=2))
    assert len(reply.instance_ids) == 2
    await asyncio.sleep(0.5)
    status = await sched.status("shop")
    assert all(i.state == "pending" for i in status.instances)   # a follower does not place
    await die(leader_ld)
    await eventually(lambda: mine.leading, timeout=10, what="takeover")

    async def running():
        st = await sched.status("shop")
        return all(i.state == "running" for i in st.instances)
    await eventually(running, timeout=10, what="placed and running after takeover")
    await mine.resign()
    await sched.close()
    await agent.kill()


async def test_a_leader_that_stepped_down_on_a_slow_etcd_takes_its_key_back_at_once(start, etcd, monkeypatch):
    """Renewals failing (etcd slow or failing over) make the leader step down (here 5 s before
    its 10 s lease expires); its key is still there when etcd answers again: it revokes that
    lease and leads again instead of waiting out the ~5 s the lease has left."""
    ld, changes = await start(etcd, "me", ttl=10, margin=5)
    await eventually(lambda: ld.leading, what="leads")

    async def failing(*args):
        raise TimeoutError("etcd is slow")
    with monkeypatch.context() as m:
        for name in ("refresh_lease", "revoke_lease", "get", "grant_lease"):
            m.setattr(ld.etcd, name, failing)          # the election's own client only
        await eventually(lambda: not ld.leading, timeout=15, what="step down")
        assert (await etcd.get(keys.LEADER)) == b"me"          # the stale key is still there
    await eventually(lambda: ld.leading, timeout=3, what="leading again")
    assert changes == [True, False, True]
    await ld.resign()
