"""What `ctl status` / `ctl list` say of a job (issue 13): stopped, running, and for a batch job
complete once every instance meant to run completed, failed once all ended and one did not."""
import itertools

import pytest

from packyard.records import TERMINAL, JobRecord
from packyard.spec import validate
from scheduler.controller import ControllerConfig
from scheduler.service import job_state
from tests.conftest import eventually
from tests.scheduler.inprocess import start_agent, start_scheduler

STATES = ("pending", "starting", "running", "exited", "failed", "lost", "stopped", "complete")


@pytest.mark.parametrize("job_type", ["service", "batch", "system"])
@pytest.mark.parametrize("n", [0, 1, 2, 3])
def test_job_state_over_every_mix_of_instance_states(job_type, n):
    running, stopped = JobRecord(name="j", spec_json="{}", version=1), \
        JobRecord(name="j", spec_json="{}", version=1, desired="stop")
    for live in itertools.product(STATES, repeat=n):
        assert job_state(stopped, job_type, live) == "stopped"
        got = job_state(running, job_type, live)
        if job_type != "batch" or not live or not set(live) <= TERMINAL:
            assert got == "running", (job_type, live, got)
        else:
            assert got == ("complete" if set(live) == {"complete"} else "failed"), (live, got)


def batch(command: str, count=2):
    return validate({"name": "crunch", "type": "batch", "groups": [
        {"name": "work", "count": count, "resources": {"cpu": "100m", "memory": "32Mi"},
         "container": {"command": ["/bin/sh", "-c", command]},
         "restart": {"attempts": 0}, "reschedule": {"attempts": 0}}]})


async def test_a_batch_job_is_complete_once_every_instance_is_and_failed_once_one_failed_for_good(etcd, tmp_path):
    agents = [await start_agent(etcd, f"n{i}", tmp_path / f"n{i}") for i in (1, 2)]
    sched = await start_scheduler(etcd, ControllerConfig(tick=0.1))
    try:
        await eventually(lambda: len(sched.controller.state.nodes) == 2, what="nodes registered")

        async def running_all():
            s = await sched.status("crunch")
            live = [i for i in s.instances if i.desired == "run"]
            return all(i.state == "running" for i in live) and len(live) == 2 and s
        for codes, want in (((0, 0), "complete"), ((0, 3), "failed")):
            await sched.submit(batch(f"exit {sum(codes)}"))     # a new spec each round: new instances
            s = await eventually(running_all, what="both running")
            assert s.state == "running"
            live = sorted((i for i in s.instances if i.desired == "run"), key=lambda i: i.id)
            for inst, code in zip(live, codes, strict=True):
                agent = next(a for a in agents if a.name == inst.node)
                agent.driver.exit(inst.id, code)
            s = await eventually(lambda want=want: _state_is(sched, want), what=f"the job {want}")
            listed = {j.name: j.state for j in (await sched.stub.List(_list())).jobs}
            assert listed["crunch"] == want
            assert sorted(i.state for i in s.instances if i.desired == "run") == \
                ["complete", "complete"] if want == "complete" else ["complete", "failed"]
    finally:
        await sched.close()
        for a in agents:
            await a.kill()


async def _state_is(sched, want):
    s = await sched.status("crunch")
    return s if s.state == want else None


def _list():
    from packyard.v1 import scheduler_pb2
    return scheduler_pb2.ListRequest()
