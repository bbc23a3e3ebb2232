"""The scheduler's and the agent's flags: a bad value is one `Invalid value for '--FLAG'` line and exit 2
before anything starts (no embedded etcd, no dial, no traceback). etcd's endpoint 127.0.0.1:9 is
closed: a flag that got through would hang dialling it or start a scheduler, not exit 2."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from agent import main as agent_main
from scheduler import main as scheduler_main

SCHEDULER = [
    (["--etcd", "notaurl"], "'--etcd': etcd endpoint 'notaurl' must be"),
    (["--etcd", "127.0.0.1:99999"], "'--etcd': etcd endpoint '127.0.0.1:99999': the port is not"),
    (["--etcd", "ftp://x:1"], "'--etcd': etcd endpoint 'ftp://x:1'"),
    (["--etcd", " , "], "'--etcd': no etcd endpoint"),
    (["--listen", "127.0.0.1:99999"], "'--listen': '127.0.0.1:99999': port 99999 is out of range"),
    (["--metrics", "127.0.0.1:99999"], "'--metrics': '127.0.0.1:99999': port 99999 is out of range"),
    (["--metrics", "nowhere"], "'--metrics': 'nowhere' is not HOST:PORT"),
    (["--confirm-timeout", "-1"], "'--confirm-timeout': -1.0 is not in the range x>0"),
    (["--confirm-timeout", "nan"], "'--confirm-timeout': nan is not a finite number of seconds"),
    (["--confirm-timeout", "inf"], "'--confirm-timeout': inf is not a finite number of seconds"),
]
AGENT = [
    (["--etcd", "notaurl"], "'--etcd': etcd endpoint 'notaurl' must be"),
    (["--usage-interval", "nan"], "'--usage-interval': nan is not a finite number of seconds"),
    (["--usage-interval", "0"], "'--usage-interval': 0.0 is not in the range x>0"),
    (["--pull-progress-deadline", "-3"], "'--pull-progress-deadline': -3.0 is not in the range x>0"),
    (["--pull-progress-deadline", "inf"], "'--pull-progress-deadline': inf is not a finite number"),
    (["--lease-ttl", "0"], "'--lease-ttl': 0 is not in the range x>=1"),
    (["--driver-check-interval", "0.5"], "'--driver-check-interval': 0.5 is not in the range x>=1"),
    (["--driver-check-interval", "nan"], "'--driver-check-interval': nan is not a finite number"),
]


@pytest.mark.parametrize("args, words", SCHEDULER, ids=[" ".join(a) for a, _ in SCHEDULER])
def test_the_scheduler_refuses_a_bad_flag_in_one_line(tmp_path, args, words):
    base = ["--state-dir", str(tmp_path / "s"), "--listen", "127.0.0.1:0"]
    if "--etcd" not in args:
        base += ["--etcd", "127.0.0.1:9"]
    result = CliRunner().invoke(scheduler_main.main, [*base, *args])
    assert result.exit_code == 2 and f"Invalid value for {words}" in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "s").exists()


@pytest.mark.parametrize("args, words", AGENT, ids=[" ".join(a) for a, _ in AGENT])
def test_the_agent_refuses_a_bad_flag_in_one_line(tmp_path, args, words):
    base = ["--node", "n1", "--state-dir", str(tmp_path / "s")]
    if "--etcd" not in args:
        base += ["--etcd", "127.0.0.1:9"]
    result = CliRunner().invoke(agent_main.main, [*base, *args])
    assert result.exit_code == 2 and f"Invalid value for {words}" in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "s").exists()
