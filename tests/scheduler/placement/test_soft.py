"""Spread over a host property and soft affinity: scorers that reorder hosts, never filters."""
from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.placement import EngineConfig, Status, place
from tests.scheduler.placement.builders import aff, ask, con, host, spread, table


def zoned(*zones: str, **kw) -> list:
    """One host per zone letter, named h0, h1, ... in order."""
    return [host(f"h{i}", labels={"zone": z} if z != "-" else {}, **kw) for i, z in enumerate(zones)]


def zones_of(hosts: list, names: list[str]) -> list[str]:
    by = {h.name: h.labels.get("zone", "-") for h in hosts}
    return [by[n] for n in names]


@pytest.mark.parametrize("zones, count, existing, want", [
    ("aabbcc", 3, (), "abc"),                        # one per zone before a second anywhere
    ("aabbcc", 6, (), "abcabc"),
    ("aaab", 4, (), "abab"),                         # a zone of 3 hosts counts as one value
    ("aabbcc", 2, ("h0", "h2"), "cc"),               # running instances count: a and b hold one each
    ("aabbcc", 3, ("h0", "h0", "h1"), "bcb"),        # a holds three already
    ("ab-", 3, (), "aba"),                           # a host without the label scores 0 for spread
], ids=["one-each", "two-each", "uneven-host-counts", "running-count", "running-heavy-zone",
        "missing-label-last"])
def test_spread_places_on_the_value_with_fewest(zones, count, existing, want):
    hs = zoned(*zones)
    [r] = place(table(*hs), [ask(count, spread=[spread()], existing=existing)])
    assert "".join(zones_of(hs, r.hosts)) == want


def test_without_spread_binpack_keeps_to_one_host():
    hs = zoned(*"aabbcc")
    [r] = place(table(*hs), [ask(3)])
    assert r.hosts == ["h0"] * 3


def test_spread_is_not_a_filter_a_full_zone_is_skipped():
    hs = [host("h0", cpu=100, labels={"zone": "a"}), host("h1", labels={"zone": "b"})]
    [r] = place(table(*hs), [ask(3, cpu=100, spread=[spread()])])
    # h0 holds one instance, then is full: the spread's next turn for zone a goes to b
    assert r.status is Status.PLACED and sorted(zones_of(hs, r.hosts)) == ["a", "b", "b"]


def test_two_spreads_both_count():
    hs = [host(f"h{i}", labels={"zone": z, "rack": rk})
          for i, (z, rk) in enumerate(["a1", "a2", "b1", "b2"])]
    [r] = place(table(*hs), [ask(4, spread=[spread("label.zone"), spread("label.rack")])])
    placed = [hs[int(n[1:])].labels for n in r.hosts]
    assert Counter(p["zone"] for p in placed) == {"a": 2, "b": 2}
    assert Counter(p["rack"] for p in placed) == {"1": 2, "2": 2}


@pytest.mark.parametrize("affinity, want", [
    ([aff("label.disk", "=", "ssd", weight=50)], ["h1"]),
    ([aff("label.disk", "=", "ssd", weight=-50)], ["h0"]),
    ([aff("label.disk", "!=", "ssd", weight=-50)], ["h1"]),
    ([aff("label.disk", "in", ["ssd", "nvme"], weight=10)], ["h1"]),
    ([aff("label.disk", "exists", weight=10)], ["h0"]),       # both have it: binpack decides
    ([aff("node.name", "=", "h2", weight=1)], ["h2"]),
    ([aff("label.disk", "=", "ssd", weight=20), aff("node.name", "=", "h2", weight=30)], ["h2"]),
    ([aff("label.disk", "=", "ssd", weight=30), aff("node.name", "=", "h2", weight=20)], ["h1"]),
], ids=["prefer", "avoid", "avoid-not-equal", "prefer-in", "exists-everywhere", "small-weight-decides-a-tie",
        "heavier-wins", "heavier-wins-other-way"])
def test_affinity_reorders_hosts(affinity, want):
    hs = [host("h0", used=None, labels={"disk": "hdd"}), host("h1", labels={"disk": "ssd"}),
          host("h2", labels={"disk": "hdd"})]
    [r] = place(table(*hs), [ask(1, affinity=affinity)])
    assert r.hosts == want


def test_affinity_never_filters():
    hs = [host("h0", labels={"disk": "hdd"}), host("h1", cpu=50, labels={"disk": "ssd"})]
    [r] = place(table(*hs), [ask(2, affinity=[aff("label.disk", "=", "ssd", weight=100)])])
    assert r.hosts == ["h0", "h0"] and r.status is Status.PLACED


def test_affinity_trades_against_the_packing_score():
    # the policy counts as weight 100: a weak affinity does not pull work off a busy host, a strong one does
    hs = [host("busy", used=host("x").capacity.__class__(3000, 12 << 30), labels={"disk": "hdd"}),
          host("idle", labels={"disk": "ssd"})]
    pol = EngineConfig.for_policy("k8s-mostallocated")
    [weak] = place(table(*hs), [ask(1, affinity=[aff("label.disk", "=", "ssd", weight=1)])], pol)
    [strong] = place(table(*hs), [ask(1, affinity=[aff("label.disk", "=", "ssd", weight=100)])], pol)
    assert (weak.hosts, strong.hosts) == (["busy"], ["idle"])


def test_soft_terms_with_distinct_hosts_and_constraints():
    hs = zoned(*"aabbcc")
    [r] = place(table(*hs), [ask(4, spread=[spread()], distinct=True, constraints=[con("label.zone", "!=", "c")])])
    assert sorted(zones_of(hs, r.hosts)) == ["a", "a", "b", "b"] and len(set(r.hosts)) == 4


@pytest.mark.parametrize("incremental", [True, False], ids=["cached", "full"])
def test_spread_and_affinity_decide_the_same_cached_or_not(incremental):
    hs = zoned(*"aabbccab")
    asks = [ask(5, spread=[spread()], affinity=[aff("node.name", "=", "h3", weight=40)]),
            ask(3, group="db", affinity=[aff("label.zone", "=", "c", weight=-60)]), ask(2, group="x")]
    got = [r.hosts for r in place(table(*hs), asks, EngineConfig(incremental=incremental))]
    ref = [r.hosts for r in place(table(*hs), asks, EngineConfig(incremental=not incremental))]
    assert got == ref


@settings(max_examples=100, deadline=None)
@given(k=st.integers(1, 5), per_zone=st.integers(1, 4), n=st.integers(0, 40),
       policy=st.sampled_from(["packyard", "nomad-binpack", "k8s-mostallocated", "k8s-default"]))
def test_spread_over_equal_zones_is_even(k, per_zone, n, policy):
    """N instances over K equal zones with room everywhere: zone counts differ by at most 1."""
    hs = [host(f"h{z}-{j}", cpu=64000, mem_gib=256, labels={"zone": f"z{z}"})
          for j in range(per_zone) for z in range(k)]
    [r] = place(table(*hs), [ask(n, spread=[spread(weight=50)])], EngineConfig.for_policy(policy))
    assert r.status is Status.PLACED
    counts = Counter(name.split("-")[0] for name in r.hosts)
    per = [counts.get(f"h{z}", 0) for z in range(k)]
    assert max(per) - min(per) <= 1, per


@settings(max_examples=100, deadline=None)
@given(k=st.integers(2, 4), n=st.integers(0, 30), running=st.lists(st.integers(0, 3), max_size=12))
def test_spread_evens_out_running_instances(k, n, running):
    """With running instances already uneven, new ones go to the emptiest zones first: afterwards
    the counts differ by at most 1, or the zones that held most still do and no other passes them."""
    hs = [host(f"h{z}", cpu=64000, mem_gib=256, labels={"zone": f"z{z}"}) for z in range(k)]
    existing = tuple(f"h{z % k}" for z in running)
    [r] = place(table(*hs), [ask(n, spread=[spread()], existing=existing)])
    before = Counter(existing)
    after = before + Counter(r.hosts)
    per = [after.get(f"h{z}", 0) for z in range(k)]
    top = max(before.values(), default=0)
    assert max(per) - min(per) <= 1 or max(per) == top
