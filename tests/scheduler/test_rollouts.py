"""Deployments through the control plane (issue 14), against a real etcd with in-process agents on
the FakeDriver: a rolling update, a failing one reverted automatically, history, rollback, and a
scheduler restarted mid-rollout carrying on from etcd."""
import asyncio

import grpc
import pytest

from packyard import keys, records
from packyard.records import DeploymentRecord, VersionRecord
from packyard.spec import validate
from packyard.v1 import scheduler_pb2
from scheduler.controller import ControllerConfig
from tests.conftest import eventually
from tests.scheduler.inprocess import start_agent, start_scheduler

FAST = {"min_healthy_time": "300ms", "healthy_deadline": "5s", "progress_deadline": "10s"}


def spec(command="1", count=3, update=None, restart=None):
    group = {"name": "web", "count": count, "resources": {"cpu": "100m", "memory": "32Mi"},
             "container": {"command": ["/bin/sleep", command]}, "update": {**FAST, **(update or {})}}
    if restart is not None:
        group["restart"] = restart
    return validate({"name": "shop", "groups": [group]})


@pytest.fixture
async def cluster(etcd, tmp_path):
    agents = [await start_agent(etcd, f"n{i}", tmp_path / f"n{i}") for i in (1, 2)]
    sched = await start_scheduler(etcd, ControllerConfig(tick=0.1))
    await eventually(lambda: len(sched.controller.state.nodes) == 2, what="nodes registered")
    yield sched, agents
    await sched.close()
    for a in agents:
        await a.kill()


async def deployment(sched) -> scheduler_pb2.Deployment | None:
    s = await sched.status("shop")
    return s.deployment if s.HasField("deployment") else None


async def deployed(sched, version, state="successful", timeout=20):
    async def done():
        d = await deployment(sched)
        return d if d is not None and d.version == version and d.state == state else None
    return await eventually(done, timeout=timeout, what=f"deployment of version {version} {state}")


def commands(status) -> list[str]:
    return sorted(i.id for i in status.instances if i.desired == "run")


async def test_a_rolling_update_replaces_max_parallel_at_a_time_and_marks_the_version_stable(cluster, etcd):
    sched, _ = cluster
    await sched.submit(spec("1", count=4))
    first = await deployed(sched, 1)
    assert first.groups["web"].healthy == 4
    await sched.submit(spec("2", count=4, update={"max_parallel": 2}))
    worst = 4
    while (d := await deployment(sched)) is None or d.version != 2 or d.state == "running":
        s = await sched.status("shop")
        worst = min(worst, sum(1 for i in s.instances if i.desired == "run" and i.state == "running"))
        await asyncio.sleep(0.02)
    assert d.state == "successful" and d.groups["web"].healthy == 4
    assert worst >= 4 - 2, worst
    versions = {n: records.loads(VersionRecord, kv.value)
                for n, kv in enumerate((await etcd.get_prefix(keys.VERSIONS))[1], 1)}
    assert [(v.version, v.stable) for v in versions.values()] == [(1, True), (2, True)]
    stored = records.loads(DeploymentRecord, await etcd.get(keys.deployment("shop")))
    assert stored.version == 2 and stored.state == "successful"


async def test_a_failing_version_is_reverted_to_the_last_stable_one(cluster):
    sched, agents = cluster
    await sched.submit(spec("1", count=3))
    await deployed(sched, 1)
    before = {i.id for i in (await sched.status("shop")).instances if i.desired == "run"}
    await sched.submit(spec("2", count=3, update={"auto_revert": True}, restart={"attempts": 1, "delay": "50ms"}))

    crasher = asyncio.get_running_loop().create_task(crash(agents, "2"))
    try:
        d = await deployed(sched, 2, "reverted")
        # seen restarted in place, or failed for good after that restart: either way, unhealthy
        assert d.description.startswith("version 2 failed: shop.web.0-2 is unhealthy: "), d.description
        assert "restarted 1 time(s) (exited with code 1" in d.description or "exit status 1 after 1 restart" \
            in d.description, d.description
        assert "reverted to version 1 (as version 3)" in d.description
        await eventually(lambda: _rolled_back(sched), timeout=20, what="rolled back")
    finally:
        crasher.cancel()
    s = await sched.status("shop")
    assert s.version == 3
    # the old version kept serving: at most max_parallel (1) of its instances were ever replaced
    assert len(before & {i.id for i in s.instances if i.desired == "run"}) >= 2
    history = await sched.stub.History(scheduler_pb2.StatusRequest(name="shop"))
    assert [(v.version, v.stable, v.current) for v in history.versions] == [
        (1, True, False), (2, False, False), (3, True, True)]
    assert history.versions[2].note == "revert to version 1 after version 2 failed"
    assert 'groups[web].container.command: ["/bin/sleep","1"] → ["/bin/sleep","2"]' in history.versions[1].changes


async def all_running(sched, versions, n):
    """`n` instances meant to run, all running, each made for one of `versions` (an instance
    whose spec a revert brings back is kept: it is what the new version runs)."""
    s = await sched.status("shop")
    live = [i for i in s.instances if i.desired == "run"]
    return len(live) == n and all(i.state == "running" and i.version in versions for i in live)


def history_of(reply) -> list[tuple[int, bool, bool, int]]:
    return [(v.version, v.stable, v.failed, v.same_as) for v in reply.versions]


NOT_YET_STABLE = {"min_healthy_time": "2s"}     # v1 running, not stable, when v2 fails


async def test_a_version_failing_before_any_is_stable_goes_back_to_the_one_it_replaced(cluster):
    """`submit v1 --wait` returns once v1 runs, before v1 is stable (min_healthy_time): a failing
    v2 still goes back to v1, which it replaced and which had not failed."""
    sched, agents = cluster
    await sched.submit(spec("1", count=2, update=NOT_YET_STABLE))
    await eventually(lambda: all_running(sched, {1}, 2), timeout=10, what="v1 running")
    await sched.submit(spec("2", count=2, update={"auto_revert": True}, restart={"attempts": 0}))
    crasher = asyncio.get_running_loop().create_task(crash(agents, "2"))
    try:
        d = await deployed(sched, 2, "reverted")
        assert "reverted to version 1 (as version 3)" in d.description, d.description
        assert (d.target, d.reverted_to) == (3, 1)
        await eventually(lambda: _rolled_back(sched), timeout=20, what="rolled back")
    finally:
        crasher.cancel()
    s = await sched.status("shop")
    assert s.version == 3 and s.spec_json == validate_spec_json("1", NOT_YET_STABLE)
    assert await all_running(sched, {1, 3}, 2)   # v1's spec throughout: the replaced slot's as version 3
    history = await sched.stub.History(scheduler_pb2.StatusRequest(name="shop"))
    assert history_of(history) == [(1, False, False, 0), (2, False, True, 0), (3, True, False, 1)]
    # back again by hand: to v2 no (it failed), and nothing is stable before v3 but v3 itself
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await sched.stub.Rollback(scheduler_pb2.RollbackRequest(name="shop"))
    assert (e.value.code(), e.value.details()) == (
        grpc.StatusCode.FAILED_PRECONDITION, "job 'shop' has no stable version before version 3 to roll back "
        "to (the deployment of version 2, which it replaced, failed)")


async def test_a_first_version_failing_is_not_reverted_and_says_why(cluster):
    sched, agents = cluster
    await sched.submit(spec("2", count=2, update={"auto_revert": True}, restart={"attempts": 0}))
    crasher = asyncio.get_running_loop().create_task(crash(agents, "2"))
    try:
        d = await deployed(sched, 1, "failed")
    finally:
        crasher.cancel()
    assert d.description.endswith("; not reverted: no stable version before version 1, and it is the "
                                  "job's first version"), d.description
    assert (await sched.status("shop")).version == 1 and d.reverted_to == 0
    history = await sched.stub.History(scheduler_pb2.StatusRequest(name="shop"))
    assert history_of(history) == [(1, False, True, 0)]


async def test_a_scheduler_taking_over_between_the_failure_and_the_revert_makes_the_revert(cluster, etcd):
    """The failure (its version marked failed and where it goes back to, with it) is written,
    then the leader dies before writing the revert: the next one finds it owed in etcd and
    reverts, once."""
    sched, agents = cluster
    await sched.submit(spec("1", count=2, update=NOT_YET_STABLE))
    await eventually(lambda: all_running(sched, {1}, 2), timeout=10, what="v1 running")

    async def dies_first(name):
        return None
    sched.controller._revert_if_owed = dies_first
    await sched.submit(spec("2", count=2, update={"auto_revert": True}, restart={"attempts": 0}))
    crasher = asyncio.get_running_loop().create_task(crash(agents, "2"))
    try:
        failed = await deployed(sched, 2, "failed")
        assert (failed.target, failed.reverted_to) == (2, 1)        # where to, decided with the failure
        stored = records.loads(VersionRecord, await etcd.get(keys.version("shop", 2)))
        assert stored.failed and not stored.stable
        await sched.close()
        again = await start_scheduler(etcd, ControllerConfig(tick=0.1))
        try:
            d = await deployed(again, 2, "reverted")
            assert "reverted to version 1 (as version 3)" in d.description
            await eventually(lambda: _rolled_back(again), timeout=20, what="rolled back")
            assert (await again.status("shop")).version == 3          # reverted once
            history = await again.stub.History(scheduler_pb2.StatusRequest(name="shop"))
            assert history_of(history) == [(1, False, False, 0), (2, False, True, 0), (3, True, False, 1)]
        finally:
            await again.close()
    finally:
        crasher.cancel()


def validate_spec_json(command, update):
    return spec(command, count=2, update=update).to_json()


async def crash(agents, command: str):
    """Version `command` "exits at once": each of its instances, as it starts."""
    while True:
        for a in agents:
            for iid in list(a.manager.instances):
                t = a.manager.instances[iid]
                if t.spec.config.get("command") == ["/bin/sleep", command] and t.handle is not None:
                    fut = a.driver._ends.get(iid)
                    if fut is not None and not fut.done():
                        a.driver.exit(iid, 1)
        await asyncio.sleep(0.02)


async def test_a_failing_canary_is_reverted_and_the_old_instances_never_stopped(cluster):
    sched, agents = cluster
    await sched.submit(spec("1", count=3))
    await deployed(sched, 1)
    before = sorted(i.id for i in (await sched.status("shop")).instances if i.desired == "run")
    await sched.submit(spec("2", count=3, update={"canary": 1, "auto_revert": True},
                            restart={"attempts": 1, "delay": "50ms"}))
    crasher = asyncio.get_running_loop().create_task(crash(agents, "2"))
    try:
        d = await deployed(sched, 2, "reverted")
        assert d.description.startswith("version 2 failed: shop.web.0-2 is unhealthy"), d.description
        await eventually(lambda: _rolled_back(sched), timeout=20, what="rolled back")
    finally:
        crasher.cancel()
    s = await sched.status("shop")
    live = sorted(i.id for i in s.instances if i.desired == "run")
    assert live == before and s.version == 3          # the canary gone, the old ones served throughout
    assert all(i.state == "running" for i in s.instances if i.desired == "run")


async def _rolled_back(sched):
    d = await deployment(sched)
    return d is not None and d.state == "reverted" and "rolled back" in d.description


async def test_rollback_to_a_version_and_the_errors_naming_the_job(cluster):
    sched, _ = cluster
    await sched.submit(spec("1", count=2))
    await deployed(sched, 1)
    await sched.submit(spec("2", count=2))
    await deployed(sched, 2)
    reply = await sched.stub.Rollback(scheduler_pb2.RollbackRequest(name="shop"))     # the previous stable: 1
    assert reply.changed and reply.version == 3
    d = await deployed(sched, 3)
    assert d.groups["web"].healthy == 2
    job = (await sched.status("shop"))
    assert '"/bin/sleep","1"' in job.spec_json
    for request, code, message in [
            (scheduler_pb2.RollbackRequest(name="nope"), grpc.StatusCode.NOT_FOUND, "job 'nope' not found"),
            (scheduler_pb2.RollbackRequest(name="shop", version=9), grpc.StatusCode.NOT_FOUND,
             "job 'shop' has no version 9 (kept: 1, 2, 3)"),
            (scheduler_pb2.RollbackRequest(name="shop", version=3), grpc.StatusCode.FAILED_PRECONDITION,
             "job 'shop' already runs version 3")]:
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await sched.stub.Rollback(request)
        assert (e.value.code(), e.value.details()) == (code, message)


async def test_a_count_only_change_scales_without_a_deployment(cluster):
    sched, _ = cluster
    await sched.submit(spec("1", count=2))
    await deployed(sched, 1)
    await sched.submit(spec("1", count=4))
    await eventually(lambda: _running(sched, 4), what="scaled")
    d = await deployment(sched)
    assert d.version == 1                       # no deployment for version 2
    history = await sched.stub.History(scheduler_pb2.StatusRequest(name="shop"))
    assert [(v.version, v.stable) for v in history.versions] == [(1, True), (2, True)]
    assert history.versions[1].changes == ["groups[web].count: 2 → 4"]


async def _running(sched, n):
    s = await sched.status("shop")
    return sum(1 for i in s.instances if i.desired == "run" and i.state == "running") == n


async def test_a_restarted_scheduler_carries_on_with_the_rollout(cluster, etcd):
    sched, _ = cluster
    await sched.submit(spec("1", count=4))
    await deployed(sched, 1)
    slow = {"min_healthy_time": "1s", "healthy_deadline": "10s", "progress_deadline": "20s"}
    await sched.submit(spec("2", count=4, update=slow))
    await eventually(lambda: _replaced_some(sched), timeout=10, what="the rollout under way")
    await sched.close()
    again = await start_scheduler(etcd, ControllerConfig(tick=0.1))
    try:
        d = await deployed(again, 2)
        assert d.groups["web"].healthy == 4
        ids = [i.id for i in (await again.status("shop")).instances]
        assert len(ids) == 8 and len(set(ids)) == 8          # each slot replaced once: 4 old + 4 new
    finally:
        await again.close()


async def _replaced_some(sched):
    s = await sched.status("shop")
    return any(i.id.endswith("-2") and i.state == "running" for i in s.instances)


async def test_canaries_then_promote_and_what_cannot_be_promoted(cluster):
    sched, _ = cluster
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await sched.stub.Promote(scheduler_pb2.StatusRequest(name="shop"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    await sched.submit(spec("1", count=3))
    await deployed(sched, 1)
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await sched.stub.Promote(scheduler_pb2.StatusRequest(name="shop"))
    assert (e.value.code(), e.value.details()) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "job 'shop' has nothing to promote: its deployment of version 1 is successful")
    await sched.submit(spec("2", count=3, update={"canary": 1}))
    d = await deployed(sched, 2, "awaiting promotion")
    live = [i for i in (await sched.status("shop")).instances if i.desired == "run"]
    assert sorted(i.id for i in live) == ["shop.web.0-1", "shop.web.0-2", "shop.web.1-1", "shop.web.2-1"]
    assert d.groups["web"].healthy == 1
    promoted = await sched.stub.Promote(scheduler_pb2.StatusRequest(name="shop"))
    assert promoted.state == "running"
    await deployed(sched, 2)
    live = sorted(i.id for i in (await sched.status("shop")).instances if i.desired == "run")
    assert live == ["shop.web.0-2", "shop.web.1-2", "shop.web.2-2"]


async def test_a_system_job_is_rolled_node_by_node_in_place(cluster):
    sched, _ = cluster
    def system(command):
        return validate({"name": "shop", "type": "system", "groups": [
            {"name": "web", "resources": {"cpu": "100m", "memory": "32Mi"},
             "container": {"command": ["/bin/sleep", command]}, "update": FAST}]})
    await sched.submit(system("1"))
    await deployed(sched, 1)
    before = {i.id: i.node for i in (await sched.status("shop")).instances if i.desired == "run"}
    assert sorted(before.values()) == ["n1", "n2"]
    await sched.submit(system("2"))
    worst = 2
    while (d := await deployment(sched)) is None or d.version != 2 or d.state == "running":
        s = await sched.status("shop")
        worst = min(worst, sum(1 for i in s.instances if i.desired == "run" and i.state == "running"))
        await asyncio.sleep(0.02)
    assert d.state == "successful" and d.groups["web"].desired == 2 and d.groups["web"].healthy == 2
    assert worst >= 1, worst                          # one node at a time (max_parallel 1)
    after = {i.id: i.node for i in (await sched.status("shop")).instances if i.desired == "run"}
    assert sorted(after.values()) == ["n1", "n2"] and not set(after) & set(before)
    assert all(i.version == 2 for i in (await sched.status("shop")).instances if i.desired == "run")


async def test_auto_promote_rolls_out_the_rest_once_the_canaries_are_healthy(cluster):
    """No `ctl promote`: once its canary is healthy the rest rolls at once, well within the
    progress_deadline (nothing happens to the job after the promotion to prompt a look)."""
    sched, _ = cluster
    await sched.submit(spec("1", count=3))
    await deployed(sched, 1)
    await sched.submit(spec("2", count=3, update={"canary": 1, "auto_promote": True}))
    d = await deployed(sched, 2, timeout=9)           # progress_deadline (10s) not waited out
    assert d.groups["web"].healthy == 3 and "rolled out" in d.description, d
    live = sorted(i.id for i in (await sched.status("shop")).instances if i.desired == "run")
    assert live == ["shop.web.0-2", "shop.web.1-2", "shop.web.2-2"]


async def test_promote_during_a_rollout_says_whether_it_has_canaries_to_wait_for(cluster):
    sched, _ = cluster
    slow = {"min_healthy_time": "4s", "healthy_deadline": "8s", "progress_deadline": "10s"}
    await sched.submit(spec("1", count=2, update=slow))               # a first deployment: no canaries
    for update, why in ((slow, "it has no canaries"), ({**slow, "canary": 1}, "its canaries are not all healthy yet")):
        if "canary" in update:
            await deployed(sched, 1)
            await sched.submit(spec("2", count=2, update=update))
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await sched.stub.Promote(scheduler_pb2.StatusRequest(name="shop"))
        version = 2 if "canary" in update else 1
        assert (e.value.code(), e.value.details()) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            f"job 'shop' has nothing to promote: its deployment of version {version} is running ({why})")
