"""The cache's indexes, kept as events arrive, always equal what a full scan of the instances
says (Hypothesis drives random sequences of instance writes, reports and deletes)."""
import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from packyard import keys, records
from packyard.etcd import KV, Event
from packyard.records import TERMINAL, InstanceRecord, StateRecord
from scheduler.state import AMOUNTS_KEPT, ClusterState, Entry, holds_reservation, unsettled

NODES = ["n1", "n2"]
IDS = [f"job.web.{i}-1" for i in range(4)]

instance_event = st.builds(
    lambda iid, node, desired, lost, cpu, gpus: ("instance", iid, InstanceRecord(
        id=iid, job="job", group="web", index=int(iid.split(".")[2].split("-")[0]), kind="container",
        version=1, desired=desired, node=node, lost=lost and bool(node),
        reserved={"cpu_milli": cpu, "memory_bytes": cpu << 20, "gpu_milli": 1000 * len(gpus)} if node else {},
        gpus=gpus if node else [])),
    st.sampled_from(IDS), st.sampled_from(["", *NODES]), st.sampled_from(["run", "stop"]), st.booleans(),
    st.integers(0, 3000), st.sampled_from([[], [0], [0, 1]]))
report_event = st.builds(
    lambda iid, node, state: ("report", iid, node, state),
    st.sampled_from(IDS), st.sampled_from(NODES),
    st.sampled_from(["starting", "running", "exited", "failed", "stopped"]))
delete_event = st.builds(lambda iid: ("delete", iid), st.sampled_from(IDS))
unreport_event = st.builds(lambda iid, node: ("unreport", iid, node), st.sampled_from(IDS), st.sampled_from(NODES))


def to_event(op, revision: int) -> Event:
    if op[0] == "instance":
        return Event("put", keys.instance("job", op[1]), records.dumps(op[2]), revision)
    if op[0] == "report":
        return Event("put", keys.state(op[2], op[1]),
                     records.dumps(StateRecord(id=op[1], state=op[3])), revision)
    if op[0] == "unreport":
        return Event("delete", keys.state(op[2], op[1]), b"", revision)
    return Event("delete", keys.instance("job", op[1]), b"", revision)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(instance_event, report_event, delete_event, unreport_event), max_size=40))
def test_indexes_match_a_full_scan(ops):
    state = with_job()
    for revision, op in enumerate(ops, start=1):
        state.apply(to_event(op, revision))
        # the job's entries in id order, the current ones (the order is kept between calls)
        by_id = sorted(state.instances.values(), key=lambda e: e.id)
        assert [(e.id, e.record) for e in state.job_entries("job")] == [(e.id, e.record) for e in by_id]
    entries = list(state.instances.values())
    pending = {e.id for e in entries if e.record.desired == "run" and not e.record.node and not e.record.lost}
    assert pending_ids(state) == pending and state.pending_count() == len(pending)
    assert {e.id for e in state.unsettled_entries()} == {e.id for e in entries if unsettled(e)}
    placed_on = {e.id: e.record.node for e in entries}
    assert state.stray_copies() == {iid: nodes for iid, by_node in reports(state).items()
                                    if (nodes := {n for n, rep in by_node.items()
                                                  if n != placed_on.get(iid, "") and rep.state not in TERMINAL})}
    assert state.pending_by_group() == ({("job", "web"): pending} if pending else {})
    holding = [e for e in entries if holds_reservation(e)]
    assert {e.id for e in entries if state.holds(e.id)} == {e.id for e in holding}
    alloc: dict[str, list[int]] = {}
    for e in holding:
        a = alloc.setdefault(e.record.node, [0, 0, 0, 0])
        for i, k in enumerate(("cpu_milli", "memory_bytes", "disk_bytes", "gpu_milli")):
            a[i] += e.record.reserved.get(k, 0)
    assert {n: list(state.allocations().get(n, [0, 0, 0, 0])) for n in NODES} == {n: alloc.get(n, [0, 0, 0, 0]) for n in NODES}
    shapes = Counter((e.record.reserved.get("cpu_milli", 0), e.record.reserved.get("memory_bytes", 0),
                      e.record.reserved.get("gpu_milli", 0)) for e in holding)
    assert state.shape_counts() == dict(shapes)
    assert {r.id for r in state.gpu_holders()} == {e.id for e in holding if e.record.gpus}
    assert set(state.jobs_holding()) == {e.record.job for e in holding}
    scanned = {n: records.ResourceAmounts(*a) for n, a in alloc.items()}
    assert {n: r for n, r in state.allocated().items() if r != records.ResourceAmounts()} == \
        {n: r for n, r in scanned.items() if r != records.ResourceAmounts()}


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(instance_event, report_event, delete_event), max_size=20),
       st.lists(st.one_of(instance_event, report_event, delete_event), max_size=20))
def test_a_relisted_prefix_equals_a_cache_built_from_scratch(before, after):
    """A watch that fell behind a compaction lists its prefixes again: whatever was deleted in
    the gap is gone from the cache, and the cache equals one loaded fresh from the listing."""
    seen, truth = with_job(), with_job()
    for revision, op in enumerate(before, start=1):
        seen.apply(to_event(op, revision))
        truth.apply(to_event(op, revision))
    for revision, op in enumerate(after, start=len(before) + 1):
        truth.apply(to_event(op, revision))          # the cache missed these
    listing = {prefix: [KV(ev.key, ev.value, ev.revision) for ev in snapshot(truth, prefix)]
               for prefix in (keys.INSTANCES, keys.STATE)}
    fresh = with_job()
    for prefix in (keys.INSTANCES, keys.STATE):
        seen.reload(prefix, listing[prefix])
        fresh.load(prefix, listing[prefix])
    assert {i: e.record for i, e in seen.instances.items()} == {i: e.record for i, e in fresh.instances.items()}
    assert {i: e.state for i, e in seen.instances.items()} == {i: e.state for i, e in fresh.instances.items()}
    assert reports(seen) == reports(fresh) and seen.stray_copies() == fresh.stray_copies()
    assert pending_ids(seen) == pending_ids(fresh)
    assert {e.id for e in seen.unsettled_entries()} == {e.id for e in fresh.unsettled_entries()}
    assert seen.shape_counts() == fresh.shape_counts()


def pending_ids(state: ClusterState) -> set[str]:
    return {i for ids in state.pending_by_group().values() for i in ids}


def with_job() -> ClusterState:
    """A cache holding the job record the instances belong to (pending_by_group lists only
    instances of known jobs)."""
    state = ClusterState()
    state.apply(Event("put", keys.job("job"), records.dumps(records.JobRecord(name="job", spec_json="{}")), 1))
    return state


def reports(state: ClusterState) -> dict[str, dict[str, StateRecord]]:
    out: dict[str, dict[str, StateRecord]] = {}
    for iid, node, rep in state.all_reports():
        out.setdefault(iid, {})[node] = rep
    return out


def snapshot(state: ClusterState, prefix: str) -> list[Event]:
    """What etcd would list under prefix, rebuilt from a cache that saw every event."""
    if prefix == keys.INSTANCES:
        return [Event("put", keys.instance(e.record.job, i), records.dumps(e.record), e.mod_revision)
                for i, e in state.instances.items()]
    return [Event("put", keys.state(node, iid), records.dumps(rep), 10_000)
            for iid, node, rep in state.all_reports()]


def test_a_node_that_joins_returns_or_changes_marks_the_system_jobs_and_one_put_again_does_not():
    state = ClusterState()
    revision = iter(range(1, 100))

    def put(key, record):
        return state.apply(Event("put", key, records.dumps(record), next(revision)))

    def node(name, epoch=1, **labels):
        return put(keys.node(name), records.NodeRecord(name=name, address="x:1", capacity={"cpu_milli": 1000},
                                                       labels=labels, epoch=epoch))
    assert node("n1") == set()                     # no system job: a new node concerns no job
    for name, spec in (("web", '{"name":"web"}'), ("agents", '{"name":"agents","type":"system"}'),
                       ("logs", '{"name":"logs","type":"system"}')):
        put(keys.job(name), records.JobRecord(name=name, spec_json=spec))
    assert node("n2") == {"agents", "logs"}       # joined
    assert node("n2") == set()                     # the same record put again (a re-registration)
    assert node("n2", epoch=2) == set()            # ... under a new lease: still nothing new to them
    assert node("n2", epoch=2, zone="a") == {"agents", "logs"}     # its labels changed
    assert state.apply(Event("delete", keys.node("n2"), b"", next(revision))) == {"*"}
    assert node("n2", epoch=3, zone="a") == {"agents", "logs"}     # back
    put(keys.job("logs"), records.JobRecord(name="logs", spec_json='{"name":"logs"}'))   # now a service
    state.apply(Event("delete", keys.job("agents"), b"", next(revision)))
    assert node("n3") == set()


def test_an_entry_keeps_its_slots():
    # one per instance in the cache: 56 bytes with slots, 152 with a __dict__ (README, issue 12)
    assert "__slots__" in vars(Entry) and not any("__dict__" in getattr(c, "__slots__", ("__dict__",))
                                                  for c in Entry.__mro__[:-1])
    assert not hasattr(Entry(InstanceRecord(id="j.g.0-1", job="j", group="g", index=0, kind="container",
                                            version=1), 1), "__dict__")


def test_allocations_hold_past_more_kinds_of_amounts_than_are_shared():
    """Holders of equal amounts share one tuple of them, the table of those emptied once it has
    AMOUNTS_KEPT kinds: instances of more kinds than that, placed, moved and deleted in a
    varied order, still sum per node as a scan of them does."""
    rng = random.Random(12)
    state = with_job()
    n = AMOUNTS_KEPT + 300
    kinds = [(rng.randrange(1, 4000), rng.randrange(1, 1 << 30)) for _ in range(n)]
    revision = 1
    for step in range(3):
        for i in rng.sample(range(n), n):
            cpu, memory = kinds[(i + step * 7) % n] if rng.random() < 0.5 else kinds[i]
            revision += 1
            if rng.random() < 0.2:
                state.apply(Event("delete", keys.instance("job", f"job.web.{i}-1"), b"", revision))
                continue
            state.apply(Event("put", keys.instance("job", f"job.web.{i}-1"), records.dumps(InstanceRecord(
                id=f"job.web.{i}-1", job="job", group="web", index=i, kind="container", version=1,
                node=rng.choice(NODES), reserved={"cpu_milli": cpu, "memory_bytes": memory})), revision))
    holding = [e for e in state.instances.values() if holds_reservation(e)]
    alloc = {node: [0, 0, 0, 0] for node in NODES}
    for e in holding:
        alloc[e.record.node][0] += e.record.reserved["cpu_milli"]
        alloc[e.record.node][1] += e.record.reserved["memory_bytes"]
    assert 0 < len(holding) < n
    assert {node: list(state.allocations().get(node, [0, 0, 0, 0])) for node in NODES} == alloc
    assert state.shape_counts() == dict(Counter((e.record.reserved["cpu_milli"], e.record.reserved["memory_bytes"], 0)
                                                for e in holding))
