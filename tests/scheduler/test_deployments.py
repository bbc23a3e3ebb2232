"""Rolling deployments (issue 14), pure: the reconciler and scheduler/deployments.py driven through
whole rollouts by a small simulated cluster (stops take a tick, starts a tick, checks pass or
not), over generated counts, max_parallel and health, checking the contract at every tick: never
more than max_parallel slots without a running instance, nothing replaced twice, a good version
rolled out, a bad one failed with the old version still serving."""
from __future__ import annotations

from dataclasses import replace

from hypothesis import example, given, settings
from hypothesis import strategies as st

from packyard.policies import UpdatePolicy
from packyard.records import (
    FAILED,
    RUNNING,
    STOPPED,
    DeploymentRecord,
    InstanceRecord,
    JobRecord,
    StateRecord,
)
from packyard.spec import validate
from scheduler import deployments
from scheduler.reconciler import reconcile
from scheduler.state import Entry
from scheduler.versions import changes_what_runs


def spec_of(version: int, count: int, update: dict, check: bool = False):
    group = {"name": "web", "count": count, "resources": {"cpu": "100m", "memory": "16Mi"},
             "container": {"command": ["/bin/sleep", str(1000 + version)]}, "update": update}
    if check:
        group["check"] = {"type": "tcp", "port": 80}
    return validate({"name": "shop", "groups": [group]})


class World:
    """Instances as the reconciler sees them; a tick runs what it decided: stopped instances end,
    placed ones start (a replacement only once the instance it replaces has ended)."""

    def __init__(self, count: int, update: dict):
        self.now = 0.0
        self.nodes = {"n1"}                  # ready (everything runs on n1; more lets failures reschedule)
        self.entries: dict[str, Entry] = {}
        self.deployment: DeploymentRecord | None = None
        self.behaviour = "good"              # how the current version's instances behave
        self.replaced: list[str] = []
        self.version = 0
        self.submit(spec_of(1, count, update))
        for _ in range(12):
            self.tick()

    def submit(self, spec) -> None:
        self.version += 1
        deploy = changes_what_runs(getattr(self, "spec", None), spec)
        self.spec = spec
        self.job = JobRecord(name="shop", spec_json=spec.to_json(), version=self.version, deploy=deploy)

    def tick(self, dt: float = 1.0) -> None:
        self.now += dt
        r = reconcile(self.job, self.spec, list(self.entries.values()), self.nodes, self.now,
                      deployment=self.deployment)
        if r.deployment is not None:
            self.deployment = r.deployment
        for rec in r.stop:
            e = self.entries[rec.id]
            self.entries[rec.id] = Entry(rec, e.mod_revision + 1, e.state)
            if rec.id in self.replaced_now(r):
                self.replaced.append(rec.id)
        for rec in r.create:
            self.entries[rec.id] = Entry(rec, 1, None)
        self._run()

    def replaced_now(self, r) -> set[str]:
        return {c.replaces for c in r.create if c.replaces}

    def _run(self) -> None:
        for iid, e in list(self.entries.items()):
            rec, rep = e.record, e.state
            if rec.desired == "stop":
                if rep is None or rep.state != STOPPED:
                    self.entries[iid] = Entry(rec, e.mod_revision, StateRecord(iid, STOPPED))
                continue
            if not rec.node:
                old = self.entries.get(rec.replaces)
                if old is not None and (old.state is None or old.state.state != STOPPED):
                    continue                 # the placer waits for the old one to end
                rec = replace(rec, node="n1", placed_at=self.now)
                bad = rec.version == self.version and self.behaviour == "crash"
                health = "failing" if rec.version == self.version and self.behaviour == "unhealthy" else "passing"
                rep = (StateRecord(iid, FAILED, reason="exit status 1", restarts=1) if bad else
                       StateRecord(iid, RUNNING, started_at=self.now, updated_at=self.now, health=health))
                self.entries[iid] = Entry(rec, e.mod_revision + 1, rep)

    def serving(self) -> int:
        return sum(1 for e in self.entries.values()
                   if e.record.desired == "run" and e.state is not None and e.state.state == RUNNING)

    def live(self) -> list[InstanceRecord]:
        return [e.record for e in self.entries.values() if e.record.desired == "run"]


@settings(max_examples=40, deadline=None)
@given(count=st.integers(1, 8), max_parallel=st.integers(1, 4), min_healthy=st.sampled_from([0, 1, 2, 5]),
       check=st.booleans())
def test_a_good_version_rolls_out_never_below_count_minus_max_parallel(count, max_parallel, min_healthy, check):
    update = {"max_parallel": max_parallel, "min_healthy_time": f"{min_healthy}s"}
    w = World(count, update)
    assert w.serving() == count and w.deployment.version == 1 and w.deployment.state == "successful"
    w.submit(spec_of(2, count, update, check))
    for _ in range(200):
        w.tick()
        assert w.serving() >= count - max_parallel, (w.now, w.serving())
        if w.deployment is not None and w.deployment.state != "running":
            break
    assert w.deployment.state == "successful", w.deployment
    assert sorted(r.version for r in w.live()) == [2] * count and w.serving() == count
    assert len(w.replaced) == len(set(w.replaced)) == count             # each old one replaced once
    assert w.deployment.groups["web"] == {"desired": count, "placed": count, "healthy": count, "unhealthy": 0}


@settings(max_examples=30, deadline=None)
@given(count=st.integers(1, 8), max_parallel=st.integers(1, 3), how=st.sampled_from(["crash", "unhealthy"]))
def test_a_bad_version_fails_and_the_old_one_keeps_serving(count, max_parallel, how):
    update = {"max_parallel": max_parallel, "min_healthy_time": "1s", "healthy_deadline": "20s"}
    w = World(count, update)
    w.behaviour = how
    w.submit(spec_of(2, count, update, check=True))
    for _ in range(100):
        w.tick()
        if w.deployment.state != "running":
            break
    assert w.deployment.state == "failed" and "is unhealthy" in w.deployment.description, w.deployment
    old_serving = sum(1 for r in w.live() if r.version == 1)
    assert old_serving >= count - max_parallel
    for _ in range(30):                       # and nothing more is replaced
        w.tick()
    assert sum(1 for r in w.live() if r.version == 1) == old_serving


def test_no_progress_within_the_deadline_fails_the_deployment():
    update = {"min_healthy_time": "1s", "healthy_deadline": "1m", "progress_deadline": "2m"}
    w = World(2, update)
    w.submit(spec_of(2, 2, update))
    w.tick()
    stuck = next(e for e in w.entries.values() if e.record.version == 2)
    # its start never confirmed: not healthy, not failed
    w.entries[stuck.id] = Entry(replace(stuck.record, node="n1"), 2, StateRecord(stuck.id, "starting"))
    w._run = lambda: None
    for _ in range(70):
        w.tick(2.0)
        if w.deployment.state != "running":
            break
    assert w.deployment.state == "failed"
    assert "not healthy within 1m" in w.deployment.description


def test_a_first_submit_has_a_deployment_and_a_count_only_change_none():
    w = World(3, {"min_healthy_time": "1s"})
    assert (w.deployment.version, w.deployment.state) == (1, "successful")
    w.submit(spec_of(1, 5, {"min_healthy_time": "1s"}))
    w.tick()
    assert w.deployment.version == 1 and len(w.live()) == 5


@settings(max_examples=20, deadline=None)
@given(count=st.integers(1, 5), more=st.integers(-1, 3), after=st.integers(0, 4))
def test_a_count_only_change_mid_rollout_carries_it_to_its_end(count, more, after):
    """A count-only version submitted while the first one still rolls out: that rollout goes on
    as the new version's and ends (it was left `running` for ever, the version never stable)."""
    update = {"min_healthy_time": "20s"}
    w = World(count, update)                          # 12 ticks: running, not yet healthy
    assert (w.deployment.version, w.deployment.state) == (1, "running")
    for _ in range(after):
        w.tick()
    new_count = max(1, count + more)
    w.submit(spec_of(1, new_count, update))
    assert not w.job.deploy
    for _ in range(60):
        w.tick()
        if w.deployment.state != "running":
            break
    assert (w.deployment.version, w.deployment.target, w.deployment.state) == (2, 2, "successful"), w.deployment
    assert w.deployment.groups["web"]["healthy"] == new_count == len(w.live())
    assert w.replaced == []                           # the same instances, nothing replaced


def test_instance_health():
    policy = UpdatePolicy(min_healthy_time=10.0, healthy_deadline=60.0)
    rec = InstanceRecord(id="a.b.0-1", job="a", group="b", index=0, kind="container", version=1, node="n1")

    def health(state, now=100.0, since=50.0, check=False):
        return deployments.instance_health(Entry(rec, 1, state), policy, check, since, now)[0]
    assert health(StateRecord("x", RUNNING, started_at=95.0)) == "waiting"
    assert health(StateRecord("x", RUNNING, started_at=90.0)) == "healthy"
    assert health(StateRecord("x", RUNNING, started_at=90.0), check=True) == "waiting"     # check unknown
    assert health(StateRecord("x", RUNNING, started_at=90.0, health="passing"), check=True) == "healthy"
    assert health(StateRecord("x", RUNNING, started_at=99.0, restarts=1)) == "unhealthy"
    assert health(StateRecord("x", FAILED)) == "unhealthy"
    assert health(None, now=111.0) == "unhealthy" and health(None, now=109.0) == "waiting"


@settings(max_examples=30, deadline=None)
@given(count=st.integers(1, 6), canary=st.integers(1, 3), max_parallel=st.integers(1, 3), auto=st.booleans())
def test_canaries_run_beside_the_old_ones_until_promoted(count, canary, max_parallel, auto):
    update = {"max_parallel": max_parallel, "min_healthy_time": "1s", "canary": canary,
              **({"auto_promote": True} if auto else {})}
    w = World(count, update)
    w.submit(spec_of(2, count, update))
    for _ in range(20):
        canaries = sorted(r.id for r in w.live() if r.version == 2)
        w.tick()
        assert sum(1 for r in w.live() if r.version == 1) == count or w.deployment.promoted
        if w.deployment.state == "awaiting promotion" or w.deployment.promoted:
            break
    if not auto:
        canaries = sorted(r.id for r in w.live() if r.version == 2)
    assert len(canaries) == min(canary, count)                # beside every old instance, nothing stopped
    if auto:
        # the look that promotes rolls on at once: the canaries' old instances go, and (if any
        # slot is left) max_parallel more are replaced, not a look later
        old = sum(1 for r in w.live() if r.version == 1)
        assert old == max(0, count - len(canaries) - max_parallel), [(r.id, r.version) for r in w.live()]
    if not auto:
        assert w.deployment.state == "awaiting promotion" and not w.deployment.promoted
        for _ in range(20):                                      # it waits for a person, without failing
            w.tick(5.0)
        assert w.deployment.state == "awaiting promotion"
        w.deployment = replace(w.deployment, promoted=True, state="running")
    for _ in range(200):
        w.tick()
        assert w.serving() >= count - max_parallel
        if w.deployment.state != "running":
            break
    assert w.deployment.state == "successful", w.deployment
    live = w.live()
    assert len(live) == count and {r.version for r in live} == {2}
    assert set(canaries) <= {r.id for r in live}                 # the canaries kept their slots


@settings(max_examples=25, deadline=None)
@given(count=st.integers(2, 8), max_parallel=st.integers(1, 3), after=st.integers(1, 6))
def test_a_new_version_mid_rollout_supersedes_it(count, max_parallel, after):
    update = {"max_parallel": max_parallel, "min_healthy_time": "1s"}
    w = World(count, update)
    w.submit(spec_of(2, count, update))
    for _ in range(after):
        w.tick()
    w.submit(spec_of(3, count, update))
    for _ in range(300):
        w.tick()
        assert w.serving() >= count - max_parallel
        if w.deployment.version == 3 and w.deployment.state != "running":
            break
    assert w.deployment.state == "successful"
    assert sorted(r.version for r in w.live()) == [3] * count
    assert len(w.replaced) == len(set(w.replaced))                       # nothing replaced twice


def test_a_new_instance_failing_mid_rollout_fails_it_before_any_reschedule():
    update = {"min_healthy_time": "1s"}
    w = World(2, {**update})
    w.nodes = {"n1", "n2"}
    w.behaviour = "crash"
    w.submit(spec_of(2, 2, {**update, "max_parallel": 1}))
    created = []
    for _ in range(10):
        before = set(w.entries)
        w.tick()
        created += sorted(set(w.entries) - before)
        if w.deployment.state == "failed":
            break
    assert w.deployment.state == "failed" and created == ["shop.web.0-2"]   # no reschedule meanwhile
    w.tick()                                 # the rollout over, the failure is rescheduled as usual
    assert "shop.web.0-3" in w.entries


@settings(max_examples=30, deadline=None)
@given(count=st.integers(1, 6), max_parallel=st.integers(1, 3), min_healthy=st.sampled_from([0, 1, 2, 5]),
       canary=st.integers(0, 2))
def test_nothing_changes_before_the_time_a_rollout_says_it_wakes(count, max_parallel, min_healthy, canary):
    """`wake_at` is when a rollout may next move on time alone: looked at again with nothing new
    at any moment before it, it decides nothing (so the controller need not look)."""
    update = {"max_parallel": max_parallel, "min_healthy_time": f"{min_healthy}s",
              "healthy_deadline": "30s", "progress_deadline": "40s"}
    if canary:
        update |= {"canary": canary, "auto_promote": True}
    w = World(count, update)
    w.submit(spec_of(2, count, update))
    for _ in range(200):
        w.tick(0.5)
        entries = list(w.entries.values())
        now = reconcile(w.job, w.spec, entries, w.nodes, w.now, deployment=w.deployment)
        dep = now.deployment or w.deployment
        if not dep.rolling:
            assert now.wake_at is None
            break
        assert now.wake_at is not None and now.wake_at > w.now
        for t in (w.now + (now.wake_at - w.now) / 2, now.wake_at - 1e-6):
            later = reconcile(w.job, w.spec, entries, w.nodes, t, deployment=dep)
            # the same decisions as at w.now (not yet applied here), the deployment as it was
            assert later.deployment is None and later.wake_at == now.wake_at, (w.now, t, later)
            assert [(r.id, r.desired) for r in later.create + later.stop + later.unassign] == \
                [(r.id, r.desired) for r in now.create + now.stop + now.unassign], (w.now, t)
    assert dep.state == "successful", dep


def test_a_report_matters_once_a_first_run_has_served_min_healthy_time_and_anything_else_at_once():
    running = StateRecord("shop.web.0-2", RUNNING, started_at=100.0, updated_at=101.0)
    assert deployments.report_matters_at(running, 10.0, now=101.0) == 110.0
    assert deployments.report_matters_at(running, 10.0, now=120.0) == 120.0
    assert deployments.report_matters_at(replace(running, restarts=1), 10.0, now=101.0) == 101.0
    assert deployments.report_matters_at(StateRecord("shop.web.0-2", STOPPED), 10.0, now=101.0) == 101.0
    assert deployments.report_matters_at(None, 10.0, now=101.0) == 101.0


quarter = st.integers(0, 400).map(lambda n: n / 4)       # times on a quarter-second grid


@settings(max_examples=300, deadline=None)
@given(state=st.sampled_from([None, RUNNING, RUNNING, "starting", FAILED, STOPPED]), restarts=st.sampled_from([0, 0, 1]),
       health=st.sampled_from(["", "passing", "failing"]), started=quarter, since=quarter, later=quarter,
       min_healthy=st.sampled_from([0.0, 1.0, 5.0, 10.0]), deadline=st.sampled_from([20.0, 60.0]), check=st.booleans())
@example(state=None, restarts=0, health="", started=0.0, since=0.0, later=80.0, min_healthy=1.0, deadline=20.0,
         check=False)                                        # now on the deadline: at is the next float
def test_judge_says_waiting_until_the_time_it_gives_and_something_moves_at_it(
        state, restarts, health, started, since, later, min_healthy, deadline, check):
    rep = None if state is None else StateRecord("shop.web.0-2", state, started_at=started, restarts=restarts,
                                                 health=health)
    policy = UpdatePolicy(min_healthy_time=min_healthy, healthy_deadline=deadline)
    now = since + later / 4
    verdict, why, at = deployments.judge(rep, policy, check, since, now)
    rec = InstanceRecord(id="shop.web.0-2", job="shop", group="web", index=0, kind="container", version=2)
    assert deployments.instance_health(Entry(rec, 1, rep), policy, check, since, now) == (verdict, why)
    if verdict != "waiting":
        assert at is None
        return
    assert at >= now
    # (at may be the float just after now: a point between them rounds to one of the two)
    for t in (now, now + (at - now) / 2, now + (at - now) * 0.99):
        assert t >= at or deployments.judge(rep, policy, check, since, t)[0] == "waiting", t
    then = deployments.judge(rep, policy, check, since, at)
    assert then[0] != "waiting" or then[2] > at        # moved on, or at least its next time did


def old_and_new(draw_slots, count):
    """Old instances (0-2 copies a slot, each running or not) and new ones (some slots; running,
    some already seen healthy) of one group of `count` slots."""
    old, new, healthy = [], [], []
    for index, (copies, new_state) in enumerate(draw_slots[:count]):
        for n, serving in enumerate(copies):
            rec = InstanceRecord(id=f"shop.web.{index}-{n + 1}", job="shop", group="web", index=index,
                                 kind="container", version=1, node="n1")
            old.append(Entry(rec, 1, StateRecord(rec.id, RUNNING if serving else STOPPED, started_at=0.0)))
        if new_state is not None:
            rec = InstanceRecord(id=f"shop.web.{index}-9", job="shop", group="web", index=index,
                                 kind="container", version=2, node="n1", created_at=95.0)
            new.append(Entry(rec, 1, StateRecord(rec.id, RUNNING, started_at=99.0)))
            if new_state == "healthy":
                healthy.append(rec.id)
    return old, new, healthy


@settings(max_examples=200, deadline=None)
@given(slots=st.lists(st.tuples(st.lists(st.booleans(), max_size=2), st.sampled_from([None, None, "waiting", "healthy"])),
                      min_size=1, max_size=12),
       max_parallel=st.integers(1, 4), shuffle=st.randoms(use_true_random=False))
def test_a_step_keeps_one_old_instance_a_slot_and_replaces_idle_ones_then_serving_ones_in_slot_order(
        slots, max_parallel, shuffle):
    count = len(slots)
    old, new, healthy = old_and_new(slots, count)
    shuffle.shuffle(old)
    policy = UpdatePolicy(max_parallel=max_parallel, min_healthy_time=10.0, healthy_deadline=60.0,
                          progress_deadline=600.0)
    dep = DeploymentRecord(job="shop", version=2, target=2, started_at=90.0, progress_at=99.0, healthy=healthy)
    step = deployments.step("shop", 2, True, [deployments.GroupRollout("web", count, policy, False, old, new)],
                            dep, now=100.0)
    new_slots = {e.record.index for e in new}
    serving = {e.id for e in old if e.state.state == RUNNING}
    kept = [e for e in old if e not in step.retire]
    assert {e.id for e in step.retire} >= {e.id for e in old if e.record.index in new_slots}   # beside a new one
    assert sorted(e.record.index for e in kept) == sorted({e.record.index for e in old} - new_slots)  # one a slot
    for e in kept:                     # a running copy is the one kept
        assert e.id in serving or not any(o.id in serving for o in old if o.record.index == e.record.index)
    idle = sorted((e for e in kept if e.id not in serving), key=lambda e: e.record.index)
    running = sorted((e for e in kept if e.id in serving), key=lambda e: e.record.index)
    in_flight = len(new) - len(healthy)
    assert list(step.replace) == idle + running[:max(0, max_parallel - in_flight)]
