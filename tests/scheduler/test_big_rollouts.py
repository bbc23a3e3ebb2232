"""Healthy once is healthy for good, in rollouts of more instances than a capped list of ids held
(4,096): scheduler/deployments.py `step` driven look after look over generated rollouts of
thousands of instances (their slots, generations and the order they turn healthy drawn from a
seed), the deployment record going through records.dumps/loads between looks as etcd keeps it."""
from __future__ import annotations

import random

import orjson
import pytest

from packyard import records
from packyard.policies import UpdatePolicy
from packyard.records import RUNNING, DeploymentRecord, InstanceRecord, StateRecord
from scheduler import deployments
from scheduler.reconciler import instance_id
from scheduler.state import Entry

POLICY = UpdatePolicy(max_parallel=50, min_healthy_time=10.0, healthy_deadline=100_000.0, progress_deadline=600.0)
START = 100.0


class Rollout:
    """`n` new instances of group web (generation 2 mostly; some slots made anew, generations 3,
    12, 22: "-2" must not match "-12") each turning healthy at its own time in [START, START +
    span], and `old` instances of the version before in the slots above them, still serving (so
    the rollout goes on: nothing here carries its replacements out)."""

    def __init__(self, seed: int, n: int, old: int = 20, span: float = 200.0):
        rng = random.Random(seed)
        self.new: dict[int, Entry] = {}
        self.healthy_at: dict[int, float] = {}
        for index in range(n):
            generation = rng.choices([2, 3, 12, 22], weights=[90, 4, 3, 3])[0]
            rec = InstanceRecord(id=instance_id("shop", "web", index, generation), job="shop", group="web",
                                 index=index, kind="container", version=2, node="n1", created_at=START - 20)
            at = START + rng.uniform(0, span)
            self.healthy_at[index] = at
            # running since min_healthy_time before it turns healthy
            self.new[index] = Entry(rec, 1, StateRecord(rec.id, RUNNING, started_at=at - POLICY.min_healthy_time,
                                                        updated_at=at - POLICY.min_healthy_time))
        self.old = []
        for index in range(n, n + old):
            rec = InstanceRecord(id=instance_id("shop", "web", index, 1), job="shop", group="web", index=index,
                                 kind="container", version=1, node="n1")
            self.old.append(Entry(rec, 1, StateRecord(rec.id, RUNNING, started_at=0.0)))
        self.count = n + old
        self.deployment: DeploymentRecord | None = None
        self.end = START + span

    def look(self, now: float) -> deployments.Step:
        group = deployments.GroupRollout("web", self.count, POLICY, False, self.old, list(self.new.values()))
        step = deployments.step("shop", 2, True, [group], self.deployment, now)
        if step.deployment is not None:            # written to etcd, read back
            self.deployment = records.loads(DeploymentRecord, records.dumps(step.deployment))
        return step

    def roll(self, every: float = 5.0) -> float:
        """Looks from START until every new instance turned healthy; the time of the last one."""
        now = START
        while now <= self.end + every:
            self.look(now)
            now += every
        return now - every

    def restart(self, index: int, at: float) -> None:
        e = self.new[index]
        self.new[index] = Entry(e.record, e.mod_revision + 1,
                                StateRecord(e.id, RUNNING, started_at=at, updated_at=at, restarts=1))

    def first_healthy(self, k: int) -> list[int]:
        """The slots of the `k` instances that turned healthy first."""
        return sorted(self.healthy_at, key=self.healthy_at.__getitem__)[:k]


CASES = [(1, 4_500), (2, 10_000), (3, 7_777)]


@pytest.mark.parametrize("seed,n", CASES)
def test_every_instance_healthy_once_leaves_the_record_and_progress_at_as_they_are(seed, n):
    r = Rollout(seed, n)
    last = r.roll()
    dep = r.deployment
    assert dep.state == "running" and dep.groups["web"]["healthy"] == n
    # the look that found the last one healthy moved progress_at; none since
    assert dep.progress_at == min(t for t in _look_times(last) if t >= max(r.healthy_at.values()))
    for k in range(1, 6):
        step = r.look(last + 7.0 * k)
        assert step.deployment is None, (k, step.deployment and step.deployment.progress_at)
    assert r.deployment is dep


@pytest.mark.parametrize("seed,n", CASES)
def test_no_instance_turning_healthy_for_progress_deadline_fails_the_rollout(seed, n):
    r = Rollout(seed, n)
    r.roll()
    progress_at = r.deployment.progress_at           # the look that found the last one healthy
    assert progress_at < max(r.healthy_at.values()) + 5.0
    r.look(progress_at + POLICY.progress_deadline)        # not past it yet
    assert r.deployment.state == "running", r.deployment.description
    step = r.look(progress_at + POLICY.progress_deadline + 1.0)
    assert r.deployment.state == "failed" and "progress_deadline" in r.deployment.description, r.deployment
    assert step.replace == ()


@pytest.mark.parametrize("seed,n", CASES)
def test_an_instance_healthy_long_ago_that_restarts_does_not_fail_the_rollout(seed, n):
    r = Rollout(seed, n)
    last = r.roll()
    rng = random.Random(seed)
    # some of every age (a list of the last 4,096 ids forgot most of the early ones)
    early = rng.sample(r.first_healthy(n - 4096), 3) + rng.sample(sorted(r.new), 50)
    for index in early:
        r.restart(index, last + 1.0)
    step = r.look(last + 2.0)
    assert r.deployment.state == "running", r.deployment.description
    assert r.deployment.groups["web"]["healthy"] == n
    assert step.replace                                # it goes on replacing the old ones
    # while the same instance, restarted before it ever turned healthy, fails it
    fresh = Rollout(seed, n)
    fresh.restart(early[0], START)
    fresh.roll()
    assert fresh.deployment.state == "failed"
    assert f"{fresh.new[early[0]].id} is unhealthy" in fresh.deployment.description


@pytest.mark.parametrize("seed,n", CASES)
def test_a_record_of_the_earlier_form_its_ids_is_read_and_kept_whole(seed, n):
    """A record written before (a plain list of up to 4,096 ids): those instances stay healthy for
    good though they restarted since, and so do the ones found healthy after, look after look."""
    r = Rollout(seed, n)
    rng = random.Random(seed)
    then = sorted(rng.sample(sorted(r.new), 4096))
    raw = orjson.dumps({"job": "shop", "version": 2, "target": 2, "started_at": START - 20,
                                "progress_at": START, "description": "rolling out version 2",
                                "healthy": [r.new[i].id for i in then]})
    r.deployment = records.loads(DeploymentRecord, raw)
    for index in then:
        r.restart(index, START + 1.0)
    last = r.roll()
    assert r.deployment.state == "running", r.deployment.description
    assert r.deployment.groups["web"]["healthy"] == n
    assert all(":" in entry for entry in r.deployment.healthy)     # written back in the compact form
    assert r.look(last + 5.0).deployment is None


@pytest.mark.parametrize("seed,n", [(4, 100_000), (5, 100_000)])
def test_the_record_stays_small_at_100000_healthy_slots(seed, n):
    """100,000 slots in a row healthy (1% of them another generation, rescheduled ones): the
    record as etcd stores it stays under 64 KiB, and read back counts every one."""
    rng = random.Random(seed)
    new = []
    for index in range(n):
        generation = 3 if rng.random() < 0.01 else 2
        rec = InstanceRecord(id=instance_id("shop", "web", index, generation), job="shop", group="web",
                             index=index, kind="container", version=2, node="n1", created_at=START)
        new.append(Entry(rec, 1, StateRecord(rec.id, RUNNING, started_at=START)))
    old = [Entry(InstanceRecord(id=instance_id("shop", "web", n, 1), job="shop", group="web", index=n,
                                kind="container", version=1, node="n1"), 1, StateRecord("x", RUNNING))]
    group = deployments.GroupRollout("web", n + 1, POLICY, False, old, new)
    step = deployments.step("shop", 2, True, [group], None, START + 60.0)
    raw = records.dumps(step.deployment)
    assert len(raw) < 64 * 1024, len(raw)
    again = deployments.step("shop", 2, True, [group], records.loads(DeploymentRecord, raw), START + 61.0)
    assert again.deployment is None                   # all 100,000 counted already: nothing to write
    assert step.deployment.groups["web"]["healthy"] == n


def _look_times(last: float, every: float = 5.0) -> list[float]:
    out, t = [], START
    while t <= last:
        out.append(t)
        t += every
    return out
