"""Issue 13's spec: job type, restart / reschedule / check blocks, durations, their defaults and
the errors that name the field."""
import hashlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from packyard import lifecycle, spec
from packyard.durations import DurationError, format_duration, parse_duration
from scheduler.reconciler import group_hash

ISSUE_EXAMPLE = """
name: api
type: service
groups:
  - name: web
    count: 3
    resources: {cpu: 100m, memory: 32Mi}
    restart: {attempts: 3, interval: 60s, delay: 1s, mode: fail}
    reschedule: {attempts: 0, interval: 1h, delay: 5s, max_delay: 5m, unlimited: true}
    check: {type: http, port: 8080, path: /healthz, interval: 2s, timeout: 1s, failures: 3, grace: 5s}
"""
PLAIN = """
name: api
groups:
  - name: web
    resources: {cpu: 100m, memory: 32Mi}
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(spec.SpecError) as e:
        spec.load_yaml(text)
    return e.value.errors


def with_group_lines(*lines: str, job_type: str = "service", kind: str = "container") -> str:
    extra = "".join(f"    {line}\n" for line in lines)
    vm = "    vm: {kernel: /boot/vmlinuz}\n" if kind == "vm" else ""
    return (f"name: api\ntype: {job_type}\ngroups:\n  - name: web\n    kind: {kind}\n"
            f"    resources: {{cpu: 100m, memory: 32Mi}}\n{vm}{extra}")


@pytest.mark.parametrize("text, seconds", [
    ("500ms", 0.5), ("5s", 5), ("10m", 600), ("1h", 3600), ("1m30s", 90), ("1.5s", 1.5), ("0s", 0),
    ("2h0m5s", 7205), ("0", 0), (0, 0), (0.0, 0)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("value, words", [
    (60, "no unit"), ("60", "no unit"), ("5 s", "not a duration"), ("-5s", "is negative"), ("-0.5s", "is negative"),
    ("5d", "not a duration"), ("", "not a duration"), (True, "expected a duration"),
    ("9000h", "longer than a year"), ([1], "expected a duration")])
def test_bad_durations(value, words):
    with pytest.raises(DurationError, match=words):
        parse_duration(value)


@given(st.integers(min_value=0, max_value=366 * 24 * 3600 * 1000))
def test_format_and_parse_durations_agree(ms):
    assert parse_duration(format_duration(ms / 1000)) == round(ms / 1000, 3)


def test_the_issue_example_is_accepted_and_round_trips():
    job = spec.load_yaml(ISSUE_EXAMPLE)
    g = job.groups[0]
    assert job.type == "service"
    assert lifecycle.restart_policy(job.type, g.restart) == lifecycle.RestartPolicy(3, 60, 1, "fail")
    assert lifecycle.reschedule_policy(job.type, g.reschedule) == lifecycle.ReschedulePolicy(0, 3600, 5, 300, True)
    assert lifecycle.check_policy(g.check) == lifecycle.CheckPolicy("http", (), 8080, "/healthz", 2, 1, 3, 5)
    assert spec.load_json(job.to_json()) == job
    stored = json.loads(job.to_json())["groups"][0]
    assert stored["restart"] == {"attempts": 3, "interval": "1m", "delay": "1s", "mode": "fail"}


def test_a_job_without_the_blocks_serialises_and_hashes_as_before():
    # stored before issue 13: resubmitting it is no change, and no running instance is replaced
    job = spec.load_yaml(PLAIN)
    stored = json.loads(job.to_json())
    assert "type" not in stored and not {"restart", "reschedule", "check", "update"} & stored["groups"][0].keys()
    data = job.groups[0].model_dump(mode="json")       # what group_hash hashed before the blocks
    for key in ("restart", "reschedule", "check", "update", "count"):
        del data[key]
    assert group_hash(job.groups[0]) == hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def test_changing_a_policy_is_a_new_group_version():
    a = spec.load_yaml(ISSUE_EXAMPLE).groups[0]
    b = spec.load_yaml(ISSUE_EXAMPLE.replace("attempts: 3", "attempts: 4")).groups[0]
    assert group_hash(a) != group_hash(b)


def test_defaults_differ_by_job_type_and_a_partial_block_keeps_the_rest():
    service, batch = (spec.load_yaml(with_group_lines("restart: {attempts: 5}", job_type=t)) for t in ("service", "batch"))
    rs = lifecycle.restart_policy("service", service.groups[0].restart)
    rb = lifecycle.restart_policy("batch", batch.groups[0].restart)
    assert (rs.attempts, rs.interval, rs.delay) == (5, 1800, 15)
    assert (rb.attempts, rb.interval, rb.delay) == (5, 86400, 15)
    assert lifecycle.reschedule_policy("batch", None).attempts == 1
    assert lifecycle.reschedule_policy("service", None).unlimited
    assert not lifecycle.reschedule_policy("system", None).unlimited
    assert lifecycle.check_policy(None) is None
    # what was left out stays out of the stored spec
    assert json.loads(batch.to_json())["groups"][0]["restart"] == {"attempts": 5}


def test_delays_grow_and_stop_growing():
    r = lifecycle.RestartPolicy(attempts=5, interval=10, delay=1)
    assert [r.delay_before(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    s = lifecycle.ReschedulePolicy(attempts=0, interval=3600, delay=5, max_delay=30, unlimited=True)
    assert [s.delay_before(n) for n in range(1, 6)] == [5, 10, 20, 30, 30]


@pytest.mark.parametrize("lines, job_type, kind, path, words", [
    (["check: {type: smtp, port: 25}"], "service", "container", "groups[0].check.type", "'exec', 'tcp' or 'http'"),
    (["check: {type: tcp, port: 0}"], "service", "container", "groups[0].check.port", "greater than or equal to 1"),
    (["check: {type: tcp, port: 65536}"], "service", "container", "groups[0].check.port", "less than or equal to 65535"),
    (["check: {type: http, port: 80}"], "service", "container", "groups[0].check.path", "needs a path"),
    (["check: {type: http, port: 80, path: healthz}"], "service", "container", "groups[0].check.path", "start with '/'"),
    (["check: {type: tcp}"], "service", "container", "groups[0].check.port", "needs a port"),
    (["check: {type: exec}"], "service", "container", "groups[0].check.command", "needs a command"),
    (["check: {type: exec, command: [/bin/true], port: 80}"], "service", "container", "groups[0].check.port",
     "not a port"),
    (["check: {type: tcp, port: 80, interval: 0s}"], "service", "container", "groups[0].check.interval",
     "more than 0"),
    (["check: {type: tcp, port: 80, timeout: 20s}"], "service", "container", "groups[0].check.timeout",
     "longer than the check's interval"),
    (["check: {type: tcp, port: 80, failures: 0}"], "service", "container", "groups[0].check.failures",
     "greater than or equal to 1"),
    (["check: {type: tcp, port: 80, every: 1s}"], "service", "container", "groups[0].check.every", "unknown field"),
    (["check: {type: exec, command: [/bin/true]}"], "service", "vm", "groups[0].check.type", "VMs take tcp and http"),
    (["restart: {attempts: -1}"], "service", "container", "groups[0].restart.attempts", "greater than or equal to 0"),
    (["restart: {interval: 0s}"], "service", "container", "groups[0].restart.interval", "more than 0"),
    (["restart: {interval: 60}"], "service", "container", "groups[0].restart.interval", "no unit"),
    (["restart: {mode: retry}"], "service", "container", "groups[0].restart.mode", "'fail' or 'delay'"),
    (["reschedule: {attempts: -2}"], "service", "container", "groups[0].reschedule.attempts", "greater than or equal to 0"),
    (["reschedule: {interval: -1h}"], "service", "container", "groups[0].reschedule.interval", "is negative"),
    (["check: {type: tcp, port: 80, interval: -2s}"], "service", "container", "groups[0].check.interval",
     "is negative"),
    (["check: {type: tcp, port: 80, interval: 0}"], "service", "container", "groups[0].check.interval",
     "more than 0"),
    (["reschedule: {delay: soon}"], "service", "container", "groups[0].reschedule.delay", "not a duration"),
    (["count: 3"], "system", "container", "groups[0].count", "one instance on every eligible node"),
], ids=["check-type", "check-port-0", "check-port-high", "http-no-path", "http-relative-path", "tcp-no-port",
        "exec-no-command", "exec-with-port", "check-interval-0", "check-timeout-long", "check-failures-0",
        "check-unknown-field", "vm-exec-check", "restart-attempts-negative", "restart-interval-0",
        "restart-interval-no-unit", "restart-mode", "reschedule-attempts-negative", "reschedule-interval-negative",
        "check-interval-negative", "check-interval-bare-0", "reschedule-delay-word", "system-count"])
def test_bad_blocks_name_the_field(lines, job_type, kind, path, words):
    errs = errors_of(with_group_lines(*lines, job_type=job_type, kind=kind))
    assert any(e.startswith(f"{path}: ") and words in e for e in errs), errs


def test_a_system_job_may_leave_count_out_or_say_one():
    assert spec.load_yaml(with_group_lines(job_type="system")).type == "system"
    assert spec.load_yaml(with_group_lines("count: 1", job_type="system")).groups[0].count == 1


def test_an_unknown_job_type_is_refused():
    assert any(e.startswith("type: ") for e in errors_of(PLAIN.replace("name: api", "name: api\ntype: daemon")))
