"""agent/boundary.py's CheckedSpecs: a spec whose all but id and GPU devices was checked before is
converted without checking that part again, and comes out exactly as the full check makes it; one
differing in anything is checked whole (a bad field refused, named as ever)."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import boundary
from packyard.v1 import agent_pb2, common_pb2

MI = 1 << 20


def spec(**kw) -> agent_pb2.InstanceSpec:
    fields = dict(id="shop.web.0-1", job="shop", group="web", kind="container",
                  request=common_pb2.Resources(cpu_milli=250, memory_bytes=64 * MI),
                  limit=common_pb2.Resources(cpu_milli=260, memory_bytes=72 * MI),
                  driver_json=json.dumps({"command": ["/bin/sleep", "1"]}), job_type="service",
                  restart=agent_pb2.RestartPolicy(attempts=2, interval_seconds=1800, delay_seconds=15, mode="fail"))
    return agent_pb2.InstanceSpec(**{**fields, **kw})


def outcome(convert, p):
    try:
        return "ok", vars(convert(p, "instances[3]"))
    except ValueError as e:
        return "refused", str(e)


# each field of the shared part: a few good values and a bad one
FIELDS = {
    "job": st.sampled_from(["shop", "api", "big", "Bad_Job"]),
    "group": st.sampled_from(["web", "db", "g", ""]),
    "kind": st.sampled_from(["container", "vm", "fake", "../vm"]),
    "limit": st.sampled_from([common_pb2.Resources(cpu_milli=500, memory_bytes=128 * MI),
                              common_pb2.Resources(cpu_milli=260, memory_bytes=80 * MI),
                              common_pb2.Resources(cpu_milli=0, memory_bytes=64 * MI)]),
    "request": st.sampled_from([common_pb2.Resources(cpu_milli=100, memory_bytes=32 * MI, disk_bytes=8 * MI),
                                common_pb2.Resources(cpu_milli=5, disk_bytes=-1)]),
    "driver_json": st.sampled_from(['{"command": ["/bin/true"]}', '{"image": "x", "env": {"A": "1"}}', "[]", "{"]),
    "job_type": st.sampled_from(["batch", "system", "", "daemon"]),
    "restart": st.sampled_from([agent_pb2.RestartPolicy(attempts=3, interval_seconds=60, delay_seconds=1, mode="delay"),
                                agent_pb2.RestartPolicy(attempts=10**6, interval_seconds=60, mode="fail"),
                                agent_pb2.RestartPolicy(attempts=1, interval_seconds=60,
                                                        delay_seconds=float("nan"), mode="fail")]),
    "check": st.sampled_from([agent_pb2.HealthCheck(type="tcp", port=80, interval_seconds=1, timeout_seconds=1,
                                                    failures=1),
                              agent_pb2.HealthCheck(type="exec", command=["/bin/true"], interval_seconds=1,
                                                    timeout_seconds=1, failures=2),
                              agent_pb2.HealthCheck(type="tcp", interval_seconds=1, timeout_seconds=1, failures=1)]),
}
# a group's spec: the one above with up to three fields changed
variants = st.sets(st.sampled_from(sorted(FIELDS)), max_size=3).flatmap(
    lambda names: st.fixed_dictionaries({n: FIELDS[n] for n in names}))
one_change = st.just({}) | st.one_of(*(st.fixed_dictionaries({name: values}) for name, values in FIELDS.items()))
own = st.fixed_dictionaries({"id": st.sampled_from(["shop.web.0-1", "shop.web.7-2", "shop.web.12-3", "a.b.1-1", "../x"]),
                             "gpus": st.sampled_from([[], [], [0], [3, 1], [0, 0]])})


@settings(max_examples=300, deadline=None)
@given(base=variants, messages=st.lists(st.tuples(one_change, own), min_size=1, max_size=12),
       size=st.integers(1, 4))
def test_a_spec_comes_out_as_the_full_check_makes_it_or_is_refused_the_same_way(base, messages, size):
    """Specs of one group (`base`), each with its own id and devices, some with one field changed."""
    checked = boundary.CheckedSpecs(size=size)
    for change, mine in messages:
        p = spec(**{**base, **change}, **mine)
        assert outcome(checked.to_spec, p) == outcome(boundary.check_spec, p)
        assert len(checked) <= size


def test_instances_share_the_checked_part_but_each_has_its_own_config():
    checked = boundary.CheckedSpecs()
    a = checked.to_spec(spec(id="shop.web.0-1"), "instances[0]")
    b = checked.to_spec(spec(id="shop.web.1-1", gpus=[2]), "instances[1]")
    assert len(checked) == 1 and (a.id, b.id, a.gpus, b.gpus) == ("shop.web.0-1", "shop.web.1-1", (), (2,))
    assert b.restart is a.restart and b.config == a.config and b.config is not a.config
    with pytest.raises(AttributeError):
        b.id = "other"                          # frozen, as the full check makes it


@pytest.mark.parametrize("changed,field", [
    ({"id": "../../etc/passwd"}, "instances[1].id"),
    ({"gpus": [0, 0]}, "instances[1].gpus"),
    ({"restart": agent_pb2.RestartPolicy(attempts=2, interval_seconds=0, delay_seconds=15, mode="fail")},
     "instances[1].restart.interval_seconds"),
    ({"limit": common_pb2.Resources(cpu_milli=260, memory_bytes=1)}, "instances[1].limit.memory_bytes"),
    ({"driver_json": '{"command": ["/bin/sleep", "1"]'}, "instances[1].driver_json"),
])
def test_a_spec_like_a_checked_one_but_for_a_bad_field_is_refused_naming_it(changed, field):
    checked = boundary.CheckedSpecs()
    checked.to_spec(spec(), "instances[0]")
    with pytest.raises(ValueError) as e:
        checked.to_spec(spec(**changed), "instances[1]")
    assert str(e.value).startswith(f"{field}: ")
