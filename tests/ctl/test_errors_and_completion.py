"""ctl's one error style and its local checks, without a scheduler: click's usage errors are the
same one `error:` line (exit 2) as the rest, and numeric options are refused before any call."""
import json
import os
import random
import socket
import subprocess
import sys

import pytest
from click.testing import CliRunner

from agent.main import main as agent_main

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
@pytest.mark.parametrize("text, words", [
    ('current-context = "x"\n[contexts.x\n', "not valid TOML"),
    ('current-context = "x"\n[contexts.x]\nscheduler = 1\n', "contexts.x.scheduler: expected a non-empty string"),
])
def test_a_broken_ctl_toml_named_by_packyard_config_is_said_not_skipped(tmp_path, text, words):
    """Issue 17: PACKYARD_CONFIG may name ctl's file; one that does not parse is an error naming
    it (exit 2, before any call), not a silent fall back to 127.0.0.1:7070."""
    broken = tmp_path / "ctl.toml"
    broken.write_text(text)
    env = {k: v for k, v in os.environ.items() if k not in ("PACKYARD_CTL_CONFIG", "XDG_CONFIG_HOME")}
    r = subprocess.run([sys.executable, "-m", "ctl.main", "nodes"], capture_output=True, text=True, timeout=60,
                       env={**env, "HOME": str(tmp_path), "PACKYARD_CONFIG": str(broken)})
    assert r.returncode == 2 and r.stderr.startswith(f"error: {broken}: ") and words in r.stderr, r.stderr
    assert len(r.stderr.splitlines()) == 1


def _typos(seed: int, n: int) -> list[str]:
    """Driver lists with one name mistyped (a letter dropped, doubled, swapped or upper-cased)."""
    rng, out = random.Random(seed), []
    while len(out) < n:
        name = rng.choice(["container", "vm", "fake:container"])
        k = rng.randrange(len(name))
        typo = rng.choice([name[:k] + name[k + 1:], name[:k] + name[k] + name[k:], name[:k] + name[k:].upper(),
                           name[:k] + name[k + 1:k + 2] + name[k:k + 1] + name[k + 2:]])
        if typo != name:
            out.append(",".join(rng.sample(["vm", typo, "container"], rng.randrange(1, 3)) + [typo])[:60])
    return out


@pytest.mark.parametrize("value", ["bogus", ",", " , ", "auto,vm", "vm,auto", "Container", "container;vm", "fake:gpu",
                                   "docker", "x" * 300, *_typos(17, 6)])
def test_local_up_refuses_drivers_with_the_agents_own_reason_before_starting_anything(tmp_path, value):
    """Issue 17: an unknown or malformed --drivers is refused by the agent's own check (one check,
    drivercheck.driver_names), on ctl's one error line, exit 2, before etcd, the scheduler or any
    agent starts: the reason is the one packyard-agent itself gives."""
    agent = CliRunner().invoke(agent_main, ["--etcd", "http://127.0.0.1:1", "--node", "n1",
                                            "--state-dir", str(tmp_path / "agent"), "--drivers", value])
    assert agent.exit_code == 2, agent.output          # (an accepted value would start a cluster below)
    reason = agent.output.split("Invalid value for --drivers: ", 1)[1].strip()
    work = tmp_path / "work"
    # should the check ever be skipped: one host in a corner of its own, torn down as soon as it is up
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        ports = [str(a.getsockname()[1]), str(b.getsockname()[1])]
    r = ctl("local", "up", "--workdir", str(work), "--prometheus-port", "0", "--once", "--hosts", "1",
            "--net", "10.213.254.0/29", "--prefix", "pkdrv", "--scheduler-port", ports[0], "--etcd-port", ports[1],
            "--drivers", value)
    assert (r.returncode, r.stderr) == (2, f"error: Invalid value for '--drivers': {reason}\n")
    assert not work.exists()


def _leaves(group, path=()):
    for name, command in sorted(group.commands.items()):
        if hasattr(command, "commands"):
            yield from _leaves(command, (*path, name))
        else:
            yield (*path, name), command


def test_every_command_takes_output():
    """Issue 17: `-o json|yaml|wide` on every command (`local up` runs a cluster in the foreground:
    what it prints is progress, not a reply)."""
    from ctl.main import cli
    without = [" ".join(path) for path, command in _leaves(cli)
               if path != ("local", "up") and not any("-o" in p.opts for p in command.params)]
    assert without == []


def test_config_and_certs_commands_answer_json(tmp_path):
    env = {**{k: v for k, v in os.environ.items() if k not in ("PACKYARD_CTL_CONFIG", "PACKYARD_CONFIG")},
           "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    file = str(tmp_path / "xdg/packyard/ctl.toml")

    def run(*args):
        r = subprocess.run([sys.executable, "-m", "ctl.main", *args], capture_output=True, text=True,
                           timeout=60, env=env)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    assert run("config", "set-context", "a", "--scheduler", "10.0.0.1:7070", "-o", "json") == {
        "path": file, "name": "a", "scheduler": "10.0.0.1:7070", "tls": None, "current": False}
    assert run("-o", "json", "config", "use-context", "a") == {"path": file, "current": "a"}
    assert run("config", "current-context", "-o", "json") == {"path": file, "current": "a"}
    assert run("config", "set-context", "a", "--scheduler", "10.0.0.2:7070", "-o", "json")["current"] is True
    assert run("config", "delete-context", "a", "-o", "json") == {"path": file, "deleted": "a"}
    certs = tmp_path / "certs"
    written = run("certs", "init", str(certs), "-o", "json")
    assert written["directory"] == str(certs) and str(certs / "ca.crt") in written["written"]
    assert run("certs", "issue", str(certs), "agent", "h1", "-o", "json") == {
        "directory": str(certs), "role": "agent", "name": "h1",
        "written": [str(certs / "agent-h1.crt"), str(certs / "agent-h1.key")]}
    script = run("completion", "bash", "-o", "json")
    assert script["shell"] == "bash" and "_CTL_COMPLETE" in script["script"]


@pytest.mark.parametrize("address", ["bad:port", "::", "host", "h:0", "h:70000", "h:7070,x", "", "h :1"])
def test_a_scheduler_address_that_is_not_host_port_is_bad_input(address):
    """A typo in --scheduler is exit 2 naming the flag, not exit 1 "cannot reach the scheduler"."""
    r = subprocess.run([sys.executable, "-m", "ctl.main", "--scheduler", address, "nodes"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.startswith("error: --scheduler: ") and len(r.stderr.splitlines()) == 1, \
        r.stderr


@pytest.mark.parametrize("address", ["127.0.0.1:9", "[::1]:9", "127.0.0.1:9,", "localhost:9,127.0.0.1:9"])
def test_good_scheduler_addresses_are_dialled(address):
    r = subprocess.run([sys.executable, "-m", "ctl.main", "--timeout", "2", "--scheduler", address, "nodes"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "cannot reach the scheduler" in r.stderr, r.stderr


def test_set_context_refuses_a_bad_address_and_writes_nothing(tmp_path):
    file = tmp_path / "ctl.toml"
    r = subprocess.run([sys.executable, "-m", "ctl.main", "config", "set-context", "lab", "--scheduler", "lab:x"],
                       capture_output=True, text=True, timeout=60, env={**os.environ, "PACKYARD_CTL_CONFIG": str(file)})
    assert (r.returncode, r.stderr.strip()) == (2, "error: --scheduler: 'lab:x' is not HOST:PORT (e.g. 127.0.0.1:7070)")
    assert not file.exists()


def test_a_context_with_a_bad_address_is_named(tmp_path):
    file = tmp_path / "ctl.toml"
    file.write_text('current-context = "lab"\n[contexts.lab]\nscheduler = "lab.example"\n')
    env = {**os.environ, "PACKYARD_CTL_CONFIG": str(file)}
    env.pop("PACKYARD_SCHEDULER", None)
    r = subprocess.run([sys.executable, "-m", "ctl.main", "nodes"], capture_output=True, text=True, timeout=60,
                       env=env)
    assert (r.returncode, r.stderr.strip()) == (
        2, "error: context 'lab': scheduler: 'lab.example' is not HOST:PORT (e.g. 127.0.0.1:7070)")
