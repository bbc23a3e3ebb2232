"""`ctl submit --wait`'s polling (ctl/main.py), over scripted Status replies: when it stops waiting
for a service's update, a job's first version, and a canary awaiting promotion."""
from __future__ import annotations

import pytest

from ctl import main
from packyard.v1 import scheduler_pb2


class Scripted:
    """A client whose Status replies are the script's, one per call, the last repeated."""

    def __init__(self, replies: list[scheduler_pb2.JobStatus]):
        self.replies, self.calls = replies, 0

    def call(self, method: str, request):
        assert method == "Status"
        reply = self.replies[min(self.calls, len(self.replies) - 1)]
        self.calls += 1
        return reply


def status(version: int, instances: list[tuple[str, int, str, str]], deployment: str | None,
           deployment_version: int | None = None) -> scheduler_pb2.JobStatus:
    """instances: (id, version, state, desired)."""
    s = scheduler_pb2.JobStatus(name="shop", state="running", version=version)
    for iid, v, state, desired in instances:
        s.instances.add(id=iid, version=v, state=state, desired=desired)
    if deployment is not None:
        s.deployment.version, s.deployment.state = deployment_version or version, deployment
    return s


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    monkeypatch.setattr(main.time, "sleep", lambda _: None)


def test_an_update_is_waited_for_until_its_deployment_ends_not_until_its_last_instance_runs():
    # count 1: its one new instance runs at once; the deployment judges it min_healthy_time later
    last_runs = status(2, [("shop.web.0-1", 1, "stopped", "stop"), ("shop.web.0-2", 2, "running", "run")], "running")
    reverted = status(3, [("shop.web.0-1", 1, "stopped", "stop"), ("shop.web.0-2", 2, "failed", "stop"),
                          ("shop.web.0-3", 3, "running", "run")], "reverted", deployment_version=2)
    client = Scripted([last_runs, last_runs, last_runs, reverted])
    got = main.wait_running(client, "shop", timeout=60, quiet=True, version=2)
    assert client.calls == 4 and got.deployment.state == "reverted"


@pytest.mark.parametrize("state", ["successful", "failed", "awaiting promotion"])
def test_an_update_stops_waiting_once_its_deployment_has_ended_or_awaits_promotion(state):
    running = status(2, [("shop.web.0-1", 1, "running", "run"), ("shop.web.1-2", 2, "running", "run"),
                         ("shop.web.1-1", 1, "stopped", "stop")], "running")
    client = Scripted([running, running, _with_state(running, state)])
    assert main.wait_running(client, "shop", timeout=60, quiet=True, version=2).deployment.state == state
    assert client.calls == 3


def test_a_first_version_is_waited_for_until_every_instance_runs():
    starting = status(1, [("shop.web.0-1", 1, "starting", "run"), ("shop.web.1-1", 1, "running", "run")], "running")
    running = status(1, [("shop.web.0-1", 1, "running", "run"), ("shop.web.1-1", 1, "running", "run")], "running")
    client = Scripted([starting, running])
    assert main.wait_running(client, "shop", timeout=60, quiet=True, version=1).deployment.state == "running"
    assert client.calls == 2


def _with_state(s: scheduler_pb2.JobStatus, state: str) -> scheduler_pb2.JobStatus:
    out = scheduler_pb2.JobStatus()
    out.CopyFrom(s)
    out.deployment.state = state
    return out


def test_a_failure_decided_to_be_reverted_is_waited_through_until_reverted():
    """The failure and its revert are two writes: between them the deployment shows `failed`
    with `reverted_to` (where it goes back to). --wait ends on `reverted`, not on that moment;
    a failure with nowhere to go, or a revert's own rollout failing, ends it at once."""
    live = [("shop.web.0-1", 1, "running", "run"), ("shop.web.1-2", 2, "failed", "run")]
    failing = status(2, live, "failed")
    failing.deployment.target, failing.deployment.reverted_to = 2, 1
    reverted = status(3, live, "reverted", deployment_version=2)
    reverted.deployment.target, reverted.deployment.reverted_to = 3, 1
    client = Scripted([failing, failing, reverted])
    assert main.wait_running(client, "shop", timeout=60, quiet=True, version=2).deployment.state == "reverted"
    assert client.calls == 3
    nowhere = status(2, live, "failed")
    nowhere.deployment.target = 2
    rollback_failed = status(3, live, "failed", deployment_version=2)
    rollback_failed.deployment.target, rollback_failed.deployment.reverted_to = 3, 1
    for ended in (nowhere, rollback_failed):
        client = Scripted([ended])
        assert main.wait_running(client, "shop", timeout=60, quiet=True, version=2).deployment.state == "failed"
        assert client.calls == 1
