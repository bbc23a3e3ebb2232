from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from packyard.records import EXITED, FAILED, RUNNING, STARTING, InstanceRecord, JobRecord, StateRecord
from packyard.spec import SpecError, validate
from scheduler.reconciler import Config, Generations, generation_of, group_hash, instance_id, reconcile
from scheduler.state import Entry


def job_spec(count=3, cpu="250m", groups=("web",), update=None):
    extra = {"update": update} if update is not None else {}
    return validate({"name": "shop", "groups": [
        {"name": g, "count": count, "resources": {"cpu": cpu, "memory": "64Mi"}, **extra} for g in groups]})


def job_record(spec, desired="run", version=1):
    return JobRecord(name=spec.name, spec_json=spec.to_json(), version=version, desired=desired)


def entry(spec, index, node="n1", state=RUNNING, group="web", gen=1, desired="run", placed_at=0.0,
          report=True):
    g = spec.group(group)
    rec = InstanceRecord(id=instance_id(spec.name, group, index, gen), job=spec.name, group=group,
                         index=index, kind="container", version=1, ghash=group_hash(g), node=node,
                         desired=desired, placed_at=placed_at)
    rep = StateRecord(id=rec.id, state=state) if (report and node) else None
    return Entry(rec, 1, rep)


def test_new_job_creates_one_pending_instance_per_slot():
    spec = job_spec(count=3)
    r = reconcile(job_record(spec), spec, [], {"n1"}, now=0)
    assert [c.id for c in r.create] == ["shop.web.0-1", "shop.web.1-1", "shop.web.2-1"]
    assert all(not c.node for c in r.create)


def test_converged_job_needs_nothing():
    spec = job_spec(count=2)
    r = reconcile(job_record(spec), spec, [entry(spec, 0), entry(spec, 1)], {"n1"}, now=0)
    assert r.empty


def test_scaling_down_stops_the_highest_indexes():
    spec = job_spec(count=1)
    r = reconcile(job_record(spec), spec, [entry(spec, 0), entry(spec, 1)], {"n1"}, now=0)
    assert [s.id for s in r.stop] == ["shop.web.1-1"] and not r.create


def test_changed_group_replaces_its_instances_max_parallel_at_a_time():
    old = job_spec(cpu="250m")
    entries = [entry(old, i) for i in range(3)]
    one = job_spec(cpu="500m")                               # no update block: one at a time
    r = reconcile(job_record(one, version=2), one, entries, {"n1"}, now=0)
    assert [s.id for s in r.stop] == ["shop.web.0-1"] and [c.id for c in r.create] == ["shop.web.0-2"]
    assert r.create[0].replaces == "shop.web.0-1" and r.deployment.state == "running"
    every = job_spec(cpu="500m", update={"max_parallel": 3})
    r = reconcile(job_record(every, version=2), every, entries, {"n1"}, now=0)
    assert len(r.stop) == 3 and [c.id for c in r.create] == ["shop.web.0-2", "shop.web.1-2", "shop.web.2-2"]


def test_instances_on_a_down_node_are_lost_and_replaced():
    spec = job_spec(count=2)
    entries = [entry(spec, 0, node="n1"), entry(spec, 1, node="n2")]
    r = reconcile(job_record(spec), spec, entries, {"n1"}, now=0)
    assert [x.id for x in r.lost] == ["shop.web.1-1"] and r.lost[0].lost
    assert [c.id for c in r.create] == ["shop.web.1-2"]


@pytest.mark.parametrize("state", [EXITED, FAILED], ids=str)
def test_finished_instances_keep_their_slot_and_are_not_lost(state):
    spec = lifecycle_spec(reschedule={"attempts": 0, "unlimited": False})
    r = reconcile(job_record(spec), spec, [entry(spec, 0, node="gone", state=state)], set(), now=0)
    assert r.empty


def lifecycle_spec(job_type="service", count=1, **blocks):
    return validate({"name": "shop", "type": job_type, "groups": [
        {"name": "web", "count": count, "resources": {"cpu": "250m", "memory": "64Mi"}, **blocks}]})


def failed_on(spec, node, restarts=3, gen=1, **record):
    e = entry(spec, 0, node=node, state=FAILED, gen=gen)
    return Entry(replace(e.record, **record), 1, replace(e.state, restarts=restarts))


def test_a_failed_instance_is_rescheduled_away_from_where_it_failed_after_the_delay():
    spec = lifecycle_spec(reschedule={"delay": "5s", "max_delay": "1m"})
    r = reconcile(job_record(spec), spec, [failed_on(spec, "n1")], {"n1", "n2"}, now=100.0)
    assert [x.id for x in r.stop] == ["shop.web.0-1"] and r.stop[0].desired == "stop"
    (new,) = r.create
    assert (new.id, new.node, new.avoid, new.not_before, new.rescheduled_at) == (
        "shop.web.0-2", "", ["n1"], 105.0, [100.0])
    assert new.events == [{"at": 100.0, "message": "rescheduled from n1 after 3 failed restarts"}]
    # failing again elsewhere: both nodes avoided, and the delay has doubled
    again = failed_on(spec, "n2", gen=2, avoid=["n1"], rescheduled_at=[100.0])
    r2 = reconcile(job_record(spec), spec, [again], {"n1", "n2", "n3"}, now=200.0)
    assert (r2.create[0].avoid, r2.create[0].not_before) == (["n1", "n2"], 210.0)


def test_reschedules_are_counted_per_interval_unless_unlimited():
    batch = lifecycle_spec("batch")                       # batch: once per 24h
    e = failed_on(batch, "n1", gen=2, rescheduled_at=[50.0])
    assert reconcile(job_record(batch), batch, [e], {"n1", "n2"}, now=100.0).empty
    assert reconcile(job_record(batch), batch, [e], {"n1", "n2"}, now=50.0 + 86400 + 1).create
    capped = lifecycle_spec(reschedule={"delay": "10s", "max_delay": "30s"})
    e = failed_on(capped, "n1", gen=5, rescheduled_at=[1.0, 2.0, 3.0, 4.0])
    assert reconcile(job_record(capped), capped, [e], {"n1", "n2"}, now=100.0).create[0].not_before == 130.0


def test_without_a_node_where_the_slot_has_not_failed_the_failure_stands():
    spec = lifecycle_spec()
    assert reconcile(job_record(spec), spec, [failed_on(spec, "n1")], {"n1"}, now=0).empty
    again = failed_on(spec, "n2", gen=2, avoid=["n1"], rescheduled_at=[0.0])
    assert reconcile(job_record(spec), spec, [again], {"n1", "n2"}, now=10).empty


def test_system_instances_are_never_rescheduled():
    spec = lifecycle_spec("system")
    r = reconcile(job_record(spec), spec, [failed_on(spec, "n1")], {"n1", "n2"}, now=0)
    # the failure stands on n1; n2 gets an instance of its own (one on every node), not a replacement
    assert not r.stop and [(c.pinned, list(c.avoid)) for c in r.create] == [("n2", [])]


def test_stopping_a_job_stops_everything_meant_to_run():
    spec = job_spec(count=2)
    entries = [entry(spec, 0), entry(spec, 1, node="", report=False)]
    r = reconcile(job_record(spec, desired="stop"), spec, entries, {"n1"}, now=0)
    assert {s.id for s in r.stop} == {"shop.web.0-1", "shop.web.1-1"} and not r.create


def test_unconfirmed_instances_go_back_to_pending_after_the_timeout():
    spec = job_spec(count=2)
    entries = [entry(spec, 0, state=STARTING, report=False, placed_at=0.0),
               entry(spec, 1, state=STARTING, report=False, placed_at=9.0)]
    r = reconcile(job_record(spec), spec, entries, {"n1"}, now=10.0, config=Config(confirm_timeout=5))
    assert [u.id for u in r.unassign] == ["shop.web.0-1"]
    assert r.unassign[0].node == "" and "did not confirm" in r.unassign[0].reason


def test_an_instance_whose_node_accepted_the_start_is_not_moved_for_a_slow_report():
    spec = job_spec(count=2)
    entries = [entry(spec, 0, state=STARTING, report=False, placed_at=0.0),
               entry(spec, 1, state=STARTING, report=False, placed_at=0.0)]
    acked = {(entries[0].id, entries[0].record.node)}
    r = reconcile(job_record(spec), spec, entries, {"n1"}, now=10.0, config=Config(confirm_timeout=5),
                  acknowledged=acked)
    assert [u.id for u in r.unassign] == ["shop.web.1-1"]
    # acknowledged by another node than the one it is placed on now: no protection
    moved = {(entries[0].id, "elsewhere")}
    r = reconcile(job_record(spec), spec, entries, {"n1"}, now=10.0, config=Config(confirm_timeout=5),
                  acknowledged=moved)
    assert len(r.unassign) == 2


@settings(max_examples=200, deadline=None)
@given(count=st.integers(0, 6), nodes=st.lists(st.sampled_from(["n1", "n2", "n3", ""]), max_size=8),
       ready=st.sets(st.sampled_from(["n1", "n2", "n3"])),
       states=st.lists(st.sampled_from([RUNNING, EXITED, FAILED, STARTING]), min_size=8, max_size=8))
def test_after_applying_the_result_every_slot_has_exactly_one_live_instance(count, nodes, ready, states):
    spec = job_spec(count=count)
    entries = [entry(spec, i, node=n, state=states[i], report=states[i] != STARTING)
               for i, n in enumerate(nodes)]
    r = reconcile(job_record(spec), spec, entries, ready, now=0)
    # apply the result the way the controller does
    by_id = {e.id: e.record for e in entries}
    for rec in (*r.stop, *r.lost, *r.unassign, *r.create):
        by_id[rec.id] = rec
    live = [x for x in by_id.values() if x.desired == "run" and not x.lost]
    slots = sorted((x.group, x.index) for x in live)
    assert slots == [("web", i) for i in range(count)]
    assert len({x.id for x in by_id.values()}) == len(by_id)
    # and reconciling again changes nothing more (idempotent)
    again = [Entry(rec, 1, next((e.state for e in entries if e.id == rec.id), None)) for rec in by_id.values()]
    again = [replace(e, state=None) if e.record.id not in {x.id for x in entries} else e for e in again]
    assert reconcile(job_record(spec), spec, again, ready, now=0).empty


# --- system jobs: one instance of each group on every eligible node, pinned to it ----------------

def system_spec(cpu="250m", **group):
    return validate({"name": "shop", "type": "system", "groups": [
        {"name": "web", "resources": {"cpu": cpu, "memory": "64Mi"}, **group}]})


def pinned(spec, index, node, state=RUNNING, gen=1, **record):
    e = entry(spec, index, node=node, state=state, gen=gen)
    return Entry(replace(e.record, pinned=node, **record), 1, e.state)


def system(spec, entries, ready, eligible=None, now=0.0):
    eligible = {"web": set(ready) if eligible is None else set(eligible)}
    return reconcile(job_record(spec), spec, entries, set(ready), now=now, eligible=eligible)


def test_a_system_job_runs_one_instance_pinned_to_each_eligible_node():
    spec = system_spec()
    r = system(spec, [], ready={"a", "b", "c", "d"}, eligible={"a", "b", "c"})    # d fails a constraint
    assert [(c.id, c.pinned, c.node) for c in r.create] == [
        ("shop.web.0-1", "a", ""), ("shop.web.1-1", "b", ""), ("shop.web.2-1", "c", "")]
    assert not (r.stop or r.lost or r.unassign)


def test_a_node_that_joins_gets_one_instance_and_the_others_keep_theirs():
    spec = system_spec()
    entries = [pinned(spec, i, n) for i, n in enumerate("abc")]
    assert system(spec, entries, ready="abc").empty
    r = system(spec, entries, ready="abcd")
    assert [(c.id, c.pinned) for c in r.create] == [("shop.web.3-1", "d")] and not r.stop


def test_a_node_that_leaves_loses_its_instance_which_is_replaced_nowhere_until_it_returns():
    spec = system_spec()
    entries = [pinned(spec, i, n) for i, n in enumerate("abc")]
    r = system(spec, entries, ready="ac")
    assert [x.id for x in r.lost] == ["shop.web.1-1"] and r.lost[0].lost
    assert not r.create and not r.stop
    # back: a new instance (next generation of the free slot), pinned to it again
    after = [entries[0], Entry(r.lost[0], 2, None), entries[2]]
    assert system(spec, after, ready="ac").empty
    r = system(spec, after, ready="abc")
    assert [(c.id, c.pinned) for c in r.create] == [("shop.web.1-2", "b")]


def test_slots_are_stable_per_node_and_a_new_node_takes_the_lowest_free_one():
    spec = system_spec()
    entries = [pinned(spec, 0, "c"), pinned(spec, 2, "a"), pinned(spec, 4, "e")]
    r = system(spec, entries, ready="abcdef")
    assert not r.stop
    assert sorted((c.pinned, c.index) for c in r.create) == [("b", 1), ("d", 3), ("f", 5)]


def test_a_failed_system_instance_stays_failed_on_its_node():
    spec = system_spec(reschedule={"attempts": 3, "interval": "1h", "delay": "1s"})   # ignored for system
    failed = pinned(spec, 0, "a", state=FAILED)
    assert system(spec, [failed, pinned(spec, 1, "b")], ready="abc", eligible="ab", now=100.0).empty


def test_a_changed_group_is_rolled_out_on_the_same_node_in_the_same_slot():
    old, new = system_spec(cpu="250m"), system_spec(cpu="500m")
    entries = [pinned(old, 0, "a"), pinned(old, 1, "b"), pinned(old, 2, "c")]
    r = system(new, entries, ready="abc")             # no update block: max_parallel 1, as a service's
    assert [s.id for s in r.stop] == ["shop.web.0-1"]
    assert [(c.id, c.pinned, c.replaces) for c in r.create] == [("shop.web.0-2", "a", "shop.web.0-1")]
    assert r.deployment.groups["web"]["desired"] == 3 and r.deployment.state == "running"
    wide = system_spec(cpu="500m", update={"max_parallel": 2})
    r = system(wide, entries, ready="abc")
    assert [(c.id, c.pinned) for c in r.create] == [("shop.web.0-2", "a"), ("shop.web.1-2", "b")]


def test_a_system_job_refuses_canaries():
    with pytest.raises(SpecError, match=r"groups\[0\]\.update\.canary: a system job has one instance per node"):
        system_spec(update={"canary": 1})


def test_a_node_no_longer_eligible_has_its_instance_stopped_and_count_0_runs_none():
    spec = system_spec()
    waiting = Entry(replace(pinned(spec, 2, "c").record, node=""), 1, None)      # pending, pinned to c
    entries = [pinned(spec, 0, "a"), pinned(spec, 1, "b"), waiting]
    r = system(spec, entries, ready="abc", eligible="a")      # b's labels changed; c's pending one too
    assert sorted(s.id for s in r.stop) == ["shop.web.1-1", "shop.web.2-1"] and not r.create
    none = system_spec(count=0)
    r = system(none, [pinned(none, 0, "a")], ready="ab")
    assert [s.id for s in r.stop] == ["shop.web.0-1"] and not r.create


def test_an_unpinned_instance_from_before_keeps_running_where_it_is():
    spec = system_spec()
    r = system(spec, [entry(spec, 0, node="a")], ready="ab")      # written before `pinned` existed
    assert not r.stop and [(c.index, c.pinned) for c in r.create] == [(1, "b")]


@settings(max_examples=200, deadline=None)
@given(placed=st.lists(st.tuples(st.sampled_from("abcde"), st.sampled_from([RUNNING, FAILED, STARTING])),
                       max_size=6, unique_by=lambda t: t[0]),
       ready=st.sets(st.sampled_from("abcde")), ineligible=st.sets(st.sampled_from("abcde")))
def test_after_applying_the_result_every_eligible_node_has_exactly_one_live_instance(placed, ready, ineligible):
    spec = system_spec()
    entries = [pinned(spec, i, n, state=s) for i, (n, s) in enumerate(placed)]
    eligible = ready - ineligible
    r = system(spec, entries, ready=ready, eligible=eligible)
    by_id = {e.id: e.record for e in entries}
    for rec in (*r.stop, *r.lost, *r.unassign, *r.create):
        by_id[rec.id] = rec
    live = [x for x in by_id.values() if x.desired == "run" and not x.lost]
    assert sorted(x.pinned for x in live) == sorted(eligible)
    assert len({x.index for x in live}) == len(live) and len({x.id for x in by_id.values()}) == len(by_id)
    states = {e.id: e.state for e in entries}
    again = [Entry(rec, 1, states.get(rec.id)) for rec in by_id.values()]
    assert system(spec, again, ready=ready, eligible=eligible).empty


slot_entries = st.lists(st.tuples(st.sampled_from(["web", "db", "api-2"]), st.integers(0, 12), st.integers(1, 10**6)),
                        max_size=40, unique=True)


@settings(max_examples=200, deadline=None)
@given(job=st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True), slots=slot_entries)
def test_generation_of_reads_back_the_generation_of_any_instance_id(job, slots):
    for group, index, gen in slots:
        assert generation_of(instance_id(job, group, index, gen)) == gen


@settings(max_examples=200, deadline=None)
@given(slots=slot_entries, asked=st.lists(st.tuples(st.sampled_from(["web", "db", "api-2"]), st.integers(0, 14),
                                                     st.booleans()), max_size=20))
def test_generations_hand_out_the_slot_s_next_generation_and_count_up_as_they_are_taken(slots, asked):
    entries = [Entry(InstanceRecord(id=instance_id("shop", g, i, gen), job="shop", group=g, index=i,
                                    kind="container", version=1), 1) for g, i, gen in slots]
    latest: dict[tuple[str, int], int] = {}          # the highest generation of each slot, as parsed here
    for g, i, gen in slots:
        latest[(g, i)] = max(latest.get((g, i), 0), gen)
    generations = Generations(entries)
    for g, i, take in asked:
        expected = latest.get((g, i), 0) + 1
        assert generations.following(g, i) == expected          # asking takes nothing
        if take:
            assert generations.take(g, i) == expected
            latest[(g, i)] = expected


def test_generations_read_no_id_until_a_new_one_is_asked_for():
    spec = job_spec(count=2)
    read = []

    def entries():
        read.append(True)
        yield entry(spec, 0, gen=7)
    generations = Generations(entries())
    assert not read
    assert generations.following("web", 0) == 8 and read == [True]
    assert generations.following("web", 1) == 1 and read == [True]       # read once


def test_a_look_that_makes_no_new_instance_parses_no_id():
    """A converged job's look needs no generation: its ids are not parsed (an id the scheduler
    never writes, with no generation, shows it); a look that fills a slot does parse them."""
    spec = job_spec(count=2)
    odd = Entry(replace(entry(spec, 1).record, id="shop.web.1"), 1, StateRecord(id="shop.web.1", state=RUNNING))
    assert reconcile(job_record(spec), spec, [entry(spec, 0), odd], {"n1"}, now=0).empty
    with pytest.raises(ValueError):
        reconcile(job_record(job_spec(count=3)), job_spec(count=3), [entry(spec, 0), odd], {"n1"}, now=0)
