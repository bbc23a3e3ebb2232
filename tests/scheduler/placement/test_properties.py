"""Properties over random clusters and asks: no plan exceeds a host's capacity (per resource and
per GPU device), every placed instance satisfies its constraints, every unplaced instance's
explanation accounts for every host exactly once, and the incremental engine (score caching,
one row re-evaluated per reservation) decides exactly as re-running the whole pipeline would."""
from __future__ import annotations

import dataclasses
import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from packyard.records import ResourceAmounts
from scheduler.placement import (
    POLICIES,
    EngineConfig,
    GroupAsk,
    Host,
    HostTable,
    Plan,
    Status,
    place,
)
from scheduler.placement.table import amounts
from tests.scheduler.placement.builders import MIB, aff, con, res, spread

ZONES = ["a", "b", "c"]


@st.composite
def hosts(draw) -> list[Host]:
    out = []
    for i in range(draw(st.integers(0, 7))):
        cpu = draw(st.sampled_from([500, 2000, 4000]))
        mem = draw(st.sampled_from([0.5, 2, 8]))
        gpus = draw(st.sampled_from([0, 0, 1, 2, 4]))
        used = res(draw(st.integers(0, cpu)), draw(st.floats(0, mem)), 0,
                   draw(st.integers(0, gpus)) * 1000 - draw(st.sampled_from([0, 0, 300])) * (gpus > 0))
        used = ResourceAmounts(used.cpu_milli, used.memory_bytes, 0, max(0, used.gpu_milli))
        zone = draw(st.sampled_from(ZONES + [None]))
        attrs = {"driver.container": "ok",
                 "driver.vm": draw(st.sampled_from(["ok", "unavailable: no kvm"]))}
        out.append(Host(f"h{i}", res(cpu, mem, 10, gpus * 1000), used,
                        ready=draw(st.booleans()) or draw(st.booleans()),
                        labels={"zone": zone} if zone else {}, attributes=attrs))
    return out


constraints = st.lists(st.sampled_from([
    con("label.zone", "=", "a"), con("label.zone", "!=", "b"), con("label.zone", "in", ["a", "c"]),
    con("label.zone", "not_in", ["c"]), con("label.zone", "exists"), con("node.name", "!=", "h0"),
    con("driver.vm", "=", "ok"), con("node.name", "=", "h1"),    # pinned: a class of one host
]), max_size=2)


@st.composite
def asks(draw) -> list[GroupAsk]:
    out = []
    for i in range(draw(st.integers(1, 6))):
        out.append(GroupAsk(
            job="j", group=f"g{i}", count=draw(st.integers(0, 6)),
            kind=draw(st.sampled_from(["container", "container", "vm"])),
            request=ResourceAmounts(draw(st.sampled_from([100, 250, 1000, 1500])),
                                    draw(st.sampled_from([16, 256, 1024])) * MIB,
                                    draw(st.sampled_from([0, 0, 1 << 30])),
                                    draw(st.sampled_from([0, 0, 250, 500, 1000, 2000]))),
            constraints=draw(constraints), distinct_hosts=draw(st.booleans()),
            existing_hosts=tuple(draw(st.lists(st.sampled_from(["h0", "h1", "x"]), max_size=3))),
            spread=draw(st.sampled_from([[], [], [spread()], [spread("label.zone", 10), spread("node.name")]])),
            affinity=draw(st.sampled_from([[], [], [aff("label.zone", "=", "b", weight=60)],
                                           [aff("driver.vm", "exists", weight=-5)]]))))
    return out


configs = st.builds(
    lambda policy, cpu_ratio, reserve: EngineConfig.for_policy(
        policy, overcommit={"cpu_milli": cpu_ratio}, host_reserve=res(cpu=reserve)),
    st.sampled_from(sorted(POLICIES)), st.sampled_from([1.0, 1.5]), st.sampled_from([0, 100]))


def satisfies(host: Host, c) -> bool:
    """An independent reading of the constraint semantics, in plain Python."""
    if c.attribute == "node.name":
        value = host.name
    elif c.attribute.startswith("label."):
        value = host.labels.get(c.attribute[len("label."):])
    else:
        value = host.attributes.get(c.attribute)
    return {"=": lambda: value == c.value, "!=": lambda: value != c.value,
            "in": lambda: value in c.value, "not_in": lambda: value not in c.value,
            "exists": lambda: value is not None}[c.operator]()


# PLACEMENT_EXAMPLES=3000 for a longer search (about 90 s)
SETTINGS = settings(max_examples=int(os.environ.get("PLACEMENT_EXAMPLES", "300")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(hosts(), asks(), configs)
def test_no_plan_exceeds_capacity(hs, group_asks, config):
    table = HostTable.from_hosts(hs)
    plan = Plan(table, config)
    results = place(table, group_asks, plan=plan)
    added = np.zeros_like(table.allocated)
    need_on = np.zeros(table.allocated.shape, dtype=bool)
    for r in results:
        for name in r.hosts:
            i = table.index(name)
            added[i] += amounts(r.reserved)
            need_on[i] |= amounts(r.reserved) > 0
    final = table.allocated + added
    assert np.array_equal(final, plan.allocated)
    # every resource an instance asked for is within the effective capacity after placing
    assert np.all(~need_on[:, :3] | (final[:, :3] <= plan.capacity[:, :3]))
    assert np.all(plan.gpu_free >= 0)
    assert np.array_equal(table.gpu_capacity.sum(axis=1) - plan.gpu_free.sum(axis=1), final[:, 3])
    # whole GPUs come as whole devices, shares on one device
    for r in results:
        for devices in r.gpus:
            g = r.reserved.gpu_milli
            assert len(devices) == (g // 1000 if g >= 1000 else 1 if g else 0)


@SETTINGS
@given(hosts(), asks(), configs)
def test_constraints_always_hold(hs, group_asks, config):
    table = HostTable.from_hosts(hs)
    by_name = {h.name: h for h in hs}
    for r in place(table, group_asks, config):
        for name in r.hosts:
            h = by_name[name]
            assert h.ready and h.attributes.get(f"driver.{r.ask.kind}") == "ok"
            assert all(satisfies(h, c) for c in r.ask.constraints)
        if r.ask.distinct_hosts:
            assert len(set(r.hosts)) == len(r.hosts)
            assert not set(r.hosts) & set(r.ask.existing_hosts)
        assert len(r.hosts) + r.unplaced == r.ask.count


@SETTINGS
@given(hosts(), asks(), configs)
def test_explanations_account_for_every_host(hs, group_asks, config):
    table = HostTable.from_hosts(hs)
    for r in place(table, group_asks, config):
        if r.status in (Status.PARTIAL, Status.UNSCHEDULABLE):
            assert sum(r.reasons.values()) == len(table)
            assert all(n > 0 for n in r.reasons.values())
        else:
            assert r.reasons == {}


@SETTINGS
@given(hosts(), asks(), configs)
def test_incremental_engine_decides_as_the_full_pipeline_does(hs, group_asks, config):
    table = HostTable.from_hosts(hs)
    fast = place(table, group_asks + group_asks, config)
    reference = EngineConfig(profiles=config.profiles, scorers=config.scorers,
                             overcommit=config.overcommit, host_reserve=config.host_reserve,
                             incremental=False)
    slow = place(table, group_asks + group_asks, reference)
    assert [(r.hosts, r.gpus, r.reasons, r.status) for r in fast] == \
           [(r.hosts, r.gpus, r.reasons, r.status) for r in slow]


@SETTINGS
@given(hosts(), asks(), configs)
def test_pooled_gpus_never_exceed_a_hosts_total(hs, group_asks, config):
    """`--gpu-model pooled` (the peers' published figures' model): a host's GPUs are one amount;
    no plan takes more than it, every GPU ask takes a part of that one pool, and the incremental
    engine still decides as the full pipeline does."""
    pooled = dataclasses.replace(config, gpu_model="pooled")
    table = HostTable.from_hosts(hs, gpu_model="pooled")
    plan = Plan(table, pooled)
    results = place(table, group_asks, plan=plan)
    slow = place(table, group_asks, dataclasses.replace(pooled, incremental=False))
    assert table.gpu_capacity.shape[1] == 1
    assert np.all(plan.gpu_free >= 0)
    taken = np.zeros(len(table), dtype=np.int64)
    for r in results:
        for name, devices in zip(r.hosts, r.gpus or [()] * len(r.hosts), strict=True):
            taken[table.index(name)] += r.reserved.gpu_milli
            assert devices == ((0,) if r.reserved.gpu_milli else ())
    assert np.array_equal(table.gpu_free[:, 0] - plan.gpu_free[:, 0], taken)
    assert [(r.hosts, r.gpus, r.status) for r in results] == [(r.hosts, r.gpus, r.status) for r in slow]
