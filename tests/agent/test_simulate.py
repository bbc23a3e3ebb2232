"""Simulated hosts (`packyard-agent --simulate N`) against a real etcd, a real scheduler process and
the real `ctl`: what they put in etcd is what the scheduler reads from real agents."""
from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from packyard import keys, records
from packyard.records import StateRecord
from packyard.v1 import agent_pb2, agent_pb2_grpc, common_pb2
from tests.conftest import ROOT, eventually

SCHEDULER = "127.0.0.1:17846"   # not bench/scale.py's 17830: both may run at once
AGENT = "127.0.0.1:17847"
CAPACITY = "cpu=16,memory=64Gi"   # 32 instances of 0.5 cpu per host: 500 need at least 16 hosts


def spawn(args: list[str], log: Path) -> subprocess.Popen:
    with log.open("w") as out:   # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def end(proc: subprocess.Popen) -> None:
    proc.terminate()   # no-op once it has exited
    proc.wait(10)      # one that ignores SIGTERM fails the test rather than lingering


@pytest.fixture
def simulated(etcd, tmp_path):
    """50 simulated hosts sim-00000..sim-00049 in one agent process."""
    ready = tmp_path / "agent.ready"
    proc = spawn(["agent.main", "--etcd", etcd.endpoints, "--simulate", "50", "--node", "sim",
                  "--listen", AGENT, "--capacity", CAPACITY, "--ready-file", str(ready)],
                 tmp_path / "agent.log")
    yield proc, ready
    end(proc)


async def node_keys(etcd) -> dict[str, int]:
    """node name -> the lease its record is bound to."""
    got = await etcd.client.get_prefix(keys.NODES.encode())
    return {keys.last(kv.key): kv.lease for kv in got}


async def states(etcd) -> dict[str, StateRecord]:
    _, kvs = await etcd.get_prefix(keys.STATE)
    return {kv.key: records.loads(StateRecord, kv.value) for kv in kvs}


def spec(iid: str) -> agent_pb2.InstanceSpec:
    return agent_pb2.InstanceSpec(id=iid, job="j", group="g", kind="container",
                                  limit=common_pb2.Resources(cpu_milli=100, memory_bytes=1 << 20))


async def test_fifty_nodes_share_one_lease_and_start_instances(etcd, simulated):
    proc, ready = simulated
    nodes = await eventually(lambda: _all(node_keys(etcd), 50), timeout=20, what="50 node keys")
    assert sorted(nodes) == [f"sim-{i:05d}" for i in range(50)]
    assert len(set(nodes.values())) == 1 and 0 not in nodes.values()

    async with grpc.aio.insecure_channel(AGENT) as channel:
        stub = agent_pb2_grpc.AgentStub(channel)
        reply = await stub.Start(agent_pb2.StartRequest(node="sim-00007", instances=[spec("j.g.0-a")]))
        assert [(r.id, r.accepted) for r in reply.results] == [("j.g.0-a", True)]
        key = keys.state("sim-00007", "j.g.0-a")
        await eventually(lambda: _state_is(etcd, key, "running"), what="running in etcd")
        # asked about one node, it answers for that node alone (the scheduler's audit relies on it)
        mine = await stub.Inventory(agent_pb2.InventoryRequest(node="sim-00007"))
        other = await stub.Inventory(agent_pb2.InventoryRequest(node="sim-00008"))
        assert (mine.node, [i.id for i in mine.instances]) == ("sim-00007", ["j.g.0-a"])
        assert (other.node, list(other.instances)) == ("sim-00008", [])

        await stub.Stop(agent_pb2.AgentStopRequest(node="sim-00007", ids=["j.g.0-a"], grace_seconds=1))
        await eventually(lambda: _state_is(etcd, key, "stopped"), what="stopped in etcd")

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Start(agent_pb2.StartRequest(node="sim-00050", instances=[spec("j.g.1-b")]))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert set(await states(etcd)) == {key}   # nothing written for the refused node

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


async def test_scheduler_places_a_500_instance_job_over_simulated_hosts(etcd, simulated, tmp_path):
    proc, ready = simulated
    await eventually(lambda: _all(node_keys(etcd), 50), timeout=20, what="50 node keys")
    up = tmp_path / "scheduler.ready"
    scheduler = spawn(["scheduler.main", "--etcd", etcd.endpoints, "--listen", SCHEDULER,
                       "--ready-file", str(up)], tmp_path / "scheduler.log")
    try:
        await eventually(up.exists, timeout=20, what="the scheduler to listen")
        job = tmp_path / "big.yaml"
        job.write_text("name: big\ngroups:\n  - name: web\n    count: 500\n    kind: container\n"
                       "    resources: {cpu: 0.5, memory: 64Mi}\n")
        submit = subprocess.run([sys.executable, "-m", "ctl.main", "--scheduler", SCHEDULER, "submit",
                                 str(job), "--wait", "--timeout", "120", "-o", "json"],
                                cwd=ROOT, capture_output=True, text=True, timeout=180)
        assert submit.returncode == 0, submit.stderr[-2000:]
        status = json.loads(submit.stdout)
        per_node = collections.Counter(i["node"] for i in status["instances"])
        assert len(status["instances"]) == 500
        assert {i["state"] for i in status["instances"]} == {"running"}
        assert set(per_node) <= {f"sim-{i:05d}" for i in range(50)}
        assert len(per_node) >= 16 and max(per_node.values()) <= 32   # capacity bounds the packing

        persisted = await states(etcd)   # what the scheduler read came from etcd, as agents wrote it
        assert len(persisted) == 500 and {s.state for s in persisted.values()} == {"running"}
        assert {keys.state(i["node"], i["id"]) for i in status["instances"]} == set(persisted)
    finally:
        end(scheduler)


async def _all(coro, n: int):
    got = await coro
    return got if len(got) == n else None


async def _state_is(etcd, key: str, state: str) -> bool:
    raw = await etcd.get(key)
    return raw is not None and records.loads(StateRecord, raw).state == state
