"""Hostile job specs: whatever the text, load_yaml / load_json give a JobSpec or a SpecError whose
every line is `path: reason`, short and on one line; absurd sizes and paths are refused by name."""
from __future__ import annotations

import copy
import json

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from packyard import spec

GOOD = {
    "name": "shop",
    "groups": [
        {"name": "web", "count": 3, "resources": {"cpu": 0.25, "memory": "64Mi"},
         "container": {"image": "/srv/images/busybox", "command": ["/bin/sleep", "3600"],
                       "env": {"KEY": "value"}},
         "constraints": [{"attribute": "label.zone", "operator": "=", "value": "a"}],
         "spread": [{"attribute": "label.zone", "weight": 50}]},
        {"name": "db", "kind": "vm", "resources": {"cpu": 2, "memory": "1Gi", "disk": "10Gi", "gpu": 0.5},
         "vm": {"kernel": "/var/lib/packyard/guest/vmlinuz", "initrd": "/var/lib/packyard/guest/initrd.img"}},
    ],
}
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(load, text):
    """The JobSpec, or the SpecError's lines after checking each names a field and a reason."""
    try:
        job = load(text)
    except spec.SpecError as e:
        assert e.errors and len(e.errors) <= spec.MAX_ERRORS + 1
        for line in e.errors:
            path, sep, reason = line.partition(": ")
            assert sep and path.strip() and reason.strip(), line
            assert len(line.splitlines()) == 1 and len(line) < 600, line
        return e.errors
    assert isinstance(job, spec.JobSpec)
    assert spec.load_json(job.to_json()) == job             # what is stored validates the same
    return job


# values that break parsers and arithmetic: huge, non-finite, negative, wrong types, control chars
hostile_scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
                   | st.integers(min_value=10**20, max_value=10**400) | st.text(max_size=30)
                   | st.sampled_from(["9" * 400, "1e400", "inf", "nan", "-1", "64Xi", "250m", "1Ti", "..", "\x85", "a\u2028b",
                                      "/a/../b", "/a\x00b", "web\n", "", " ", "0x10", "1" * 5000]))
documents = st.recursive(hostile_scalars,
                         lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
                         max_leaves=25)


@FUZZ
@given(st.text(max_size=300))
def test_any_text(text):
    outcome(spec.load_yaml, text)
    outcome(spec.load_json, text)


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes(data):
    outcome(spec.load_yaml, data)
    outcome(spec.load_json, data)


@FUZZ
@given(documents)
def test_any_document_as_yaml_and_json(doc):
    outcome(spec.load_json, json.dumps(doc))
    outcome(spec.load_yaml, yaml.safe_dump(doc))


def paths_of(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from paths_of(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from paths_of(v, (*prefix, i))


@st.composite
def mutated_specs(draw):
    """GOOD with a few of its values replaced, removed, or given an unknown sibling."""
    doc = copy.deepcopy(GOOD)
    for _ in range(draw(st.integers(1, 3))):
        paths = list(paths_of(doc))[1:]
        if not paths:   # an earlier mutation deleted everything
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(documents)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=12))] = draw(hostile_scalars)
        else:
            parent.append(draw(documents))
    return doc


@FUZZ
@given(mutated_specs())
def test_mutated_valid_specs(doc):
    outcome(spec.load_json, json.dumps(doc))


def test_the_unmutated_spec_is_valid():
    assert isinstance(outcome(spec.load_json, json.dumps(GOOD)), spec.JobSpec)


def with_(path: str, value):
    """GOOD with the value at a dotted path (`groups.0.resources.cpu`) replaced."""
    doc = copy.deepcopy(GOOD)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    target = doc
    for p in parents:
        target = target[p]
    target[last] = value
    return doc


@pytest.mark.parametrize("path,value,field,reason", [
    ("groups.0.resources.cpu", 1025, "groups[0].resources.cpu", "max 1024"),
    ("groups.0.resources.cpu", float("inf"), "groups[0].resources.cpu", "too large"),
    ("groups.0.resources.cpu", "9" * 400, "groups[0].resources.cpu", "too large"),
    ("groups.0.resources.memory", "17Ti", "groups[0].resources.memory", "more than any host has"),
    ("groups.0.resources.memory", 10**400, "groups[0].resources.memory", "more than any host has"),
    ("groups.0.resources.memory", "9" * 400 + "Mi", "groups[0].resources.memory", "too large"),
    ("groups.1.resources.disk", "2000Ti", "groups[1].resources.disk", "more than any host has"),
    ("groups.1.resources.gpu", 65, "groups[1].resources.gpu", "more than 64 GPUs"),
    ("groups.1.resources.gpu", float("inf"), "groups[1].resources.gpu", "not a number of GPUs"),
    ("groups.1.resources.gpu", float("nan"), "groups[1].resources.gpu", "not a number of GPUs"),
    ("groups.0.count", 1_000_001, "groups[0].count", "1000000"),
    ("groups.0.container.command", ["x"] * (spec.MAX_ARGS + 1), "groups[0].container.command", "at most"),
    ("groups.0.container.command", ["x" * (spec.MAX_STRING + 1)], "groups[0].container.command[0]",
     "at most"),
    ("groups.0.container.command", ["/bin/echo", "a\x00b"], "groups[0].container.command[1]", "NUL"),
    ("groups.0.container.env", {f"K{i}": "v" for i in range(spec.MAX_ENV + 1)}, "groups[0].container.env",
     "at most"),
    ("groups.0.container.env", {"KEY\n": "v"}, "groups[0].container.env", "environment variable name"),
    ("groups.0.constraints", [{"attribute": "a", "value": "b"}] * (spec.MAX_RULES + 1),
     "groups[0].constraints", "at most"),
    ("groups.0.constraints", [{"attribute": "a" * 300, "value": "b"}], "groups[0].constraints[0].attribute",
     "at most"),
    ("groups.0.name", "web\n", "groups[0].name", "DNS label"),
    ("name", "shop\n", "name", "DNS label"),
    ("groups.0.container.image", "srv/images/x", "groups[0].container.image", "absolute"),
    ("groups.0.container.image", "/srv/images/../../etc", "groups[0].container.image", "'..'"),
    ("groups.0.container.image", "/srv/images/x\x00", "groups[0].container.image", "control characters"),
    ("groups.0.container.image", "/srv/" + "a" * 5000, "groups[0].container.image", "at most"),
    ("groups.0.container.privileged", "yes", "groups[0].container.privileged", "boolean"),
    ("groups.1.vm.kernel", "/srv/vm/../../etc/shadow", "groups[1].vm.kernel", "'..'"),
    ("groups.1.vm.initrd", "initrd.img", "groups[1].vm.initrd", "absolute"),
    ("groups.1.vm.cmdline", "console=ttyS0\nroot=/dev/sda", "groups[1].vm.cmdline", "control characters"),
    ("groups.1.vm.cmdline", "x" * 3000, "groups[1].vm.cmdline", "at most"),
], ids=lambda v: None)
def test_absurd_values_are_refused_by_name(path, value, field, reason):
    errors = outcome(spec.load_json, json.dumps(with_(path, value)))
    assert isinstance(errors, list), "accepted"
    assert any(e.startswith(f"{field}: ") and reason in e for e in errors), errors


def test_a_disk_vm_path_is_checked_too():
    doc = with_("groups.1.vm", {"disk": "/srv/vm/../disk.qcow2"})
    assert "groups[1].vm.disk: must not contain '..'" in outcome(spec.load_json, json.dumps(doc))


def test_large_but_sensible_values_stay_valid():
    doc = with_("groups.0.count", 100_000)        # issue 7 submits this
    doc["groups"][0]["resources"] = {"cpu": 1024, "memory": "16Ti", "gpu": 0}
    doc["groups"][1]["resources"].update(gpu=64, disk="1024Ti")
    doc["groups"][0]["container"]["env"] = {"CERT": "x" * 8000}
    job = outcome(spec.load_json, json.dumps(doc))
    assert isinstance(job, spec.JobSpec) and job.groups[0].count == 100_000


def test_too_many_groups():
    doc = copy.deepcopy(GOOD)
    doc["groups"] = [dict(GOOD["groups"][0], name=f"g{i}") for i in range(spec.MAX_GROUPS + 1)]
    errors = outcome(spec.load_json, json.dumps(doc))
    assert any(e.startswith("groups: ") and "at most 100" in e for e in errors), errors


def test_a_thousand_problems_are_summed_up():
    doc = with_("groups.0.container.command", [1] * 1000)
    errors = outcome(spec.load_json, json.dumps(doc))
    assert len(errors) == spec.MAX_ERRORS + 1 and "more problems" in errors[-1]


@pytest.mark.parametrize("load,text,reason", [
    (spec.load_yaml, "[" * 100_000 + "]" * 100_000, "nesting"),
    (spec.load_json, "[" * 100_000 + "]" * 100_000, "nested"),
    (spec.load_yaml, "a: " + "[" * 50 + "]" * 50, "nested more than 32"),
    (spec.load_json, '{"a": ' + "[" * 50 + "]" * 50 + "}", "nested more than 32"),
    (spec.load_yaml, "a: " + "9" * 5000, "digits"),
    (spec.load_json, '{"a": ' + "9" * 5000 + "}", "digits"),
    (spec.load_yaml, "x: " + "y" * spec.MAX_SPEC_BYTES, "larger than 1 MiB"),
    (spec.load_json, '{"x": "' + "y" * spec.MAX_SPEC_BYTES + '"}', "larger than 1 MiB"),
], ids=["yaml-recursion", "json-recursion", "yaml-deep", "json-deep", "yaml-huge-integer",
        "json-huge-integer", "yaml-huge-file", "json-huge-file"])
def test_hostile_documents(load, text, reason):
    errors = outcome(load, text)
    assert isinstance(errors, list) and any(reason in e for e in errors), errors


def test_a_yaml_alias_bomb_is_refused_quickly():
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    errors = outcome(spec.load_yaml, "\n".join(lines) + "\nname: bomb\ngroups: *a9\n")
    assert errors == [f"(top level): more than {spec.MAX_VALUES} values (YAML aliases included)"]


def test_privileged_and_host_network_are_spec_fields_left_out_when_false():
    job = spec.load_json(json.dumps(GOOD))
    assert "privileged" not in job.to_json() and "host_network" not in job.to_json()
    assert job.host_access() == []
    doc = with_("groups.0.container.privileged", True)
    doc["groups"][0]["container"]["host_network"] = True
    job = spec.load_json(json.dumps(doc))
    assert job.host_access() == ["groups[0].container.privileged", "groups[0].container.host_network"]
    assert spec.load_json(job.to_json()) == job
    assert job.groups[0].driver_config()["privileged"] is True


@pytest.mark.parametrize("field,value,error", [
    ("user", "abc:", "groups[0].container.user: 'abc:' is not UID[:GID]"),
    ("user", ":1", "groups[0].container.user: ':1' is not UID[:GID]"),
    ("user", "1:a b", "groups[0].container.user: '1:a b' is not UID[:GID]: 'a b' is neither"),
    ("user", 1000, "groups[0].container.user: input should be a valid string"),
    ("seccomp", "strict", "groups[0].container.seccomp: input should be 'default' or 'unconfined'"),
    ("userns", "private", "groups[0].container.userns: input should be 'default' or 'host'"),
], ids=["user-no-group", "user-no-uid", "user-bad-name", "user-number", "seccomp", "userns"])
def test_confinement_fields_are_checked_by_name(field, value, error):
    errors = outcome(spec.load_json, json.dumps(with_(f"groups.0.container.{field}", value)))
    assert isinstance(errors, list) and len(errors) == 1 and errors[0].startswith(error), errors


def test_confinement_fields_left_out_at_their_defaults_and_host_access_by_path():
    plain = spec.load_json(json.dumps(GOOD))
    for key in ("user", "seccomp", "userns"):
        assert f'"{key}"' not in plain.to_json()          # stored specs keep their group hash
    doc = with_("groups.0.container.user", "1000:1000")
    doc["groups"][0]["container"].update(seccomp="unconfined", userns="host")
    job = spec.load_json(json.dumps(doc))
    assert job.host_access() == ["groups[0].container.seccomp", "groups[0].container.userns"]
    assert spec.load_json(job.to_json()) == job
    config = job.groups[0].driver_config()
    assert {k: config[k] for k in ("user", "seccomp", "userns")} == {"user": "1000:1000", "seccomp": "unconfined",
                                                                    "userns": "host"}
    named = spec.load_json(json.dumps(with_("groups.0.container.user", "www-data:www-data")))
    assert named.host_access() == [] and named.groups[0].driver_config()["user"] == "www-data:www-data"
