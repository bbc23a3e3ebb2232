"""The control plane against a real etcd, with in-process agents on the FakeDriver."""
import asyncio
import contextlib
from dataclasses import replace

import grpc
import pytest

from packyard import keys, records
from packyard.records import InstanceRecord, JobRecord
from packyard.spec import validate
from scheduler.controller import ControllerConfig
from scheduler.reconciler import Config as ReconcileConfig
from tests.conftest import eventually
from tests.scheduler.inprocess import start_agent, start_scheduler


def spec(name="shop", count=3, cpu="250m", memory="64Mi", **group):
    return validate({"name": name, "groups": [
        {"name": "web", "count": count, "resources": {"cpu": cpu, "memory": memory}, **group}]})


@pytest.fixture
async def cluster(etcd, tmp_path):
    agents = [await start_agent(etcd, f"n{i}", tmp_path / f"n{i}") for i in (1, 2)]
    sched = await start_scheduler(etcd, ControllerConfig(
        tick=0.2, resend_after=0.5, reconcile=ReconcileConfig(confirm_timeout=2.0)))
    await eventually(lambda: len(sched.controller.state.nodes) == 2, what="nodes registered")
    yield sched, agents
    await sched.close()
    for a in agents:
        await a.kill()


async def states(sched, name):
    return [(i.node, i.state) for i in (await sched.status(name)).instances if i.desired == "run"]


async def test_submit_writes_job_and_instances_to_etcd_before_returning(cluster, etcd):
    sched, _ = cluster
    reply = await sched.submit(spec(count=3))
    job = records.loads(JobRecord, await etcd.get(keys.job("shop")))
    _, kvs = await etcd.get_prefix(keys.instances_of("shop"))
    assert job.version == 1 and sorted(keys.last(kv.key) for kv in kvs) == sorted(reply.instance_ids)
    assert len(reply.instance_ids) == 3


async def test_small_instances_fill_one_host_before_another(cluster):
    sched, _ = cluster
    await sched.submit(spec(count=4))
    running = await eventually(lambda: _all_running(sched, "shop"), what="all running")
    assert {node for node, _ in running} == {"n1"}


async def _all_running(sched, name):
    s = await states(sched, name)
    return s if s and all(st == "running" for _, st in s) else None


async def test_resubmitting_the_same_spec_changes_nothing(cluster):
    sched, _ = cluster
    first = await sched.submit(spec())
    again = await sched.submit(spec())
    assert not again.changed and sorted(again.instance_ids) == sorted(first.instance_ids)
    assert again.version == first.version


async def test_stop_stops_every_instance(cluster):
    sched, agents = cluster
    await sched.submit(spec(count=2))
    await eventually(lambda: _all_running(sched, "shop"))
    from packyard.v1 import scheduler_pb2
    await sched.stub.Stop(scheduler_pb2.StopRequest(name="shop"))
    status = await eventually(lambda: _all_state(sched, "shop", "stopped"), what="stopped")
    assert len(status) == 2


async def _all_state(sched, name, state):
    s = [i for i in (await sched.status(name)).instances]
    return s if s and all(i.state == state for i in s) else None


async def test_unplaceable_instances_say_why(cluster):
    sched, _ = cluster
    await sched.submit(spec(count=1, memory="64Gi"))
    inst = await eventually(lambda: _reason(sched, "shop"), what="a reason")
    assert inst.state == "pending" and "not enough memory" in inst.reason and "2" in inst.reason


async def _reason(sched, name):
    s = (await sched.status(name)).instances
    return s[0] if s and s[0].reason else None


async def test_constraints_pick_the_labelled_host(etcd, tmp_path):
    agents = [await start_agent(etcd, "z1", tmp_path / "z1", labels={"zone": "a"}),
              await start_agent(etcd, "z2", tmp_path / "z2", labels={"zone": "b"})]
    sched = await start_scheduler(etcd, ControllerConfig(tick=0.2))
    try:
        await eventually(lambda: len(sched.controller.state.nodes) == 2)
        await sched.submit(spec(count=2, constraints=[{"attribute": "label.zone", "value": "b"}]))
        running = await eventually(lambda: _all_running(sched, "shop"))
        assert {n for n, _ in running} == {"z2"}
    finally:
        await sched.close()
        for a in agents:
            await a.kill()


async def test_bad_spec_and_unknown_job_are_clear_errors(cluster):
    sched, _ = cluster
    from packyard.v1 import scheduler_pb2
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await sched.stub.Submit(scheduler_pb2.SubmitRequest(
            spec_json='{"name": "x", "groups": [{"name": "w", "resources": {"cpu": -1, "memory": "1Mi"}}]}'))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "groups[0].resources.cpu" in e.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await sched.status("nope")
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_node_that_never_confirms_loses_its_instances_to_another(etcd, tmp_path):
    good = await start_agent(etcd, "good", tmp_path / "good", cpu=1000)
    # a node registered in etcd whose agent never answers (address nobody listens on)
    from packyard.records import NodeRecord
    lease = await etcd.grant_lease(30)
    mute = NodeRecord(name="mute", address="127.0.0.1:1", capacity={"cpu_milli": 64000, "memory_bytes": 64 << 30},
                      attributes={"driver.container": "ok"})
    await etcd.put(keys.node("mute"), records.dumps(mute), lease=lease)
    sched = await start_scheduler(etcd, ControllerConfig(
        tick=0.2, resend_after=0.3, reconcile=ReconcileConfig(confirm_timeout=1.0)))
    try:
        await eventually(lambda: len(sched.controller.state.nodes) == 2)
        # the mute node is the fuller fit only once `good` is full: fill `good` first
        await sched.submit(spec(name="filler", count=1, cpu="1"))
        await eventually(lambda: _all_running(sched, "filler"))
        await sched.submit(spec(count=1, cpu="500m"))
        first = await eventually(lambda: _on(sched, "shop", "mute"), what="placed on mute")
        await good.kill()   # make room elsewhere: a new agent with space
        again = await start_agent(etcd, "spare", tmp_path / "spare", cpu=4000)
        running = await eventually(lambda: _all_running_on(sched, "shop", {"spare"}), timeout=15)
        assert first and running == [("spare", "running")]
        await again.kill()
    finally:
        await sched.close()
        await etcd.revoke_lease(lease)


async def _all_running_on(sched, name, nodes):
    s = await _all_running(sched, name)
    return s if s and {n for n, _ in s} <= nodes else None


async def _on(sched, name, node):
    return [i for i in (await sched.status(name)).instances if i.node == node]


async def test_a_lost_node_has_its_instances_replaced(etcd, tmp_path):
    a = await start_agent(etcd, "a", tmp_path / "a", ttl=2)
    sched = await start_scheduler(etcd, ControllerConfig(tick=0.2))
    try:
        await eventually(lambda: len(sched.controller.state.nodes) == 1)
        await sched.submit(spec(count=2))
        await eventually(lambda: _all_running(sched, "shop"))
        b = await start_agent(etcd, "b", tmp_path / "b", ttl=2)
        await a.kill()   # its lease expires within 2 s
        running = await eventually(lambda: _all_running_on(sched, "shop", {"b"}), timeout=15)
        assert len(running) == 2
        lost = [i for i in (await sched.status("shop")).instances if i.state == "lost"]
        assert len(lost) == 2 and all("node a is down" in i.reason for i in lost)
        await b.kill()
    finally:
        await sched.close()


async def test_a_restarted_scheduler_keeps_every_job(cluster, etcd):
    sched, _ = cluster
    await sched.submit(spec(count=3))
    before = await eventually(lambda: _all_running(sched, "shop"))
    await sched.close()
    again = await start_scheduler(etcd, ControllerConfig(tick=0.2))
    try:
        assert await states(again, "shop") == before
        assert set(again.controller.state.jobs) == {"shop"}
    finally:
        await again.close()
    # keep the fixture's teardown happy
    cluster[0].controller._tasks.clear()


async def test_a_write_from_a_stale_view_is_refused(cluster, etcd):
    sched, _ = cluster
    reply = await sched.submit(spec(count=1, memory="64Gi"))   # stays pending
    iid = reply.instance_ids[0]
    entry = sched.controller.state.instances[iid]
    async with sched.controller.lock:
        entry.mod_revision -= 1          # as if another writer had changed it since we read it
        ok = await sched.controller.commit([replace(entry.record, reason="from a stale view")])
    stored = records.loads(InstanceRecord, await etcd.get(keys.instance("shop", iid)))
    assert not ok and stored.reason != "from a stale view"


async def test_learned_vm_profile_is_persisted_shown_and_used_for_new_placements(etcd, tmp_path):
    from packyard.records import UsageRecord
    from packyard.v1 import scheduler_pb2
    from scheduler.profiles import LearnerConfig
    mib = 1 << 20
    agent = await start_agent(etcd, "h", tmp_path / "h", cpu=8000, memory=8 << 30, kinds=("container", "vm"))
    sched = await start_scheduler(etcd, ControllerConfig(tick=0.2, persist_profiles_every=0,
                                                         learner=LearnerConfig(min_samples=3)))
    try:
        # three VMs of the 256Mi class measured somewhere: 50, 52, 55 MiB of QEMU overhead
        measured = UsageRecord(node="elsewhere", at=0, instances={
            f"old.vm.{i}-1": {"kind": "vm", "request_memory_bytes": 256 * mib, "request_cpu_milli": 1000,
                              "overhead_memory_bytes": over * mib} for i, over in enumerate((50, 52, 55))})
        await etcd.put(keys.usage("elsewhere"), records.dumps(measured))
        reply = await eventually(lambda: _learned(sched), what="a learned class")
        (cls,) = reply.learned
        assert (cls.samples, cls.p50_bytes, cls.p95_bytes) == (3, 52 * mib, 55 * mib)
        expected_overhead = cls.overhead_bytes
        assert expected_overhead == -(-55 * mib * 105 // 100)   # p95 + 5%
        saved = await eventually(lambda: etcd.get(keys.profile("vm")), what="profile in etcd")
        assert b"old.vm.0-1" in saved
        vm = validate({"name": "db", "groups": [{"name": "db", "kind": "vm", "resources": {"cpu": 1, "memory": "256Mi"},
                                                  "vm": {"kernel": "/boot/vmlinuz"}}]})
        await sched.submit(vm)
        await eventually(lambda: _all_running(sched, "db"))
        (inst,) = (await sched.status("db")).instances
        assert inst.reserved.memory_bytes == 256 * mib + expected_overhead
        nodes = await sched.stub.Nodes(scheduler_pb2.NodesRequest())
        assert nodes.nodes[0].allocated.memory_bytes == 256 * mib + expected_overhead
        # a restarted scheduler starts from what was learned
        await sched.close()
        sched = await start_scheduler(etcd, ControllerConfig(tick=0.2, learner=LearnerConfig(min_samples=3)))
        await etcd.delete(keys.usage("elsewhere"))
        assert (await _learned(sched)).learned[0].overhead_bytes == expected_overhead
    finally:
        await sched.close()
        await agent.kill()


async def _learned(sched):
    from packyard.v1 import scheduler_pb2
    reply = await sched.stub.Profiles(scheduler_pb2.ProfilesRequest())
    vm = next(p for p in reply.profiles if p.kind == "vm")
    return vm if vm.learned else None


async def test_a_node_that_comes_back_stops_what_was_replaced_meanwhile(etcd, tmp_path):
    a = await start_agent(etcd, "a", tmp_path / "a", ttl=2)
    sched = await start_scheduler(etcd, ControllerConfig(tick=0.2, resend_after=0.3))
    b = None
    try:
        await eventually(lambda: len(sched.controller.state.nodes) == 1)
        await sched.submit(spec(count=1, cpu="750m"))
        assert await eventually(lambda: _all_running(sched, "shop")) == [("a", "running")]
        b = await start_agent(etcd, "b", tmp_path / "b", cpu=1000)
        # a network partition: `a` keeps running its instance but its lease lapses
        await a.registration.close()
        await etcd.revoke_lease(a.registration.lease_id)
        await eventually(lambda: _all_running_on(sched, "shop", {"b"}), timeout=15, what="replaced on b")
        assert a.manager.instances      # still running there: the partition hid it
        await a.registration.start()    # the partition heals
        await eventually(lambda: not a.manager.instances, timeout=10, what="fenced on a")
        lost = [i for i in (await sched.status("shop")).instances if i.node == "a"]
        assert [i.state for i in lost] == ["lost"]
        assert await _all_running_on(sched, "shop", {"b"})
    finally:
        await sched.close()
        await a.kill()
        if b:
            await b.kill()


@contextlib.asynccontextmanager
async def one_running_of_two(etcd, tmp_path, config):
    """Two agents, a scheduler, one instance running: (scheduler, its node, the other agent,
    the instance's record)."""
    a = await start_agent(etcd, "a", tmp_path / "a")
    sched = await start_scheduler(etcd, config)
    b = await start_agent(etcd, "b", tmp_path / "b")
    try:
        await eventually(lambda: len(sched.controller.state.nodes) == 2)
        await sched.submit(spec(count=1))
        [(node, _)] = await eventually(lambda: _all_running(sched, "shop"))
        record = next(e.record for e in sched.controller.state.instances.values())
        yield sched, node, (b if node == "a" else a), record
    finally:
        await sched.close()
        await a.kill()
        await b.kill()


async def test_a_copy_running_on_a_node_it_is_not_placed_on_is_stopped(etcd, tmp_path):
    """E.g. a Start the scheduler gave up waiting for, that the node carried out after all."""
    config = ControllerConfig(tick=0.2, resend_after=0.3)
    async with one_running_of_two(etcd, tmp_path, config) as (sched, node, other, record):
        await sched.controller.agents.start(other.name, other.registration.record.address,
                                            [sched.controller.dispatcher.instance_spec(record)])
        assert other.manager.instances                     # the stray copy runs
        await eventually(lambda: not other.manager.instances, timeout=10, what="stray stopped")
        assert await _all_running(sched, "shop") == [(node, "running")]   # the real one is left alone


async def test_a_copy_whose_reports_never_arrive_is_found_by_the_audit_and_stopped(etcd, tmp_path):
    """A node cut off at the wrong moment may run a copy etcd never hears of: the scheduler asks
    each agent what it runs (Inventory) and stops what is not placed there."""
    config = ControllerConfig(tick=0.2, audit_every=1.0)
    async with one_running_of_two(etcd, tmp_path, config) as (sched, node, other, record):
        async def silent(*states):          # its reports are lost: etcd never hears of the copy
            return None
        other.manager.reporter.report = silent
        await sched.controller.agents.start(other.name, other.registration.record.address,
                                            [sched.controller.dispatcher.instance_spec(record)])
        assert other.manager.instances and not sched.controller.state.stray_copies()
        await eventually(lambda: not other.manager.instances, timeout=15, what="copy stopped by the audit")
        assert await _all_running(sched, "shop") == [(node, "running")]


async def test_a_start_sent_to_an_earlier_registration_is_refused(etcd, tmp_path):
    """A Start sent before a network cut can be delivered after it, when the node has been
    declared down and registered again: it carries the lease it was meant for, and is refused."""
    a = await start_agent(etcd, "a", tmp_path / "a")
    sched = await start_scheduler(etcd, ControllerConfig(tick=0.2))
    try:
        await eventually(lambda: "a" in sched.controller.state.nodes)
        await sched.submit(spec(count=1))
        await eventually(lambda: _all_running(sched, "shop"))
        record = next(e.record for e in sched.controller.state.instances.values())
        copy = sched.controller.dispatcher.instance_spec(replace(record, id=record.id.replace("-1", "-9")))
        old = a.registration.lease_id
        await a.registration.register()              # as after its lease expired
        assert a.registration.lease_id != old
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await sched.controller.agents.start("a", a.registration.record.address, [copy], epoch=old)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert copy.id not in a.manager.instances
        reply = await sched.controller.agents.start("a", a.registration.record.address, [copy],
                                                    epoch=a.registration.lease_id)
        assert reply.results[0].accepted and copy.id in a.manager.instances
    finally:
        await sched.close()
        await a.kill()


async def test_gpu_shares_are_recorded_per_device_and_whole_gpus_need_a_free_device(etcd, tmp_path):
    from packyard.v1 import scheduler_pb2
    agent = await start_agent(etcd, "g", tmp_path / "g", cpu=8000, memory=8 << 30, gpu=2)
    sched = await start_scheduler(etcd, ControllerConfig(tick=0.2))
    try:
        await eventually(lambda: len(sched.controller.state.nodes) == 1)
        await sched.submit(validate({
            "name": "halves", "groups": [{"name": "w", "count": 3,
                                          "resources": {"cpu": "100m", "memory": "64Mi", "gpu": 0.5}}]}))
        await eventually(lambda: _all_running(sched, "halves"))
        devices = sorted(tuple(e.record.gpus) for e in sched.controller.state.job_entries("halves"))
        assert [len(d) for d in devices] == [1, 1, 1]
        # two halves share a device; the third opens the other: no whole GPU is left
        assert sorted(sum(d.count(i) for d in devices) for i in (0, 1)) == [1, 2]
        await sched.submit(validate({"name": "whole", "groups": [
            {"name": "w", "resources": {"cpu": "100m", "memory": "64Mi", "gpu": 1}}]}))
        inst = await eventually(lambda: _reason(sched, "whole"))
        assert "not enough gpu" in inst.reason
        nodes = await sched.stub.Nodes(scheduler_pb2.NodesRequest())
        assert nodes.nodes[0].allocated.gpu_milli == 1500
    finally:
        await sched.close()
        await agent.kill()


async def test_spread_over_a_label_places_evenly_across_zones(etcd, tmp_path):
    agents = [await start_agent(etcd, f"s{i}", tmp_path / f"s{i}", cpu=8000, labels={"zone": z})
              for i, z in enumerate("aabb")]
    sched = await start_scheduler(etcd, ControllerConfig(tick=0.2))
    try:
        await eventually(lambda: len(sched.controller.state.nodes) == 4)
        await sched.submit(spec(count=4, spread=[{"attribute": "label.zone", "weight": 100}]))
        running = await eventually(lambda: _all_running(sched, "shop"))
        zones = [{"s0": "a", "s1": "a", "s2": "b", "s3": "b"}[n] for n, _ in running]
        assert sorted(zones) == ["a", "a", "b", "b"]
        # and without spread, bin-packing keeps them on one host
        await sched.submit(spec(name="packed", count=4))
        packed = await eventually(lambda: _all_running(sched, "packed"))
        assert len({n for n, _ in packed}) == 1
    finally:
        await sched.close()
        for a in agents:
            await a.kill()


async def test_a_higher_priority_job_preempts_lower_ones_which_wait_to_be_placed_again(etcd, tmp_path):
    agent = await start_agent(etcd, "p", tmp_path / "p", cpu=2000, memory=4 << 30)
    sched = await start_scheduler(etcd, ControllerConfig(tick=0.2, resend_after=0.5))
    try:
        await eventually(lambda: len(sched.controller.state.nodes) == 1)
        low = validate({"name": "low", "priority": 10, "groups": [
            {"name": "w", "count": 2, "resources": {"cpu": 1, "memory": "64Mi"}}]})
        await sched.submit(low)
        await eventually(lambda: _all_running(sched, "low"))
        same = validate({"name": "same", "priority": 15, "groups": [
            {"name": "w", "resources": {"cpu": 1, "memory": "64Mi"}}]})
        await sched.submit(same)      # only 5 above: within the margin, no preemption
        inst = await eventually(lambda: _reason(sched, "same"))
        assert inst.state == "pending"
        high = validate({"name": "high", "priority": 80, "groups": [
            {"name": "w", "resources": {"cpu": 1, "memory": "64Mi"}}]})
        await sched.submit(high)
        assert await eventually(lambda: _all_running(sched, "high")) == [("p", "running")]
        insts = (await sched.status("low")).instances
        evicted = [i for i in insts if "preempted by high" in i.reason]
        assert len(evicted) == 1 and evicted[0].desired == "stop"
        await eventually(lambda: _evicted_stopped(sched))
        live = [i for i in (await sched.status("low")).instances if i.desired == "run"]
        assert sorted(i.state for i in live) == ["pending", "running"]   # rescheduled, waiting for room
    finally:
        await sched.close()
        await agent.kill()


async def _evicted_stopped(sched):
    insts = (await sched.status("low")).instances
    return [i for i in insts if "preempted" in i.reason and i.state == "stopped"]


async def _gone(etcd, name, ids):
    """True once etcd holds nothing of job `name`: its record, instances, or their states."""
    if await etcd.get(keys.job(name)) is not None:
        return False
    _, inst = await etcd.get_prefix(keys.instances_of(name))
    _, st = await etcd.get_prefix(keys.STATE)
    return not inst and not {keys.last(kv.key) for kv in st} & set(ids)


async def test_stop_with_purge_forgets_the_job_once_its_instances_ended(cluster, etcd):
    from packyard.v1 import scheduler_pb2
    sched, _ = cluster
    first = await sched.submit(spec(count=2))
    await eventually(lambda: _all_running(sched, "shop"))
    reply = await sched.stub.Stop(scheduler_pb2.StopRequest(name="shop", purge=True))
    assert reply.purge and reply.stopping == 2
    await eventually(lambda: _gone(etcd, "shop", first.instance_ids), timeout=20, what="the job purged")
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await sched.status("shop")
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    # the name is free: a new spec under it starts at version 1 and runs as that spec says
    again = await sched.submit(spec(count=1, cpu="500m"))
    assert again.version == 1 and again.changed
    await eventually(lambda: _all_running(sched, "shop"))
    (inst,) = (await sched.status("shop")).instances
    assert inst.reserved.cpu_milli == 500


async def test_a_stopped_job_is_purged_after_the_configured_time_and_not_before(cluster, etcd):
    from packyard.v1 import scheduler_pb2
    sched, _ = cluster
    first = await sched.submit(spec(count=1))
    await eventually(lambda: _all_running(sched, "shop"))
    await sched.stub.Stop(scheduler_pb2.StopRequest(name="shop"))
    await eventually(lambda: _all_state(sched, "shop", "stopped"), what="stopped")
    await asyncio.sleep(1.0)          # several evaluations: kept (purge_stopped_after is a day)
    assert await etcd.get(keys.job("shop")) is not None
    sched.controller.config = replace(sched.controller.config, purge_stopped_after=0.5)
    await eventually(lambda: _gone(etcd, "shop", first.instance_ids), timeout=20, what="the job purged")


async def test_a_system_job_runs_on_every_eligible_node_as_nodes_join_leave_and_return(etcd, tmp_path):
    agents = {n: await start_agent(etcd, n, tmp_path / n, ttl=2, labels=labels)
              for n, labels in (("a", {"zone": "x"}), ("b", {"zone": "x"}), ("c", {}))}
    sched = await start_scheduler(etcd, ControllerConfig(tick=0.2))
    system = validate({"name": "agents", "type": "system", "groups": [
        {"name": "web", "resources": {"cpu": "250m", "memory": "64Mi"},
         "constraints": [{"attribute": "label.zone", "value": "x"}]}]})

    async def running_on(nodes):
        s = await states(sched, "agents")
        return s if sorted(s) == [(n, "running") for n in sorted(nodes)] else None
    try:
        await eventually(lambda: len(sched.controller.state.nodes) == 3)
        await sched.submit(system)
        await eventually(lambda: running_on("ab"), what="one on each of a and b (not c)")
        agents["d"] = await start_agent(etcd, "d", tmp_path / "d", ttl=2, labels={"zone": "x"})
        await eventually(lambda: running_on("abd"), timeout=3, what="d's instance running")
        ids = {i.node: i.id for i in (await sched.status("agents")).instances}
        assert ids == {"a": "agents.web.0-1", "b": "agents.web.1-1", "d": "agents.web.2-1"}
        await agents.pop("b").kill()           # its lease expires within 2 s
        await eventually(lambda: _all_lost(sched, "agents", "b"), timeout=10, what="b's instance lost")
        await asyncio.sleep(1.0)               # a few evaluations: nothing replaces it elsewhere
        assert await running_on("ad")
        agents["b"] = await start_agent(etcd, "b", tmp_path / "b2", ttl=2, labels={"zone": "x"})
        await eventually(lambda: running_on("abd"), timeout=3, what="b's new instance running")
        back = [i for i in (await sched.status("agents")).instances if i.node == "b" and i.desired == "run"]
        assert [i.id for i in back] == ["agents.web.1-2"]
    finally:
        await sched.close()
        for a in agents.values():
            await a.kill()


async def _all_lost(sched, name, node):
    on = await _on(sched, name, node)
    return on if on and all(i.state == "lost" for i in on) else None
