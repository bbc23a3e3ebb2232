"""The scheduler's gRPC API against hostile clients: random spec_json for Submit and Plan, random
names and ids for Status, Stop and Logs. Every answer is OK, INVALID_ARGUMENT or NOT_FOUND with a
readable message; never INTERNAL or UNKNOWN, never a traceback in the log. Privileged containers and
the host's network are refused by name unless the scheduler runs with --allow-privileged."""
from __future__ import annotations

import json
from dataclasses import dataclass

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from packyard.etcd import Etcd
from packyard.v1 import common_pb2, scheduler_pb2, scheduler_pb2_grpc
from scheduler.agents import AgentClients
from scheduler.controller import Controller, ControllerConfig
from scheduler.service import SchedulerService
from tests.loop_thread import LoopThread, Tracebacks

GOOD = {"name": "fuzz", "groups": [{"name": "web", "count": 2, "resources": {"cpu": 0.25, "memory": "64Mi"},
                                    "container": {"command": ["/bin/sleep", "60"]}}]}
CLEAN = (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@dataclass
class Api:
    stub: scheduler_pb2_grpc.SchedulerStub            # the scheduler as started by default
    permissive: scheduler_pb2_grpc.SchedulerStub      # the same controller, --allow-privileged


@pytest.fixture(scope="module")
def api(etcd_server):
    thread = LoopThread()

    async def up():
        etcd = Etcd(etcd_server.endpoint)
        await etcd.connect()
        await etcd.delete_prefix("/packyard/")
        controller = Controller(etcd, AgentClients(timeout=2), ControllerConfig())
        await controller.start()
        servers, ports = [], []
        for allow_privileged in (False, True):
            server = grpc.aio.server()
            scheduler_pb2_grpc.add_SchedulerServicer_to_server(SchedulerService(controller, allow_privileged),
                                                               server)
            ports.append(server.add_insecure_port("127.0.0.1:0"))
            await server.start()
            servers.append(server)
        return etcd, controller, servers, ports

    etcd, controller, servers, ports = thread.run(up())
    channels = [grpc.insecure_channel(f"127.0.0.1:{port}") for port in ports]
    with Tracebacks() as tracebacks:
        yield Api(*(scheduler_pb2_grpc.SchedulerStub(c) for c in channels))
    for c in channels:
        c.close()

    async def down():
        for server in servers:
            await server.stop(grace=0)
        await controller.stop()
        await controller.agents.close()
        await etcd.delete_prefix("/packyard/")
        await etcd.close()
    thread.run(down())
    thread.close()
    assert tracebacks.records == []


def answer(call, *args, also=()) -> tuple[grpc.StatusCode, str]:
    try:
        call(*args)
    except grpc.RpcError as e:
        assert e.code() in (*CLEAN, *also), (e.code(), e.details())
        assert e.details() and "Traceback" not in e.details()
        return e.code(), e.details()
    return grpc.StatusCode.OK, ""


scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
           | st.sampled_from(["9" * 400, "..", "/etc", "64Xi", "250m", "web\n"]))
documents = st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c,
                                                                                       max_size=3), max_leaves=15)


@st.composite
def spec_texts(draw):
    """Random text, random JSON documents, and the good spec with one value replaced."""
    kind = draw(st.sampled_from(["text", "document", "mutated"]))
    if kind == "text":
        return draw(st.text(max_size=200))
    if kind == "document":
        return json.dumps(draw(documents))
    doc = json.loads(json.dumps(GOOD))
    group = doc["groups"][0]
    where = draw(st.sampled_from([doc, group, group["resources"], group["container"]]))
    where[draw(st.sampled_from(sorted(where) + ["extra"]))] = draw(documents)
    return json.dumps(doc)


@FUZZ
@given(text=spec_texts())
def test_fuzzed_submit_and_plan(api, text):
    for call in (api.stub.Plan, api.stub.Submit):
        code, details = answer(call, scheduler_pb2.SubmitRequest(spec_json=text))
        assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT)
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            assert all(": " in line for line in details.splitlines()), details


names = st.text(max_size=40) | st.sampled_from(["", "..", "../../x", "fuzz", "fuzz.web.0-1", "a/b", "x" * 5000])


@FUZZ
@given(name=names)
def test_fuzzed_status_stop_and_logs(api, name):
    answer(lambda: api.stub.Status(scheduler_pb2.StatusRequest(name=name)))
    answer(lambda: api.stub.Stop(scheduler_pb2.StopRequest(name=name)))
    # the logs of a known instance not on a ready node yet: FAILED_PRECONDITION, "on no node yet"
    # (not UNAVAILABLE: ctl would take that for an unreachable scheduler)
    answer(lambda: list(api.stub.Logs(common_pb2.LogsRequest(instance_id=name, tail_bytes=-1))),
           also=(grpc.StatusCode.FAILED_PRECONDITION,))


def test_unknown_names_are_not_found(api):
    for call in (lambda: api.stub.Status(scheduler_pb2.StatusRequest(name="../nothing")),
                 lambda: api.stub.Stop(scheduler_pb2.StopRequest(name="nothing")),
                 lambda: list(api.stub.Logs(common_pb2.LogsRequest(instance_id="nothing.web.0-1")))):
        assert answer(call)[0] == grpc.StatusCode.NOT_FOUND


def test_a_huge_spec_is_refused_by_name(api):
    doc = json.loads(json.dumps(GOOD))
    doc["groups"][0]["container"]["env"] = {"BIG": "x" * (2 << 20)}
    code, details = answer(lambda: api.stub.Submit(scheduler_pb2.SubmitRequest(spec_json=json.dumps(doc))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "larger than 1 MiB" in details


@pytest.mark.parametrize("field,value", [("privileged", True), ("host_network", True), ("seccomp", "unconfined"),
                                         ("userns", "host")])
def test_host_access_needs_allow_privileged(api, field, value):
    doc = json.loads(json.dumps(GOOD))
    doc["name"] = f"host-{field.replace('_', '-')}"
    doc["groups"][0]["container"][field] = value
    request = scheduler_pb2.SubmitRequest(spec_json=json.dumps(doc))
    for call in (api.stub.Plan, api.stub.Submit):
        code, details = answer(call, request)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert details == f"groups[0].container.{field}: not allowed (the scheduler was not started with " \
                          "--allow-privileged)"
    assert api.permissive.Submit(request).changed
    status = api.stub.Status(scheduler_pb2.StatusRequest(name=doc["name"]))
    assert json.loads(status.spec_json)["groups"][0]["container"][field] == value


def test_a_rollback_to_a_version_asking_for_host_access_needs_allow_privileged(api):
    """An older version is admitted as its Submit would be now (the flag may have been dropped
    since it was submitted through another replica that had it)."""
    doc = json.loads(json.dumps(GOOD))
    doc["name"] = "host-rollback"
    plain = scheduler_pb2.SubmitRequest(spec_json=json.dumps(doc))
    doc["groups"][0]["container"]["seccomp"] = "unconfined"
    asking = scheduler_pb2.SubmitRequest(spec_json=json.dumps(doc))
    assert api.stub.Submit(plain).version == 1
    assert api.permissive.Submit(asking).version == 2
    assert api.stub.Submit(plain).version == 3
    code, details = answer(api.stub.Rollback, scheduler_pb2.RollbackRequest(name="host-rollback", version=2))
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, "groups[0].container.seccomp: not allowed (the "
                                                                 "scheduler was not started with --allow-privileged)")
    assert json.loads(api.stub.Status(scheduler_pb2.StatusRequest(name="host-rollback")).spec_json)[
        "groups"][0]["container"].get("seccomp") is None                     # still version 3's spec
    assert api.permissive.Rollback(scheduler_pb2.RollbackRequest(name="host-rollback", version=2)).version == 4
    code, _ = answer(api.stub.Rollback, scheduler_pb2.RollbackRequest(name="host-rollback", version=9))
    assert code == grpc.StatusCode.NOT_FOUND
