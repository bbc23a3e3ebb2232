"""Preemption: an instance that fits nowhere evicts lower-priority instances on one host."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from packyard.records import ResourceAmounts
from scheduler.placement import EngineConfig, Plan, Running, Status, place
from scheduler.placement.table import amounts
from tests.scheduler.placement.builders import ask, con, host, res, table


def cluster(*specs: tuple[str, list[tuple[str, int, int]]], cpu: int = 4000, gpu: int = 0, **kw):
    """Hosts `name` holding running instances (id, priority, milli-cores; 1 GiB each); returns the
    table and the Running list, the hosts' allocation being the sum of what runs there."""
    hosts, running = [], []
    for name, instances in specs:
        used = ResourceAmounts()
        for iid, prio, c in instances:
            r = res(c, 1)
            running.append(Running(iid, name, prio, r))
            used = ResourceAmounts(used.cpu_milli + r.cpu_milli, used.memory_bytes + r.memory_bytes)
        hosts.append(host(name, cpu=cpu, gpu=gpu, used=used, **kw))
    return table(*hosts), running


def urgent(count: int = 1, cpu: int = 2000, priority: int = 90, **kw):
    return ask(count, cpu=cpu, mem_mib=1024, priority=priority, job="urgent", **kw)


@pytest.mark.parametrize("specs, want_host, want_victims", [
    ([("n1", [("a", 10, 2000), ("b", 10, 2000)]), ("n2", [("c", 10, 4000)])], "n1", ("a",)),
    # fewest victims first: one victim on n2 rather than two smaller on n1
    ([("n1", [("a", 10, 1000), ("b", 10, 1000), ("c", 10, 2000)]), ("n2", [("d", 20, 3000), ("e", 20, 1000)])],
     "n1", ("c",)),
    ([("n1", [("a", 10, 1500), ("b", 10, 1500), ("c", 10, 1000)]), ("n2", [("d", 30, 2000), ("e", 20, 2000)])],
     "n2", ("e",)),
    # same count: the lowest priority
    ([("n1", [("a", 40, 2000), ("b", 40, 2000)]), ("n2", [("c", 5, 2000), ("d", 70, 2000)])], "n2", ("c",)),
    # same count and priority: the smallest freed
    ([("n1", [("a", 10, 4000)]), ("n2", [("b", 10, 2000), ("c", 60, 2000)])], "n2", ("b",)),
    # two victims needed, lowest priorities, none more than needed
    ([("n1", [("a", 10, 1000), ("b", 20, 1000), ("c", 30, 1000), ("d", 95, 1000)])], "n1", ("a", "b")),
], ids=["single-victim", "fewest-victims", "fewest-victims-other-host", "lowest-priority", "smallest-total",
        "two-victims"])
def test_evicts_the_cheapest_victims_on_exactly_one_host(specs, want_host, want_victims):
    t, running = cluster(*specs)
    [r] = place(t, [urgent()], running=running)
    assert r.status is Status.PLACED and r.hosts == [want_host]
    assert [(p.instance, p.host, p.victims) for p in r.preemptions] == [(0, want_host, want_victims)]
    assert r.preempt == list(want_victims)


@pytest.mark.parametrize("victim_priority", [90, 95, 100, 81], ids=["equal", "higher", "highest", "within-margin"])
def test_never_evicts_equal_higher_or_within_the_margin(victim_priority):
    t, running = cluster(("n1", [("a", victim_priority, 4000)]))
    [r] = place(t, [urgent()], running=running)
    assert r.status is Status.UNSCHEDULABLE and r.preempt == []
    assert "preemption cannot help: no instance of priority <= 80" in r.explain()


def test_margin_is_configurable():
    t, running = cluster(("n1", [("a", 89, 4000)]))
    [r] = place(t, [urgent()], EngineConfig(preempt_margin=1), running=running)
    assert r.preempt == ["a"]
    with pytest.raises(ValueError, match="preempt_margin"):
        EngineConfig(preempt_margin=0)


def test_explains_when_even_evicting_everything_cannot_help():
    t, running = cluster(("n1", [("a", 10, 1000)]), ("n2", [("b", 10, 1000)]), cpu=2000)
    [r] = place(t, [urgent(cpu=3000)], running=running)
    assert r.status is Status.UNSCHEDULABLE and r.preempt == []
    assert r.reasons == {"not enough cpu": 2}
    assert r.explain() == ("2 hosts: not enough cpu, preemption cannot help: evicting every instance of "
                           "priority <= 80 from one host would not make room on any")


def test_no_preemption_when_something_fits_or_without_running():
    t, running = cluster(("n1", [("a", 10, 4000)]), ("n2", []))
    [r] = place(t, [urgent()], running=running)
    assert r.hosts == ["n2"] and r.preemptions == []
    t, running = cluster(("n1", [("a", 10, 4000)]))
    [r] = place(t, [urgent()])
    assert r.status is Status.UNSCHEDULABLE and r.preemption == "" and "preemption" not in r.explain()
    [r] = place(t, [urgent()], running=[])     # preemption on, but nothing runs
    assert r.preemption.startswith("preemption cannot help: no instance")


def test_respects_constraints_and_distinct_hosts():
    t, running = cluster(("n1", [("a", 10, 4000)]), ("n2", [("b", 20, 4000)]), ("n3", [("c", 30, 4000)]))
    [r] = place(t, [urgent(3, constraints=[con("node.name", "!=", "n1")], distinct=True)], running=running)
    assert r.hosts == ["n2", "n3"] and r.preempt == ["b", "c"]
    assert "preemption cannot help" in r.explain()


def test_a_group_preempts_per_instance_and_reuses_freed_room():
    t, running = cluster(("n1", [("a", 10, 4000)]), ("n2", [("b", 10, 4000)]))
    [r] = place(t, [urgent(3, cpu=2000)], running=running)
    # the first instance evicts a; the second fits in what a left; the third evicts b
    assert r.hosts == ["n1", "n1", "n2"]
    assert [(p.instance, p.host, p.victims) for p in r.preemptions] == [(0, "n1", ("a",)), (2, "n2", ("b",))]


def test_an_evicted_instance_is_not_evicted_twice_and_later_asks_see_the_room():
    t, running = cluster(("n1", [("a", 10, 3000)]))
    plan = Plan(t, EngineConfig(), running)
    first, second = place(t, [urgent(cpu=2000), ask(1, cpu=1000, mem_mib=1024, group="small")], plan=plan)
    assert first.preempt == ["a"] and second.hosts == ["n1"] and second.preempt == []
    assert plan.allocated[0].tolist()[0] == 3000


def test_gpu_victims_free_their_devices():
    t = table(host("g1", cpu=8000, gpu=2000, used=res(2000, 2, 0, 2000)))
    running = [Running("a", "g1", 10, res(1000, 1, 0, 1000), (0,)),
               Running("b", "g1", 20, res(1000, 1, 0, 1000), (1,))]
    [r] = place(t, [ask(1, cpu=500, mem_mib=512, gpu=1000, priority=90)], running=running)
    assert r.preempt == ["a"] and r.gpus == [(0,)]


def test_preemption_decides_the_same_cached_or_not():
    t, running = cluster(("n1", [("a", 10, 2000), ("b", 10, 2000)]), ("n2", [("c", 40, 3000)]),
                         ("n3", [("d", 0, 1000)]))
    asks = [ask(2, cpu=1000, mem_mib=1024, group="x"), urgent(3, cpu=2000), ask(2, cpu=1000, group="y")]
    fast = place(t, asks + asks, EngineConfig(), running=running)
    slow = place(t, asks + asks, EngineConfig(incremental=False), running=running)
    assert [(r.hosts, r.preemptions, r.reasons) for r in fast] == [(r.hosts, r.preemptions, r.reasons) for r in slow]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 100), st.sampled_from([500, 1000, 2000])), max_size=4),
                min_size=1, max_size=5),
       st.integers(0, 100), st.integers(1, 4), st.sampled_from([500, 1500, 3000]))
def test_preemption_properties(layout, priority, count, cpu):
    """Victims are strictly lower (by the margin), all on the host they make room on, evicted
    once; the plan never exceeds capacity once they are gone."""
    specs = []
    for h, instances in enumerate(layout):
        fill = [(f"i{h}-{k}", p, c) for k, (p, c) in enumerate(instances)]
        while sum(c for *_, c in fill) > 4000:
            fill.pop()
        specs.append((f"n{h}", fill))
    t, running = cluster(*specs)
    by_id = {r.instance: r for r in running}
    plan = Plan(t, EngineConfig(), running)
    [r] = place(t, [urgent(count, cpu=cpu, priority=priority)], plan=plan)
    victims = r.preempt
    assert len(victims) == len(set(victims))
    for p in r.preemptions:
        assert r.hosts[p.instance] == p.host and p.victims
        assert all(by_id[v].host == p.host and by_id[v].priority <= priority - 10 for v in p.victims)
    expected = t.allocated.copy()
    for v in victims:
        expected[t.index(by_id[v].host)] -= amounts(by_id[v].reserved)
    for name in r.hosts:
        expected[t.index(name)] += amounts(r.reserved)
    assert np.array_equal(expected, plan.allocated)
    assert np.array_equal(plan.free, plan.capacity - plan.allocated)   # kept beside it, not derived
    assert np.all(plan.allocated[:, :2] <= plan.capacity[:, :2])
    if r.unplaced:
        assert sum(r.reasons.values()) == len(t) and r.preemption.startswith("preemption cannot help")
