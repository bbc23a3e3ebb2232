"""HOST:PORT flags of packyard-scheduler and packyard-agent: a bad one is a usage error naming the flag
(exit 2, one line), never a traceback from bind() nor a wait for etcd. No server is started: each
case fails while the flags are parsed, before any connection (etcd at port 1 would only refuse)."""
from __future__ import annotations

import random

import pytest
from click.testing import CliRunner

from agent.main import main as agent_main
from packyard.hostport import parse_host_port
from scheduler.main import main as scheduler_main

rng = random.Random(7)
HOSTS = ["127.0.0.1", "0.0.0.0", "[::1]", "localhost", "10.213.9.1"]
GOOD = [(h, p) for h in HOSTS for p in (0, 1, 65535, *rng.sample(range(2, 65535), 4))]
BAD = ["nope", "127.0.0.1", ":7070", "127.0.0.1:", "127.0.0.1:x1", "127.0.0.1:-1", "127.0.0.1:1.5",
       *(f"{h}:{p}" for h in HOSTS for p in (65536, 99999, *rng.sample(range(65536, 10 ** 7), 2)))]


@pytest.mark.parametrize("host,port", GOOD)
def test_good_addresses_parse(host, port):
    assert parse_host_port(f"{host}:{port}") == (host, port)


@pytest.mark.parametrize("value", BAD)
def test_bad_addresses_are_refused_saying_why(value):
    with pytest.raises(ValueError, match="HOST:PORT|out of range"):
        parse_host_port(value)


AGENT = ["--etcd", "http://127.0.0.1:1", "--node", "n1", "--drivers", "fake"]
CASES = [(scheduler_main, [], flag) for flag in ("--listen", "--metrics", "--embedded-etcd-listen")] + \
        [(agent_main, AGENT, flag) for flag in ("--listen", "--advertise", "--metrics", "--metrics-advertise")]


@pytest.mark.parametrize("main,args,flag", CASES)
@pytest.mark.parametrize("value", rng.sample(BAD, 6))
def test_a_bad_address_flag_is_a_usage_error_naming_it(main, args, flag, value, tmp_path):
    r = CliRunner().invoke(main, [*args, "--state-dir", str(tmp_path), flag, value])
    assert r.exit_code == 2, r.output
    assert f"Invalid value for '{flag}'" in r.output and "Traceback" not in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)


@pytest.mark.parametrize("main,args,flag,value", [
    (scheduler_main, [], "--confirm-timeout", "0"), (scheduler_main, [], "--confirm-timeout", "-5"),
    (agent_main, AGENT, "--lease-ttl", "0"), (agent_main, AGENT, "--lease-ttl", "-3"),
    (agent_main, AGENT, "--usage-interval", "0"), (agent_main, AGENT, "--usage-interval", "-1"),
    (agent_main, AGENT, "--pull-progress-deadline", "-2")])
def test_non_positive_durations_are_usage_errors(main, args, flag, value, tmp_path):
    r = CliRunner().invoke(main, [*args, "--state-dir", str(tmp_path), flag, value])
    assert r.exit_code == 2 and f"Invalid value for '{flag}'" in r.output, r.output


def test_an_agent_metrics_port_it_cannot_bind_is_one_line_not_a_traceback(tmp_path):
    # 192.0.2.1 (TEST-NET-1) is no address of this host: bind() fails at once
    r = CliRunner().invoke(agent_main, [*AGENT, "--state-dir", str(tmp_path), "--metrics", "192.0.2.1:9"])
    assert r.exit_code == 1, r.output
    assert r.output.strip().count("\n") == 0 and "--metrics 192.0.2.1:9" in r.output, r.output


# -- the agent's other start-up flags that must be refused by name, not carried into the node record

@pytest.mark.parametrize("value,words", [
    ("bogus", "unknown driver"), ("container,bogus", "unknown driver"), ("docker", "unknown driver"),
    ("vm,kvm", "unknown driver"), (",", "no driver given"), ("Container", "unknown driver")])
def test_an_unknown_driver_is_a_usage_error_naming_drivers(value, words, tmp_path):
    r = CliRunner().invoke(agent_main, [*AGENT[:4], "--state-dir", str(tmp_path), "--drivers", value])
    assert r.exit_code == 2 and f"Invalid value for --drivers: {words}" in r.output, r.output


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "1.5", "x", "1e3", "65", str(10 ** 400)])
def test_a_gpu_capacity_that_is_not_a_whole_count_is_a_usage_error(value, tmp_path):
    r = CliRunner().invoke(agent_main, [*AGENT, "--state-dir", str(tmp_path), "--capacity", f"cpu=2,gpu={value}"])
    assert r.exit_code == 2 and f"gpu={value}: a host's GPUs are a whole number" in r.output, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)


BAD_ETCD = ["nope", "http://", "ftp://127.0.0.1:2379", ",", " , ", "http://127.0.0.1:99999", "127.0.0.1:x",
            "http://127.0.0.1:2379,nope", *(f"http://10.213.9.1:{p}" for p in rng.sample(range(65536, 10 ** 6), 2))]


@pytest.mark.parametrize("main,args", [(scheduler_main, []), (agent_main, AGENT[2:])])
@pytest.mark.parametrize("value", BAD_ETCD)
def test_a_bad_etcd_url_is_a_usage_error_naming_etcd(main, args, value, tmp_path):
    r = CliRunner().invoke(main, ["--etcd", value, *args, "--state-dir", str(tmp_path)])
    assert r.exit_code == 2 and "Invalid value for '--etcd': " in r.output, r.output
    assert "etcd endpoint" in r.output or "no etcd endpoint" in r.output, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)


@pytest.mark.parametrize("value,says", [
    ("zone=a,zone=b", "label 'zone' is given twice"), ("a=1,b=2,a=1", "label 'a' is given twice"),
    ("my zone=a", "label key 'my zone' has a space"), ("zone", "label 'zone' is not key=value"),
    ("=a", "label '=a' is not key=value"), ("ra\tck=1", "has a space"),
])
def test_labels_a_constraint_could_not_tell_apart_are_usage_errors(value, says, tmp_path):
    r = CliRunner().invoke(agent_main, [*AGENT, "--state-dir", str(tmp_path), "--labels", value])
    assert r.exit_code == 2 and says in r.output, r.output
