"""A look at a rollout on time alone that judges only the instances whose time came (issue 12:
scheduler/reconciler.py `look_again`, scheduler/deployments.py `rejudge`, kept fed by
scheduler/rollout_timer.py as the controller feeds it): over generated first deployments (groups,
counts, min_healthy_time, deadlines, checks) and generated histories (instances placed, reported
starting, running, healthy, restarted, failed, time passing), every narrow look must leave what
`reconcile` of the whole job leaves at that moment — the same deployment record, the same wake —
and decide nothing else; where it cannot tell, it must say so (None), never guess."""
from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from packyard.records import FAILED, RUNNING, STARTING, InstanceRecord, JobRecord, StateRecord
from packyard.spec import validate
from scheduler import deployments
from scheduler.reconciler import Config, group_hash, instance_id, look_again, reconcile
from scheduler.rollout_timer import RolloutTimer
from scheduler.state import Entry

CONFIG = Config(confirm_timeout=15.0)
NODES = {"n1", "n2"}


def spec_of(counts: list[int], update: dict, check: bool):
    groups = []
    for n, count in enumerate(counts):
        g = {"name": f"g{n}", "count": count, "resources": {"cpu": "100m", "memory": "16Mi"},
             "container": {"command": ["/bin/sleep", "1000"]}, "update": update}
        if check:
            g["check"] = {"type": "tcp", "port": 80}
        groups.append(g)
    return validate({"name": "shop", "groups": groups})


class Cluster:
    """One job's instances as the cache holds them, the deployment record as etcd holds it, and a
    RolloutTimer told of every change as the controller tells it (`_on_events`, `_heard_report`)."""

    def __init__(self, spec, min_healthy: float):
        self.spec, self.now, self.min_healthy = spec, 0.0, min_healthy
        self.job = JobRecord(name="shop", spec_json=spec.to_json(), version=1, deploy=True)
        self.entries: dict[str, Entry] = {}
        for g in spec.groups:
            for i in range(g.count):
                rec = InstanceRecord(id=instance_id("shop", g.name, i, 1), job="shop", group=g.name, index=i,
                                     kind="container", version=1, ghash=group_hash(g))
                self.entries[rec.id] = Entry(rec, 1)
        self.deployment = None
        self.timer = RolloutTimer(tick=1.0)
        self.narrow_looks = 0
        self.early = 0                         # narrow looks that woke earlier than a whole one

    def full(self):
        return reconcile(self.job, self.spec, sorted(self.entries.values(), key=lambda e: e.id), NODES, self.now,
                         CONFIG, deployment=self.deployment)

    def place(self, iid: str, node: str) -> None:
        e = self.entries[iid]
        self.entries[iid] = Entry(replace(e.record, node=node, placed_at=self.now), e.mod_revision + 1, e.state)
        self.timer.changed("shop", iid, self.now)

    def report(self, iid: str, rep: StateRecord) -> None:
        self.entries[iid].state = rep
        self.timer.heard("shop", deployments.report_matters_at(rep, self.min_healthy, self.now), iid)

    def overdue(self) -> bool:
        """What dispatch.Dispatcher.scan marks for a whole look: placed, unconfirmed, overdue."""
        return any(e.record.node and e.state is None and self.now - e.record.placed_at > CONFIG.confirm_timeout
                   for e in self.entries.values())

    def look(self):
        """The look the controller makes now, checked against the whole one; then written."""
        whole = self.full()
        narrow = self.timer.narrow("shop", self.deployment, self.now) if self.deployment is not None else None
        result = None
        if narrow is not None and not self.overdue():
            due, rest_at = narrow
            result = look_again(self.job, self.spec, [(self.entries[iid], placed) for iid, placed in due], NODES,
                                self.now, self.deployment, rest_at, CONFIG)
        if result is not None:
            self.narrow_looks += 1
            assert (result.deployment or self.deployment) == (whole.deployment or self.deployment), self.now
            # the same wake, or an earlier one (a report lowers an instance's time, never raises
            # it: early is a wasted look, late a missed deadline)
            assert (result.wake_at is None) == (whole.wake_at is None), (self.now, result, whole)
            assert result.wake_at is None or self.now <= result.wake_at <= whole.wake_at, (self.now, result, whole)
            self.early += result.wake_at != whole.wake_at
            assert result.empty == (whole.deployment is None) and not (whole.create or whole.stop or whole.unassign)
            self.timer.looked_again("shop", result.wake_at, result.deployment or self.deployment, result.waiting)
        else:
            if narrow is not None and not self.overdue():
                # only a look that finds an instance unhealthy may not be narrow
                assert whole.deployment is not None and whole.deployment.state == "failed", whole
            result = whole
            self.timer.looked("shop", whole.wake_at, whole.deployment or self.deployment, whole.waiting)
        self.deployment = result.deployment or self.deployment
        return result


@st.composite
def histories(draw):
    counts = draw(st.lists(st.integers(1, 12), min_size=1, max_size=2))
    min_healthy = draw(st.sampled_from([0.0, 1.0, 5.0, 10.0]))
    update = {"max_parallel": draw(st.integers(1, 3)), "min_healthy_time": f"{min_healthy:g}s",
              **draw(st.sampled_from([{"healthy_deadline": "20s", "progress_deadline": "25s"},
                                      {"healthy_deadline": "20s", "progress_deadline": "10m"},
                                      {"healthy_deadline": "60s", "progress_deadline": "10m"}]))}
    check = draw(st.booleans())
    steps = draw(st.lists(st.tuples(
        st.sampled_from([0.0, 0.5, 1.0, 2.5, 4.0, 9.0]),                   # time passing
        st.lists(st.tuples(st.integers(0, 30),                               # an instance (mod count)
                           st.sampled_from(["place", "place", "start", "run", "run", "pass", "restart", "fail"]),
                           st.sampled_from([0.0, 0.5, 3.0]))),               # ran since how long before now
    ), min_size=1, max_size=30))
    return counts, min_healthy, update, check, steps


@settings(max_examples=300, deadline=None)
@given(histories())
def test_a_narrow_look_leaves_what_a_whole_look_leaves(history):
    counts, min_healthy, update, check, steps = history
    c = Cluster(spec_of(counts, update, check), min_healthy)
    c.look()                                   # the submit's look: every instance waits to be placed
    ids = sorted(c.entries)
    for dt, events in steps:
        c.now += dt
        for n, what, ago in events:
            iid = ids[n % len(ids)]
            e = c.entries[iid]
            if what == "place":
                if not e.record.node:
                    c.place(iid, sorted(NODES)[n % 2])
                continue
            if not e.record.node:
                continue
            started = max(e.record.placed_at, c.now - ago)
            rep = {"start": StateRecord(iid, STARTING, updated_at=c.now),
                   "run": StateRecord(iid, RUNNING, started_at=started, updated_at=c.now,
                                      health=e.state.health if e.state else ""),
                   "pass": StateRecord(iid, RUNNING, started_at=e.state.started_at if e.state else started,
                                       updated_at=c.now, health="passing"),
                   "restart": StateRecord(iid, RUNNING, started_at=c.now, updated_at=c.now, restarts=1),
                   "fail": StateRecord(iid, FAILED, updated_at=c.now, reason="exit status 1")}[what]
            c.report(iid, rep)
        r = c.look()
        if not c.deployment.rolling:
            assert r.wake_at is None
            return
    # then the rest placed and run, and time passing, to the rollout's end (most succeed)
    for iid in ids:
        if not c.entries[iid].record.node:
            c.place(iid, "n1")
        if c.entries[iid].state is None or c.entries[iid].state.state != RUNNING:
            c.report(iid, StateRecord(iid, RUNNING, started_at=c.now, updated_at=c.now, health="passing"))
    c.look()
    for _ in range(100):
        if not c.deployment.rolling:
            break
        c.now += 1.0
        c.look()
    assert not c.deployment.rolling


def test_a_rollout_of_many_is_looked_at_narrowly_from_its_second_look_on():
    """Not a test that cannot fail on a history that never narrows: a plain first deployment,
    placed, run and served, is looked at whole once (the submit's), then narrowly to its end."""
    c = Cluster(spec_of([40], {"min_healthy_time": "5s"}, False), 5.0)
    c.look()
    for iid in sorted(c.entries):
        c.place(iid, "n1")
    c.now += 1
    c.look()
    for iid in sorted(c.entries):
        c.report(iid, StateRecord(iid, RUNNING, started_at=c.now, updated_at=c.now))
    while c.deployment.rolling:
        c.now += 1
        c.look()
    assert c.deployment.state == "successful" and c.deployment.groups["g0"]["healthy"] == 40
    assert c.narrow_looks >= 6 and c.early == 0


def test_a_record_changed_of_an_instance_the_last_look_did_not_find_waiting_makes_the_next_look_whole():
    timer = RolloutTimer(tick=1.0)
    dep = object()                             # the record as the look left it (compared, not read)
    timer.looked("shop", 20.0, dep, {"shop.g0.0-1": (20.0, False), "shop.g0.1-1": (30.0, True)})
    assert timer.narrow("shop", dep, 10.0) == ([], 20.0)
    timer.heard("shop", 12.0, "shop.g0.1-1")   # running since 2 s, min_healthy_time 10 s
    timer.heard("shop", 40.0, "shop.g0.0-1")   # one that matters later moves nothing
    assert timer.narrow("shop", dep, 12.0) == ([("shop.g0.1-1", True)], 20.0)
    timer.looked_again("shop", 12.5, dep, {"shop.g0.1-1": (12.5, True)})    # judged: not yet
    timer.changed("shop", "shop.g0.0-1", 13.0)  # placed: judged again at once
    assert timer.narrow("shop", object(), 13.0) is None    # another deployment record: whole
    assert timer.narrow("shop", dep, 13.0) == ([("shop.g0.1-1", True), ("shop.g0.0-1", False)], None)
    timer.looked_again("shop", 14.0, dep, {"shop.g0.0-1": (14.0, True)})
    timer.changed("shop", "shop.g0.7-1", 14.0)  # one it did not find waiting (new, or seen healthy)
    assert timer.narrow("shop", dep, 14.0) is None


@settings(max_examples=200, deadline=None)
@given(times=st.lists(st.tuples(st.integers(0, 40), st.sampled_from([0.0, 1.5, 3.0, 7.0, 9.0])), min_size=1,
                      max_size=60),
       lowered=st.lists(st.tuples(st.integers(0, 40), st.sampled_from([0.5, 2.0, 4.0, 8.0])), max_size=30),
       looks=st.lists(st.sampled_from([1.0, 2.5, 5.0, 8.5, 10.0]), min_size=1, max_size=6))
def test_a_narrow_look_is_handed_exactly_those_whose_time_came(times, lowered, looks):
    """Whatever the times and how they were lowered since: each instance handed over once, when
    its time came, and the rest's earliest time given; those put back wait on."""
    timer = RolloutTimer(tick=1.0)
    dep = object()
    waiting = {f"shop.g0.{n}-1": (at, n % 2 == 0) for n, at in times}
    timer.looked("shop", None, dep, waiting)
    expect = dict(waiting)
    for n, at in lowered:
        timer.heard("shop", at, f"shop.g0.{n}-1")
        iid = f"shop.g0.{n}-1"
        if iid in expect and at < expect[iid][0]:
            expect[iid] = (at, expect[iid][1])
    for now in sorted(looks):
        due, rest_at = timer.narrow("shop", dep, now)
        assert sorted(due) == sorted((iid, p) for iid, (at, p) in expect.items() if at <= now)
        for iid, _ in due:
            del expect[iid]
        assert rest_at == min((at for at, _ in expect.values()), default=None)
        back = {iid: (now + 2.0, p) for iid, p in due[::2]}       # half of them wait on
        expect.update(back)
        timer.looked_again("shop", None, dep, back)
