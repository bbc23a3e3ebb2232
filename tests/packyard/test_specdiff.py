"""Field-by-field diffs of job specs (issue 14's history and plan)."""
from packyard.specdiff import diff


def spec(**group):
    return {"name": "shop", "groups": [{"name": "web", "count": 2, **group}]}


def test_changed_added_and_removed_fields_by_path_groups_by_name():
    old = {"name": "shop", "groups": [{"name": "web", "count": 2, "container": {"command": ["a"]}},
                                      {"name": "db", "count": 1}]}
    new = {"name": "shop", "priority": 60, "groups": [
        {"name": "db", "count": 1}, {"name": "web", "count": 3, "container": {"command": ["b"]}, "update": {"canary": 1}},
        {"name": "cache", "count": 1}]}
    assert diff(old, new) == ["groups[cache]: added", 'groups[web].container.command: ["a"] → ["b"]',
                              "groups[web].count: 2 → 3", 'groups[web].update: (default) → {"canary":1}',
                              "priority: (default) → 60"]
    assert diff(new, old)[0] == "groups[cache]: removed"


def test_no_change_a_new_job_and_long_values_cut():
    assert diff(spec(), spec()) == []
    assert diff(None, spec()) == ["(new job)"]
    (line,) = diff(spec(env={"A": "x"}), spec(env={"A": "y" * 200}))
    assert line.startswith('groups[web].env.A: "x" → "yyy') and line.endswith("…") and len(line) < 120
