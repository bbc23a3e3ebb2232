import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from packyard import spec
from packyard.quantity import QuantityError, format_bytes, parse_bytes, parse_cpu_milli

GOOD = """
name: shop
priority: 50
groups:
  - name: web
    count: 3
    kind: container
    resources: {cpu: 0.25, memory: 64Mi}
    container:
      image: /srv/images/busybox
      command: ["/bin/sleep", "3600"]
      env: {KEY: value}
    constraints: [{attribute: "label.zone", operator: "=", value: "a"}]
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(spec.SpecError) as e:
        spec.load_yaml(text)
    return e.value.errors


def test_the_issue_example_is_accepted():
    job = spec.load_yaml(GOOD)
    g = job.groups[0]
    assert (job.name, job.priority, g.count, g.resources.cpu, g.resources.memory) == (
        "shop", 50, 3, 250, 64 << 20)
    assert g.container.env == {"KEY": "value"}


def test_round_trip_through_json_is_exact():
    job = spec.load_yaml(GOOD)
    assert spec.load_json(job.to_json()) == job
    assert json.loads(job.to_json())["groups"][0]["resources"]["cpu"] == "250m"


@pytest.mark.parametrize("value, milli", [(0.25, 250), ("250m", 250), ("0.25", 250), (2, 2000),
                                          ("1.5", 1500), ("1m", 1)], ids=str)
def test_cpu_forms(value, milli):
    assert parse_cpu_milli(value) == milli


@pytest.mark.parametrize("value, n", [("64Mi", 64 << 20), ("1Gi", 1 << 30), ("1G", 10**9),
                                      ("512Ki", 512 << 10), ("10K", 10_000), (1024, 1024),
                                      ("1.5Gi", 3 << 29)], ids=str)
def test_memory_forms(value, n):
    assert parse_bytes(value) == n


@pytest.mark.parametrize("value", ["-1", "abc", "64Xi", True, None, [1]], ids=repr)
def test_bad_quantities(value):
    with pytest.raises(QuantityError):
        parse_bytes(value)


@pytest.mark.parametrize("patch, path, words", [
    ("name: Shop_1", "name", "DNS label"),
    ("priority: 101", "priority", "less than or equal to 100"),
    ("bogus: 1", "bogus", "unknown field"),
], ids=["bad-name", "priority-range", "unknown-top-field"])
def test_top_level_errors_name_the_field(patch, path, words):
    key = patch.split(":")[0]
    lines = [line for line in GOOD.splitlines() if not line.startswith(key + ":")]
    errs = errors_of("\n".join(lines) + "\n" + patch)
    assert any(e.startswith(f"{path}: ") and words in e for e in errs), errs


@pytest.mark.parametrize("old, new, path, words", [
    ("memory: 64Mi", "memory: -64Mi", "groups[0].resources.memory", "not a size"),
    ("memory: 64Mi", "memory: 64Ti", "groups[0].resources.memory", "more than any host has"),
    ("cpu: 0.25", "cpu: -1", "groups[0].resources.cpu", "negative"),
    ("cpu: 0.25", "cpu: 100000", "groups[0].resources.cpu", "more than any host has"),
    ("count: 3", "count: -1", "groups[0].count", "greater than or equal to 0"),
    ("count: 3", "count: 10000000", "groups[0].count", "less than or equal to"),
    ("kind: container", "kind: pod", "groups[0].kind", "container"),
    ("image: /srv/images/busybox", "image: srv/busybox", "groups[0].container.image", "absolute"),
    ("KEY: value", "1KEY: value", "groups[0].container.env", "environment variable"),
    ('operator: "="', 'operator: "~"', "groups[0].constraints[0].operator", "="),
    ("env: {KEY: value}", "env: {KEY: value}\n      privilege: true", "groups[0].container.privilege",
     "unknown field"),
], ids=["negative-memory", "absurd-memory", "negative-cpu", "absurd-cpu", "negative-count",
        "absurd-count", "bad-kind", "relative-image", "bad-env-name", "bad-operator", "unknown-nested"])
def test_group_errors_name_the_field(old, new, path, words):
    errs = errors_of(GOOD.replace(old, new))
    assert any(e.startswith(f"{path}: ") and words in e for e in errs), errs


def test_malformed_yaml_names_the_line():
    errs = errors_of("name: shop\ngroups: [\n  - name: x")
    assert errs[0].startswith("(yaml) line ")


@pytest.mark.parametrize("text", ["", "- a\n- b", "42", "name: x"], ids=["empty", "list", "scalar", "no-groups"])
def test_not_a_job(text):
    assert errors_of(text)


def test_every_problem_is_reported_at_once():
    errs = errors_of(GOOD.replace("count: 3", "count: -1").replace("memory: 64Mi", "memory: lots"))
    assert len(errs) == 2


def test_vm_group_needs_a_boot_source():
    errs = errors_of(GOOD.replace("kind: container", "kind: vm"))
    assert any("vm" in e for e in errs)


def test_duplicate_group_names():
    text = GOOD + GOOD.split("groups:\n", 1)[1]
    assert any("used twice" in e for e in errors_of(text))


@given(st.integers(min_value=1 << 20, max_value=1 << 40))
def test_format_and_parse_bytes_agree_within_rounding(n):
    assert abs(parse_bytes(format_bytes(n)) - n) <= n * 0.01


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                    max_leaves=20))
def test_any_document_is_accepted_or_refused_cleanly(doc):
    try:
        spec.validate(doc)
    except spec.SpecError as e:
        assert e.errors and all(": " in line for line in e.errors)


SOFT = GOOD + """    spread: [{attribute: "label.zone", weight: 50}]
    affinity:
      - {attribute: "label.disk", value: "ssd", weight: 30}
      - {attribute: "node.name", operator: "in", value: ["n1", "n2"], weight: -100}
"""


def test_spread_and_affinity_are_accepted_and_round_trip():
    job = spec.load_yaml(SOFT)
    g = job.groups[0]
    assert [(s.attribute, s.weight) for s in g.spread] == [("label.zone", 50)]
    assert [(a.attribute, a.operator, a.value, a.weight) for a in g.affinity] == [
        ("label.disk", "=", "ssd", 30), ("node.name", "in", ["n1", "n2"], -100)]
    assert spec.load_json(job.to_json()) == job


def test_spread_weight_defaults_to_50():
    job = spec.load_yaml(GOOD + '    spread: [{attribute: "label.rack"}]\n')
    assert job.groups[0].spread[0].weight == 50


def test_specs_without_spread_or_affinity_serialise_as_before():
    # a spec stored before the fields existed must compare equal when resubmitted
    data = json.loads(spec.load_yaml(GOOD).to_json())
    assert "spread" not in data["groups"][0] and "affinity" not in data["groups"][0]


@pytest.mark.parametrize("block, path, words", [
    ('spread: [{attribute: "label.zone", weight: 0}]', "groups[0].spread[0].weight", "greater than or equal to 1"),
    ('spread: [{attribute: "label.zone", weight: 101}]', "groups[0].spread[0].weight", "less than or equal to 100"),
    ('spread: [{attribute: ""}]', "groups[0].spread[0].attribute", "at least 1"),
    ('spread: [{attribute: "label.zone", target: "a"}]', "groups[0].spread[0].target", "unknown field"),
    ('spread: [{attribute: "label.zone"}, {attribute: "label.zone"}]', "groups[0].spread", "spread over twice"),
    ('affinity: [{attribute: "label.zone", value: "a"}]', "groups[0].affinity[0].weight", "required field"),
    ('affinity: [{attribute: "label.zone", value: "a", weight: 0}]', "groups[0].affinity[0].weight", "must not be 0"),
    ('affinity: [{attribute: "label.zone", value: "a", weight: -101}]', "groups[0].affinity[0].weight",
     "greater than or equal to -100"),
    ('affinity: [{attribute: "label.zone", operator: "in", value: "a", weight: 5}]', "groups[0].affinity[0]",
     "non-empty list"),
    ('affinity: [{attribute: "label.zone", operator: "~", value: "a", weight: 5}]',
     "groups[0].affinity[0].operator", "="),
    ('affinity: [{attribute: "label.zone", value: "a", weight: 5, hard: true}]', "groups[0].affinity[0].hard",
     "unknown field"),
], ids=["spread-weight-0", "spread-weight-101", "spread-empty-attribute", "spread-targets-unsupported",
        "spread-twice", "affinity-weight-missing", "affinity-weight-0", "affinity-weight-below-100",
        "affinity-in-needs-list", "affinity-bad-operator", "affinity-unknown-field"])
def test_spread_and_affinity_errors_name_the_field(block, path, words):
    errs = errors_of(GOOD + "    " + block + "\n")
    assert any(e.startswith(f"{path}: ") and words in e for e in errs), errs
