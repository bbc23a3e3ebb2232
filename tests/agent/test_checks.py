"""Health checks (issue 13): the probes against real servers on 127.0.0.1, the counting of failures
in a row, and the InstanceManager acting on them over a FakeDriver with a scripted probe: health in
etcd as it changes, an unhealthy instance killed and restarted in place, events that say why."""
from __future__ import annotations

import asyncio
import dataclasses
import http.server
import socket
import threading

import pytest

from agent.checks import FAILING, PASSING, Health, Outcome, probe, unhealthy, unhealthy_message
from packyard.policies import CheckPolicy, RestartPolicy
from tests.agent.test_manager import MemoryEtcd, spec, state_is, world  # noqa: F401  (fixture)
from tests.conftest import eventually


def tcp(port, **kw) -> CheckPolicy:
    return CheckPolicy(type="tcp", port=port, **{"interval": 0.05, "timeout": 0.5, "failures": 2, "grace": 0.0, **kw})


def http_check(port, path="/healthz", **kw) -> CheckPolicy:
    return dataclasses.replace(tcp(port, **kw), type="http", path=path)


async def no_exec(command, timeout):
    raise AssertionError("not an exec check")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def web():
    """A real HTTP server on 127.0.0.1 answering each path with the status set for it."""
    statuses = {"/healthz": 200}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(statuses.get(self.path, 404))
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], statuses
    server.shutdown()
    server.server_close()


# -- the probes, against real sockets ------------------------------------------------------------------

async def test_http_passes_on_2xx_and_3xx_and_fails_otherwise(web):
    port, statuses = web
    assert await probe(http_check(port), "127.0.0.1", no_exec) == Outcome(True)
    statuses["/healthz"] = 302
    assert (await probe(http_check(port), "127.0.0.1", no_exec)).ok
    statuses["/healthz"] = 503
    assert await probe(http_check(port), "127.0.0.1", no_exec) == Outcome(False, "HTTP 503")
    assert await probe(http_check(port, path="/missing"), "127.0.0.1", no_exec) == Outcome(False, "HTTP 404")


async def test_tcp_and_http_name_a_refused_connection_and_a_missing_address(web):
    port, _ = web
    assert await probe(tcp(port), "127.0.0.1", no_exec) == Outcome(True)
    closed = free_port()
    assert await probe(tcp(closed), "127.0.0.1", no_exec) == Outcome(False, "connection refused")
    assert await probe(http_check(closed), "127.0.0.1", no_exec) == Outcome(False, "connection refused")
    assert await probe(tcp(port), "", no_exec) == Outcome(False, "the instance has no address")


async def test_a_server_that_never_answers_times_out():
    with socket.socket() as listener:          # accepts connections (the kernel does), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        out = await probe(http_check(port, timeout=0.2), "127.0.0.1", no_exec)
    assert out == Outcome(False, "timed out after 200ms")


async def test_exec_passes_on_exit_0_and_reports_the_last_line_otherwise():
    check = CheckPolicy(type="exec", command=("pg_isready",), timeout=0.2)

    async def answers(code, output):
        async def run(command, timeout):
            assert command == ("pg_isready",) and timeout == 0.2
            return code, output
        return await probe(check, "", run)
    assert await answers(0, "") == Outcome(True)
    assert await answers(2, "starting\nno response\n") == Outcome(False, "exit code 2: no response")

    async def hangs(command, timeout):
        await asyncio.sleep(10)
    assert await probe(check, "", hangs) == Outcome(False, "timed out after 200ms")


def test_failures_count_in_a_row_and_a_pass_resets_them():
    check = tcp(1, failures=3)
    h = Health()
    for _ in range(2):
        h = h.after(Outcome(False, "connection refused"))
    assert (h.status, h.failures, unhealthy(check, h)) == (FAILING, 2, False)
    h = h.after(Outcome(True))
    assert h == Health(PASSING)
    for _ in range(3):
        h = h.after(Outcome(False, "HTTP 500"))
    assert unhealthy(check, h)
    assert unhealthy_message(http_check(8080), h) == "check http :8080/healthz failed 3 times: HTTP 500"


# -- the manager acting on them ----------------------------------------------------------------------

class ScriptedProbe:
    """A probe answering as the test says: `ok` flips the instance between healthy and not."""

    def __init__(self):
        self.ok = True
        self.calls = 0

    async def __call__(self, policy, address, exec_in) -> Outcome:
        self.calls += 1
        return Outcome(True) if self.ok else Outcome(False, "connection refused")


def checked_spec(instance_id="a", attempts=2, **check) -> object:
    return dataclasses.replace(spec(instance_id), restart=RestartPolicy(attempts, 60.0, 0.05, "fail"),
                               check=http_check(8080, **check))


async def test_health_goes_to_etcd_and_an_unhealthy_instance_is_restarted(world):  # noqa: F811
    etcd, driver, store, manager = world
    scripted = ScriptedProbe()
    m = manager(probe=scripted)
    await m.start([checked_spec(failures=3)])
    passing = await eventually(lambda: (s := etcd.state("a")) is not None and s.health == PASSING and s,
                               timeout=2, what="a passing")
    assert passing.state == "running" and passing.reason == ""
    scripted.ok = False
    failing = await eventually(lambda: (s := etcd.state("a")) is not None and s.health == FAILING and s,
                               timeout=2, what="a failing")
    assert failing.state == "running" and failing.reason.startswith("check http :8080/healthz failing (1 of 3)")
    waiting = await state_is(etcd, "a", "starting")
    assert waiting.reason == ("check http :8080/healthz failed 3 times: connection refused; "
                              "restarting in 50ms (attempt 1 of 2)")
    assert waiting.health == "" and waiting.exit_code == 143     # killed with SIGTERM
    scripted.ok = True
    running = await state_is(etcd, "a", "running")
    assert running.restarts == 1 and driver.started == ["a", "a"]
    assert m.instances["a"].check_failures == 3


async def test_restarts_exhausted_by_a_failing_check_fail_the_instance(world):  # noqa: F811
    etcd, driver, store, manager = world
    scripted = ScriptedProbe()
    scripted.ok = False
    m = manager(probe=scripted)
    await m.start([checked_spec(attempts=0, failures=2)])
    failed = await state_is(etcd, "a", "failed")
    assert failed.reason == "check http :8080/healthz failed 2 times: connection refused"
    assert failed.events[-1]["message"].startswith("check http :8080/healthz failed 2 times")
    assert "a" not in m.instances


async def test_no_probe_before_the_grace_and_none_after_a_stop(world):  # noqa: F811
    etcd, driver, store, manager = world
    scripted = ScriptedProbe()
    m = manager(probe=scripted)
    await m.start([checked_spec(grace=0.3)])
    await state_is(etcd, "a", "running")
    await asyncio.sleep(0.15)
    assert scripted.calls == 0 and etcd.state("a").health == ""
    await eventually(lambda: scripted.calls > 0, timeout=2, what="probed after the grace")
    await m.stop(["a"], grace=1)
    stopped = await state_is(etcd, "a", "stopped")
    calls = scripted.calls
    await asyncio.sleep(0.2)
    assert scripted.calls == calls and etcd.state("a") == stopped   # no late health report after the end


async def test_check_failures_are_counted_for_prometheus(world):  # noqa: F811
    from agent.usage import UsageCollector
    etcd, driver, store, manager = world
    scripted = ScriptedProbe()
    scripted.ok = False
    m = manager(probe=scripted)
    await m.start([checked_spec(failures=50), spec("b")])
    await eventually(lambda: m.instances["a"].check_failures >= 2, timeout=2, what="two failures")
    (family,) = [f for f in UsageCollector(etcd, "n1", m).collect()
                 if f.name == "packyard_instance_check_failures"]
    # only instances with a check have the series
    [sample] = family.samples
    assert sample.name == "packyard_instance_check_failures_total"
    assert sample.labels["packyard_instance"] == "a" and sample.value >= 2


def test_a_batch_instance_killed_by_its_check_did_not_complete_even_if_it_exited_0():
    from agent.drivers.base import ExitResult
    from agent.restarts import after_exit
    batch = dataclasses.replace(checked_spec(attempts=0), job_type="batch")
    ended = after_exit(batch, ExitResult(0, reason="exit status 0"), False, [], 0.0,
                       cause="check http :8080/healthz failed 3 times: HTTP 500")
    assert (ended.state, ended.reason) == ("failed", "check http :8080/healthz failed 3 times: HTTP 500")
    plain = after_exit(batch, ExitResult(0, reason="exit status 0"), False, [], 0.0)
    assert plain.state == "complete"
