"""`ctl status` of a big job: a summary by group and state instead of one line per instance, unless
--all; `-o json` is the contract and lists every instance whatever the size."""
from __future__ import annotations

import pytest

from ctl import render
from packyard.v1 import scheduler_pb2


def job(states: dict[tuple[str, str], int], reason: str = "") -> scheduler_pb2.JobStatus:
    s = scheduler_pb2.JobStatus(name="big", state="running", version=1, priority=50)
    n = 0
    for (group, state), count in states.items():
        for _ in range(count):
            s.instances.add(id=f"big.{group}.{n}-1", group=group, state=state, desired="run",
                            node="" if state == "pending" else f"sim-{n % 7:05d}",
                            reason=reason if state == "pending" else "")
            n += 1
    return s


BIG = {("web", "running"): 90, ("web", "pending"): 7, ("db", "starting"): 3}


def test_a_big_job_is_summarised_per_group_and_state():
    text = render.status_text(job(BIG, reason="no host fits: 7 not enough cpu"))
    assert "big.web.0-1" not in text and len(text.splitlines()) < 15
    rows = {tuple(line.split()) for line in text.splitlines()}
    assert {("web", "running", "90"), ("web", "pending", "7"), ("db", "starting", "3")} <= rows
    assert "7 pending" in text and "90 running" in text and "3 starting" in text
    assert "no host fits: 7 not enough cpu" in text   # why anything is pending, with how many
    assert "--all" in text


def test_all_lists_every_instance():
    text = render.status_text(job(BIG), list_all=True)
    assert sum(line.startswith("big.") for line in text.splitlines()) == 100


@pytest.mark.parametrize("count", [1, render.SUMMARY_OVER], ids=["one", "at-the-limit"])
def test_a_small_job_is_listed(count):
    text = render.status_text(job({("web", "running"): count}))
    assert sum(line.startswith("big.web.") for line in text.splitlines()) == count


def test_json_lists_every_instance_whatever_the_size():
    assert len(render.status_json(job(BIG))["instances"]) == 100


def test_the_json_keys_issues_13_and_14_name():
    """Each instance's restarts, health, exit_code and events (with time and message); the
    deployment's version, state and per-group counts; history's time, stable flag and changes."""
    s = job({("web", "running"): 1})
    s.instances[0].events.add(at=12.5, message="exited with code 1; restarting in 2s (attempt 2 of 3)")
    s.deployment.version, s.deployment.state = 2, "awaiting promotion"
    s.deployment.groups["web"].desired = 3
    out = render.status_json(s)
    inst = out["instances"][0]
    assert {k: inst[k] for k in ("restarts", "health", "exit_code")} == {"restarts": 0, "health": "unknown",
                                                                       "exit_code": None}
    assert inst["events"] == [{"at": 12.5, "time": 12.5,
                               "message": "exited with code 1; restarting in 2s (attempt 2 of 3)"}]
    assert {k: out["deployment"][k] for k in ("version", "state", "groups")} == {
        "version": 2, "state": "awaiting promotion",
        "groups": {"web": {"desired": 3, "placed": 0, "healthy": 0, "unhealthy": 0}}}
    h = scheduler_pb2.HistoryResponse(name="big", versions=[scheduler_pb2.JobVersion(
        version=1, submitted_at=100.0, stable=True, current=True, changes=["(new job)"])])
    assert render.history_json(h) == [{"version": 1, "submitted_at": 100.0, "time": 100.0, "stable": True,
                                       "current": True, "note": "", "changes": ["(new job)"],
                                       "failed": False, "same_as": None}]


def test_a_revert_says_where_it_went_in_status_and_history():
    """A reverted deployment names the version it rolls out and the one whose spec that is; history
    marks the failed version and the new one's spec as that version's."""
    s = job({("web", "running"): 1})
    s.deployment.version, s.deployment.state, s.deployment.target, s.deployment.reverted_to = 2, "reverted", 3, 1
    d = render.status_json(s)["deployment"]
    assert (d["version"], d["state"], d["target"], d["reverted_to"]) == (2, "reverted", 3, 1)
    s.deployment.state, s.deployment.target, s.deployment.reverted_to = "running", 0, 0   # an older scheduler's
    d = render.status_json(s)["deployment"]
    assert (d["target"], d["reverted_to"]) == (2, None)
    h = scheduler_pb2.HistoryResponse(name="big", versions=[
        scheduler_pb2.JobVersion(version=1, changes=["(new job)"]),
        scheduler_pb2.JobVersion(version=2, failed=True, changes=["groups[web].count: 1 → 2"]),
        scheduler_pb2.JobVersion(version=3, stable=True, current=True, same_as=1, changes=["groups[web].count: 2 → 1"],
                                 note="revert to version 1 after version 2 failed")])
    assert [(v["version"], v["stable"], v["failed"], v["same_as"]) for v in render.history_json(h)] == [
        (1, False, False, None), (2, False, True, None), (3, True, False, 1)]
    rows = [line.split(None, 3) for line in render.history_table(h).splitlines()[1:]]
    assert [r[0] for r in rows] == ["1", "2", "3"]
    table = render.history_table(h)
    assert "no (failed)" in table.splitlines()[2] and "revert to version 1 after version 2 failed (the spec of " \
        "version 1): groups[web].count: 2 → 1" in table.splitlines()[3], table


def test_wide_shows_the_image_digest_each_instance_runs():
    """Issue 16: the digest a tag resolved to, per instance (a tag may move between two pulls)."""
    s = job({("web", "running"): 3})
    digests = ["sha256:" + c * 64 for c in "abc"]
    for i, d in zip(s.instances, [digests[0], digests[1], ""], strict=True):
        i.image_digest = d
    rows = [line.split() for line in render.status_text(s, wide=True).splitlines()[1:]]
    column = rows[0].index("IMAGE")
    assert [r[column] for r in rows[1:]] == [digests[0], digests[1], "-"]
    assert "sha256:" not in render.status_text(s)          # the plain table stays as it was
