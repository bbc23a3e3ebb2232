"""ctl's one error style and its local checks, without a scheduler: click's usage errors are the
same one `error:` line (exit 2) as the rest, and numeric options are refused before any call."""
import os
import subprocess
import sys

import pytest

NOWHERE = "127.0.0.1:9"     # nothing listens: a check that called out would say "cannot reach"


def ctl(*args, env=None):
    return subprocess.run([sys.executable, "-m", "ctl.main", "--scheduler", NOWHERE, *args],
                          capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize("args,names", [
    (["logs", "x", "--tail", "-5"], "'--tail': -5 is not in the range x>=0"),
    (["submit", "job.yaml", "--wait", "--timeout", "0"], "'--timeout': 0.0 is not in the range x>0"),
    (["submit", "job.yaml", "--timeout", "inf"], "inf is not a finite number of seconds"),
    (["top", "--interval", "-1"], "'--interval'"),
    (["rollback", "shop", "--version", "0"], "'--version'"),
    (["nodes", "--bogus"], "No such option '--bogus'"),
    (["nodes", "-o", "xml"], "'-o' / '--output': 'xml' is not one of"),
    (["-o", "xml", "nodes"], "'-o' / '--output': 'xml' is not one of"),
    (["status"], "Missing argument 'JOB'"),
    (["frobnicate"], "No such command 'frobnicate'"),
    (["completion", "tcsh"], "'tcsh' is not one of"),
    (["certs", "init", "/tmp/x", "--days", "0"], "days: 0"),
], ids=["tail", "timeout-zero", "timeout-inf", "interval", "rollback-version", "unknown-option",
        "output-after", "output-before", "missing-argument", "unknown-command", "shell", "days"])
def test_bad_input_is_one_error_line_exit_2_before_any_call(args, names):
    r = ctl(*args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert names in r.stderr and "cannot reach" not in r.stderr and "Usage:" not in r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize("shell,marker", [("bash", "complete -o nosort -F"), ("zsh", "#compdef ctl"),
                                          ("fish", "complete --no-files --command ctl")])
def test_completion_scripts_are_clicks(shell, marker):
    r = ctl("completion", shell)
    assert r.returncode == 0, r.stderr
    assert marker in r.stdout and "_CTL_COMPLETE" in r.stdout


def test_completion_answers_with_commands_and_options():
    """What the bash script asks ctl for: the subcommands, and a command's flags."""
    env = {"_CTL_COMPLETE": "bash_complete", "COMP_WORDS": "ctl no", "COMP_CWORD": "1", "PATH": "/usr/bin"}
    r = subprocess.run([sys.executable, "-c", "from ctl.main import main; main()"], capture_output=True,
                       text=True, timeout=60, env=env)
    assert "plain,nodes" in r.stdout.split(), r.stdout + r.stderr
    env["COMP_WORDS"], env["COMP_CWORD"] = "ctl nodes --w", "2"
    r = subprocess.run([sys.executable, "-c", "from ctl.main import main; main()"], capture_output=True,
                       text=True, timeout=60, env=env)
    assert "plain,--watch" in r.stdout.split(), r.stdout + r.stderr


@pytest.mark.parametrize("addresses,names", [
    (",", "--scheduler: no HOST:PORT given"), (" , ", "--scheduler: no HOST:PORT given"),
    ("nope", "'nope' is not HOST:PORT"), ("127.0.0.1", "'127.0.0.1' is not HOST:PORT"),
    ("127.0.0.1:99999", "port 99999 is out of range"), ("[::1]:65536", "port 65536 is out of range"),
    (f"{NOWHERE},bad:x", "'bad:x' is not HOST:PORT"), (f"host:7070,{NOWHERE},:1", "':1' is not HOST:PORT"),
])
@pytest.mark.parametrize("how", ["flag", "env"])
def test_a_scheduler_address_that_is_not_host_port_is_bad_input_before_any_call(addresses, names, how):
    args = ["nodes"] if how == "env" else ["--scheduler", addresses, "nodes"]
    env = {**os.environ, "PACKYARD_SCHEDULER": addresses} if how == "env" else None
    r = subprocess.run([sys.executable, "-m", "ctl.main", *args], capture_output=True, text=True,
                       timeout=60, env=env)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.startswith("error: --scheduler: ") and r.stderr.count("\n") == 1, r.stderr
    assert names in r.stderr and "cannot reach" not in r.stderr


GROUP = "{name: %s, count: 1, resources: {cpu: %s, memory: 64Mi}%s}"
SPEC_PROBLEMS = [   # (the group's name, cpu, extra fields) -> what the error names
    (("web", "1", ", colour: red"), ["groups[0].colour: unknown field"]),
    (("web", "-1", ""), ["groups[0].resources.cpu"]),
    (("web", "1", ", colour: red, size: 3"), ["groups[0].colour: unknown field", "groups[0].size: unknown field"]),
    (("Web", "abc", ", kind: pod"), ["groups[0].name", "groups[0].kind", "groups[0].resources.cpu"]),
]


@pytest.mark.parametrize("group,names", SPEC_PROBLEMS)
def test_a_bad_spec_is_one_error_line_naming_every_problem(tmp_path, group, names):
    path = tmp_path / "job.yaml"
    path.write_text("name: shop\ngroups: [" + GROUP % group + "]\n")
    r = ctl("submit", str(path))
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.startswith("error: invalid job spec: ") and r.stderr.count("\n") == 1, r.stderr
    assert all(n in r.stderr for n in names), r.stderr


@pytest.mark.parametrize("args,flag", [
    (["--prefix", "Bad_"], "--prefix"), (["--prefix", "abcdefghijkl"], "--prefix"), (["--prefix", "-x"], "--prefix"),
    (["--capacity", "cpu=x"], "--capacity"), (["--capacity", "memory=1Zi"], "--capacity"),
    (["--capacity", "gpu=inf"], "--capacity"), (["--capacity", "disks=1"], "--capacity"),
    (["--drivers", "bogus"], "--drivers"), (["--drivers", "container,dokker"], "--drivers"),
])
def test_local_up_refuses_what_its_agents_would_before_starting_anything(tmp_path, args, flag):
    # each agent would refuse these (or, for a long prefix, its veths' names would collide) only
    # after etcd and the scheduler were up: refused first, and nothing is made
    work = tmp_path / "work"
    r = ctl("local", "up", "--workdir", str(work), "--prometheus-port", "0", *args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.startswith(f"error: Invalid value for '{flag}': ") and r.stderr.count("\n") == 1, r.stderr
    assert not work.exists()
