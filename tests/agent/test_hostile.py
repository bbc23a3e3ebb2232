"""The agent against hostile callers and hostile specs: malformed Start/Stop/Logs requests are
INVALID_ARGUMENT naming the field (never INTERNAL, never a traceback in the log) and touch nothing;
job paths must resolve inside --allowed-dirs; privileged mode and the host's network only with
--allow-privileged, and then they really are what they say."""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import boundary
from agent.drivers.base import DriverError, InstanceSpec
from agent.drivers.fake import FakeDriver
from agent.drivers.paths import allowed_path, parse_allowed_dirs
from agent.manager import InstanceManager
from agent.reporter import Reporter
from agent.server import AgentService
from packyard import keys
from packyard.etcd import Etcd
from packyard.policies import CheckPolicy, RestartPolicy
from packyard.v1 import agent_pb2, agent_pb2_grpc, common_pb2
from tests.agent.conftest import RUNC, needs_root, needs_runc
from tests.conftest import wait_for
from tests.loop_thread import LoopThread, Tracebacks

NODE = "hostile-agent"
MI = 1 << 20


def good(**kw) -> agent_pb2.InstanceSpec:
    fields = dict(id="shop.web.0-1", job="shop", group="web", kind="container",
                  request=common_pb2.Resources(cpu_milli=250, memory_bytes=64 * MI),
                  limit=common_pb2.Resources(cpu_milli=260, memory_bytes=72 * MI),
                  driver_json=json.dumps({"command": ["/bin/sleep", "1"]}))
    return agent_pb2.InstanceSpec(**{**fields, **kw})


# -- the boundary, pure ---------------------------------------------------------------------------

@pytest.mark.parametrize("fields,field", [
    ({"id": "../../etc/passwd"}, "instances[0].id"),
    ({"id": "a/b"}, "instances[0].id"),
    ({"id": ".."}, "instances[0].id"),
    ({"id": ".hidden"}, "instances[0].id"),
    ({"id": "a..b"}, "instances[0].id"),
    ({"id": ""}, "instances[0].id"),
    ({"id": "x" * 201}, "instances[0].id"),
    ({"id": "a\x00b"}, "instances[0].id"),
    ({"id": "web\n"}, "instances[0].id"),
    ({"job": "Bad_Job"}, "instances[0].job"),
    ({"group": ""}, "instances[0].group"),
    ({"kind": "../vm"}, "instances[0].kind"),
    ({"kind": ""}, "instances[0].kind"),
    ({"limit": common_pb2.Resources(cpu_milli=-1, memory_bytes=64 * MI)}, "instances[0].limit.cpu_milli"),
    ({"limit": common_pb2.Resources(cpu_milli=0, memory_bytes=64 * MI)}, "instances[0].limit.cpu_milli"),
    ({"limit": common_pb2.Resources(cpu_milli=10**15, memory_bytes=64 * MI)}, "instances[0].limit.cpu_milli"),
    ({"limit": common_pb2.Resources(cpu_milli=250, memory_bytes=1 << 62)}, "instances[0].limit.memory_bytes"),
    ({"request": common_pb2.Resources(cpu_milli=-5)}, "instances[0].request.cpu_milli"),
    ({"request": common_pb2.Resources(cpu_milli=5, disk_bytes=-1)}, "instances[0].request.disk_bytes"),
    ({"request": common_pb2.Resources(cpu_milli=5, disk_bytes=1 << 62)}, "instances[0].request.disk_bytes"),
    ({"driver_json": "{"}, "instances[0].driver_json"),
    ({"driver_json": "[]"}, "instances[0].driver_json"),
    ({"driver_json": "[" * 100_000}, "instances[0].driver_json"),
    ({"driver_json": '{"a": ' + "9" * 5000 + "}"}, "instances[0].driver_json"),
    ({"driver_json": json.dumps({"x": "y" * (2 << 20)})}, "instances[0].driver_json"),
    ({"gpus": [0, 0]}, "instances[0].gpus"),
    ({"gpus": [boundary.MAX_GPU_INDEX + 1]}, "instances[0].gpus"),
    ({"gpus": list(range(boundary.MAX_GPUS + 1))}, "instances[0].gpus"),
    ({"job_type": "daemon"}, "instances[0].job_type"),
    ({"restart": agent_pb2.RestartPolicy(attempts=3, interval_seconds=0, delay_seconds=1, mode="fail")},
     "instances[0].restart.interval_seconds"),
    ({"restart": agent_pb2.RestartPolicy(attempts=3, interval_seconds=60, delay_seconds=float("nan"), mode="fail")},
     "instances[0].restart.delay_seconds"),
    ({"restart": agent_pb2.RestartPolicy(attempts=10**6, interval_seconds=60, mode="fail")},
     "instances[0].restart.attempts"),
    ({"restart": agent_pb2.RestartPolicy(attempts=1, interval_seconds=60, mode="sometimes")},
     "instances[0].restart.mode"),
    ({"check": agent_pb2.HealthCheck(type="ping", port=80, interval_seconds=1, timeout_seconds=1, failures=1)},
     "instances[0].check.type"),
    ({"check": agent_pb2.HealthCheck(type="tcp", interval_seconds=1, timeout_seconds=1, failures=1)},
     "instances[0].check.port"),
    ({"check": agent_pb2.HealthCheck(type="exec", interval_seconds=1, timeout_seconds=1, failures=1)},
     "instances[0].check.command"),
    ({"check": agent_pb2.HealthCheck(type="http", port=80, path="x y", interval_seconds=1, timeout_seconds=1,
                                     failures=1)}, "instances[0].check.path"),
    ({"check": agent_pb2.HealthCheck(type="tcp", port=80, interval_seconds=1, timeout_seconds=1, failures=0)},
     "instances[0].check.failures"),
    ({"check": agent_pb2.HealthCheck(type="tcp", port=80, interval_seconds=float("inf"), timeout_seconds=1,
                                     failures=1)}, "instances[0].check.interval_seconds"),
], ids=lambda v: None)
def test_boundary_names_the_field(fields, field):
    with pytest.raises(ValueError) as e:
        boundary.to_spec(good(**fields), "instances[0]")
    assert str(e.value).startswith(f"{field}: ") and "\n" not in str(e.value)


def test_boundary_accepts_what_the_scheduler_sends():
    spec = boundary.to_spec(good(), "instances[0]")
    assert (spec.id, spec.cpu_milli, spec.config["command"]) == ("shop.web.0-1", 260, ["/bin/sleep", "1"])
    assert spec.gpus == () and boundary.to_spec(good(gpus=[3, 1]), "instances[0]").gpus == (3, 1)
    # resources.disk as the job asked it (the request; 0: unlimited)
    assert spec.disk_bytes == 0
    assert boundary.to_spec(good(request=common_pb2.Resources(cpu_milli=250, memory_bytes=64 * MI,
                                                              disk_bytes=8 * MI)), "instances[0]").disk_bytes == 8 * MI
    # from a scheduler before issue 13: a service, never restarted in place, no check
    assert (spec.job_type, spec.restart, spec.check) == ("service", None, None)
    kept = boundary.to_spec(good(job_type="batch", restart=agent_pb2.RestartPolicy(
        attempts=3, interval_seconds=60, delay_seconds=1, mode="delay"), check=agent_pb2.HealthCheck(
        type="http", port=8080, path="/healthz", interval_seconds=2, timeout_seconds=1, failures=3,
        grace_seconds=5)), "instances[0]")
    assert kept.job_type == "batch" and kept.restart == RestartPolicy(3, 60, 1, "delay")
    assert kept.check == CheckPolicy("http", (), 8080, "/healthz", 2, 1, 3, 5)


@pytest.mark.parametrize("value,expected", [(0, 10.0), (-3, 10.0), (float("nan"), 10.0), (float("inf"), 10.0),
                                            (2.5, 2.5), (1e9, boundary.MAX_GRACE_SECONDS)])
def test_grace_seconds(value, expected):
    assert boundary.grace_seconds(value) == expected


# -- the real gRPC service, over a fake driver and real etcd ------------------------------------------

@dataclass
class Api:
    thread: LoopThread
    stub: agent_pb2_grpc.AgentStub
    driver: FakeDriver
    etcd: Etcd
    state_dir: Path

    def states(self) -> dict[str, str | bytes]:
        _, kvs = self.thread.run(self.etcd.get_prefix(keys.state_prefix(NODE)))
        return {keys.last(kv.key): kv.value for kv in kvs}


@pytest.fixture(scope="module")
def api(etcd_server, tmp_path_factory):
    thread = LoopThread()
    state_dir = tmp_path_factory.mktemp("hostile-agent")

    async def up():
        etcd = Etcd(etcd_server.endpoint)
        await etcd.connect()
        await etcd.delete_prefix(keys.state_prefix(NODE))
        driver = FakeDriver("container", state_dir)
        manager = InstanceManager(NODE, state_dir, {"container": driver}, Reporter(etcd, NODE))
        server = grpc.aio.server()
        agent_pb2_grpc.add_AgentServicer_to_server(AgentService(NODE, manager), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return etcd, driver, manager, server, port

    etcd, driver, manager, server, port = thread.run(up())
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    with Tracebacks() as tracebacks:
        yield Api(thread, agent_pb2_grpc.AgentStub(channel), driver, etcd, state_dir)
    channel.close()

    async def down():
        await server.stop(grace=0)
        await manager.shutdown()
        await etcd.delete_prefix(keys.state_prefix(NODE))
        await etcd.close()
    thread.run(down())
    thread.close()
    assert tracebacks.records == []


def code_of(call) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as e:
        return e.code(), e.details()
    return grpc.StatusCode.OK, ""


def test_a_hostile_start_touches_nothing(api):
    bad = [good(id="../../handles/x"), good(id="ok.web.0-1")]
    code, details = code_of(lambda: api.stub.Start(agent_pb2.StartRequest(node=NODE, instances=bad)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "instances[0].id" in details
    assert "ok.web.0-1" not in api.driver.started and "ok.web.0-1" not in api.states()
    assert not list(api.state_dir.rglob("*x.json"))


def test_a_good_start_is_accepted(api):
    reply = api.stub.Start(agent_pb2.StartRequest(node=NODE, instances=[good(id="fine.web.0-1")]))
    assert [(r.id, r.accepted) for r in reply.results] == [("fine.web.0-1", True)]


def test_gpus_reach_the_handle_and_the_inventory(api):
    reply = api.stub.Start(agent_pb2.StartRequest(node=NODE, instances=[good(id="gpu.web.0-1", gpus=[2, 0])]))
    assert [(r.id, r.accepted) for r in reply.results] == [("gpu.web.0-1", True)]
    saved = api.state_dir / "handles" / "gpu.web.0-1.json"
    wait_for(saved.exists, timeout=5, what="the handle saved", interval=0.02)
    assert json.loads(saved.read_text())["spec"]["gpus"] == [2, 0]     # what a restarted agent reads
    entries = api.stub.Inventory(agent_pb2.InventoryRequest(node=NODE)).instances
    assert {e.id: list(e.gpus) for e in entries}["gpu.web.0-1"] == [2, 0]


@pytest.mark.parametrize("request_", [
    agent_pb2.AgentStopRequest(node=NODE, ids=["fine.web.0-1", "../state/other/x"]),
    agent_pb2.AgentStopRequest(node=NODE, ids=["a/b"], grace_seconds=float("nan")),
], ids=["dotdot", "slash"])
def test_a_hostile_stop_is_refused_and_reports_nothing(api, request_):
    code, details = code_of(lambda: api.stub.Stop(request_))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "ids[" in details
    states = api.states()            # (other instances' starting -> running may land meanwhile)
    assert '"stopped"' not in as_str(states.get("fine.web.0-1", "")) and "x" not in states and "b" not in states
    _, kvs = api.thread.run(api.etcd.get_prefix("/packyard/state/"))
    assert not [kv.key for kv in kvs if ".." in as_str(kv.key) or as_str(kv.key).count("/") != 4]


def as_str(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


@pytest.mark.parametrize("instance_id,code", [
    ("../../../../etc/passwd", grpc.StatusCode.INVALID_ARGUMENT),
    ("../handles/fine.web.0-1", grpc.StatusCode.INVALID_ARGUMENT),
    ("", grpc.StatusCode.INVALID_ARGUMENT),
    ("never.web.0-1", grpc.StatusCode.NOT_FOUND),
])
def test_logs_of_hostile_ids(api, instance_id, code):
    got, details = code_of(lambda: list(api.stub.Logs(common_pb2.LogsRequest(instance_id=instance_id))))
    assert got == code and details


text = st.text(max_size=20) | st.sampled_from(["..", "a/b", "../x", "shop", "web", "container", "vm", ""])
amounts = st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.integers(0, 4000)
instance_specs = st.builds(
    agent_pb2.InstanceSpec, id=text, job=text, group=text, kind=text,
    request=st.builds(common_pb2.Resources, cpu_milli=amounts, memory_bytes=amounts),
    limit=st.builds(common_pb2.Resources, cpu_milli=amounts, memory_bytes=amounts),
    driver_json=st.text(max_size=40) | st.sampled_from(["{}", '{"command": ["/bin/true"]}', "null", "[1]"]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=st.lists(instance_specs, max_size=3), node=st.sampled_from([NODE, "", "other", "../x"]))
def test_fuzzed_starts_are_answered_cleanly(api, specs, node):
    code, details = code_of(lambda: api.stub.Start(agent_pb2.StartRequest(node=node, instances=specs)))
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)
    if code == grpc.StatusCode.OK:
        assert all(boundary.INSTANCE_ID.match(s.id) and ".." not in s.id for s in specs)
    else:
        assert details and "Traceback" not in details


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ids=st.lists(text, max_size=3), grace=st.floats(allow_nan=True), instance_id=text)
def test_fuzzed_stops_and_logs_are_answered_cleanly(api, ids, grace, instance_id):
    code, _ = code_of(lambda: api.stub.Stop(agent_pb2.AgentStopRequest(node=NODE, ids=ids, grace_seconds=grace)))
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT)
    code, _ = code_of(lambda: list(api.stub.Logs(common_pb2.LogsRequest(instance_id=instance_id,
                                                                        tail_bytes=-5))))
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)


# -- paths ----------------------------------------------------------------------------------------

@pytest.fixture
def dirs(tmp_path):
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "kernel").write_text("k")
    (outside / "secret").write_text("s")
    (allowed / "escape").symlink_to(outside / "secret")
    (allowed / "inner").symlink_to(allowed / "kernel")
    return allowed, outside


@pytest.mark.parametrize("name,problem", [
    ("allowed/kernel", None),
    ("allowed/inner", None),
    ("allowed/escape", "outside the directories this node allows"),
    ("outside/secret", "outside the directories this node allows"),
    ("allowed/../outside/secret", "without '..'"),
    ("allowed/kernel\n", "control characters"),
], ids=["inside", "symlink-inside", "symlink-out", "outside", "dotdot", "newline"])
def test_allowed_path(dirs, name, problem):
    allowed, _ = dirs
    path = f"{allowed.parent}/{name}"
    if problem is None:
        assert allowed_path(path, [allowed], "vm.kernel") == allowed / "kernel"
    else:
        with pytest.raises(DriverError, match=re.escape(problem)):
            allowed_path(path, [allowed], "vm.kernel")


def test_relative_paths_and_non_strings_are_refused(dirs):
    for path in ("kernel", None, 5, ""):
        with pytest.raises(DriverError, match="not an absolute path"):
            allowed_path(path, [dirs[0]], "container.image")


def test_parse_allowed_dirs():
    assert parse_allowed_dirs("/srv, /var/lib/packyard,") == (Path("/srv"), Path("/var/lib/packyard"))
    for bad in ("", "srv", "/a,b"):
        with pytest.raises(ValueError):
            parse_allowed_dirs(bad)


async def test_a_vm_outside_the_allowed_dirs_is_refused_before_libvirt(dirs, tmp_path):
    from agent.drivers.vm import VMDriver
    allowed, _ = dirs
    driver = VMDriver("t-vm", tmp_path / "state", subnet=None, allowed_dirs=[allowed])
    for field in ("kernel", "disk"):
        spec = InstanceSpec(id="j.g.0-1", job="j", group="g", kind="vm", cpu_milli=1000, memory_bytes=128 * MI,
                            config={field: str(allowed / "escape")})
        with pytest.raises(DriverError, match=f"vm.{field} .* is outside the directories"):
            await driver.start(spec)
    assert driver._conn is None        # refused before any libvirt connection was made


# -- the container driver on real runc: images, privileged mode, the host's network ------------------

@pytest.fixture
async def containers(node, state_dir, subnet, tmp_path):
    """Two drivers on one node, one with --allow-privileged; every handle destroyed at the end."""
    from agent.drivers.container import ContainerDriver
    allowed = tmp_path / "images"
    allowed.mkdir()
    made = {privileged: ContainerDriver(node, state_dir / str(privileged), subnet, runc=RUNC,
                                        allowed_dirs=[allowed], allow_privileged=privileged)
            for privileged in (False, True)}
    handles = []

    async def start(privileged: bool, config: dict, iid: str = "t.g.0-1"):
        spec = InstanceSpec(id=iid, job="t", group="g", kind="container", cpu_milli=500,
                            memory_bytes=64 * MI, config={"command": PROBE, **config})
        h = await made[privileged].start(spec)
        handles.append((made[privileged], h))
        return made[privileged], h

    yield start, allowed
    for driver, h in handles:
        await driver.destroy(h)
    for driver in made.values():
        await driver.shutdown()


PROBE = ["/bin/sh", "-c", "grep CapEff /proc/self/status; readlink /proc/self/ns/net; sleep 60"]


async def probe(driver, handle) -> tuple[int, str]:
    """(effective capabilities, network namespace) as the container saw them."""
    from tests.conftest import eventually
    text = await eventually(lambda: (lambda t: t if t.count("\n") >= 2 else "")(
        driver.log_path(handle).read_text()), what="the probe's output")
    caps, netns = text.splitlines()[:2]
    return int(caps.split()[1], 16), netns.strip()


def mask(names) -> int:
    from agent.drivers.container import runc as runc_mod
    return sum(1 << runc_mod.ALL_CAPABILITIES.index(n) for n in names)


@needs_root()
@needs_runc()
async def test_privileged_and_host_network_are_refused_without_the_flag(containers):
    start, _ = containers
    for field in ("privileged", "host_network"):
        with pytest.raises(DriverError, match=f"container.{field} is not allowed .*--allow-privileged"):
            await start(False, {field: True})


@needs_root()
@needs_runc()
async def test_ordinary_privileged_and_host_network_containers(containers):
    from agent.drivers.container import runc as runc_mod
    start, _ = containers
    host_netns = os.readlink("/proc/self/ns/net")
    caps, netns = await probe(*await start(True, {}, "t.plain.0-1"))
    assert caps == mask(runc_mod.CAPABILITIES) and netns != host_netns
    caps, netns = await probe(*await start(True, {"privileged": True}, "t.priv.0-1"))
    assert caps == mask(runc_mod.host_capabilities()) and netns != host_netns
    driver, h = await start(True, {"host_network": True}, "t.hostnet.0-1")
    caps, netns = await probe(driver, h)
    assert caps == mask(runc_mod.CAPABILITIES) and netns == host_netns
    assert driver.address(h) == ""


@needs_root()
@needs_runc()
async def test_an_image_outside_the_allowed_dirs_is_refused_and_leaves_nothing(containers, tmp_path):
    start, allowed = containers
    (allowed / "root").symlink_to("/")
    for image, problem in ((str(allowed / "root"), "resolves to /"), ("/etc", "outside the directories"),
                           (str(allowed / ".." / "x"), "without '..'")):
        with pytest.raises(DriverError, match=re.escape(problem)):
            await start(False, {"image": image})
    assert not [p for p in tmp_path.rglob("instances/*")]


def test_privileged_config_masks_nothing_and_allows_every_device():
    from agent.drivers.container import runc as runc_mod
    kw = dict(args=["sh"], env={}, rootfs=Path("/r"), netns_path="/var/run/netns/x", cgroups_path="p/n/i",
              hostname="i")
    plain, priv = runc_mod.config(**kw), runc_mod.config(**kw, privileged=True)
    assert plain["linux"]["maskedPaths"] and plain["process"]["noNewPrivileges"]
    assert priv["linux"]["maskedPaths"] == [] == priv["linux"]["readonlyPaths"]
    assert priv["process"]["noNewPrivileges"] is False
    assert priv["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert "seccomp" not in priv["linux"]
    hostnet = runc_mod.config(**kw, host_network=True)
    assert "network" not in {n["type"] for n in hostnet["linux"]["namespaces"]}
