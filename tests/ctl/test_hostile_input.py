"""ctl against hostile files: garbage, binary, deeply nested, huge, absurd values. ctl validates a
spec before it calls the scheduler, so none of these needs a cluster: each is one `error:` line
block, exit code 2, no traceback. Then, on a one-host cluster, what only the agent can check:
an image outside its --allowed-dirs and a privileged container it was not allowed to run both end
as failed instances whose reason `ctl status` shows."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ctl.local import LocalCluster
from packyard.spec import MAX_SPEC_BYTES
from tests.conftest import searchable_dir

UNREACHABLE = "127.0.0.1:1"      # nothing listens: a file that got past validation would exit 1

GOOD = """name: ok
groups:
  - name: web
    resources: {cpu: 0.1, memory: 16Mi}
"""
BOMB = "\n".join(['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
                 + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
                 + ["name: bomb", "groups: *a8"])


def ctl(*args: str, scheduler: str = UNREACHABLE) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctl.main", "--scheduler", scheduler, *args],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("content,expected", [
    (b"name: shop\ngroups: [\n", "(yaml) line"),
    (b"\xff\xfe\x00\x01binary\x00", "not UTF-8"),
    (bytes(range(256)) * 4, "not UTF-8"),
    (b"\x01\x02 control", "(yaml)"),
    (b"[" * 200_000, "nesting"),
    (b"a: " + b"[" * 40 + b"]" * 40, "nested more than 32"),
    (b"x: " + b"y" * (MAX_SPEC_BYTES + 10), "larger than 1 MiB"),
    (BOMB.encode(), "YAML aliases included"),
    (b"- just\n- a list\n", "must be a mapping"),
    (b"name: a\ngroups: [{name: g, resources: {cpu: 9999999999999999999999, memory: 1Mi}}]",
     "groups[0].resources.cpu"),
    (b"name: a\ngroups: [{name: g, resources: {cpu: .inf, memory: .nan}}]", "groups[0].resources.memory"),
    (b"name: a\ngroups: [{name: g, count: 100000000, resources: {cpu: 1, memory: 1Mi}}]", "groups[0].count"),
    (b"name: a\ngroups: [{name: g, resources: {cpu: 1, memory: 1Mi}, container: {image: /srv/../etc}}]",
     "groups[0].container.image: must not contain '..'"),
    (b"name: a\ngroups: [{name: g, resources: {cpu: 1, memory: 1Mi}, container: {privileged: 'yes'}}]",
     "groups[0].container.privileged"),
    (b"name: a\nname: b\ngroups: []", "groups"),
    (b"", "must be a mapping"),
    (b"name: a\ngroups: [{name: g, resources: {cpu: 1, memory: 1Mi}, check: {type: ping, port: 1}}]",
     "groups[0].check.type"),
    (b"name: a\ngroups: [{name: g, resources: {cpu: 1, memory: 1Mi}, check: {type: tcp, port: 99999}}]",
     "groups[0].check.port"),
    (b"name: a\ngroups: [{name: g, resources: {cpu: 1, memory: 1Mi}, check: {type: http, port: 80}}]",
     "groups[0].check.path"),
    (b"name: a\ngroups: [{name: g, resources: {cpu: 1, memory: 1Mi}, restart: {interval: 0s}}]",
     "groups[0].restart.interval"),
    (b"name: a\ngroups: [{name: g, resources: {cpu: 1, memory: 1Mi}, reschedule: {attempts: -1}}]",
     "groups[0].reschedule.attempts"),
    (b"name: a\ntype: system\ngroups: [{name: g, count: 3, resources: {cpu: 1, memory: 1Mi}}]",
     "groups[0].count"),
], ids=["garbage-yaml", "binary", "all-bytes", "control-chars", "deep-recursion", "deep", "huge", "alias-bomb",
        "a-list", "huge-cpu", "non-finite", "absurd-count", "dotdot-image", "privileged-not-bool",
        "duplicate-key", "empty", "check-type", "check-port", "http-check-path", "restart-interval",
        "reschedule-attempts", "system-count"])
@pytest.mark.parametrize("command", ["submit", "plan"])
def test_hostile_files_are_bad_input(tmp_path, command, content, expected):
    path = tmp_path / "job.yaml"
    path.write_bytes(content)
    r = ctl(command, str(path))
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert r.stderr.startswith("error: ") and expected in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr + r.stdout
    assert len(r.stderr) < 4000          # a few named problems, not the file echoed back


@pytest.mark.parametrize("path,expected", [
    ("/dev/zero", "error: invalid job spec"), ("/nonexistent/job.yaml", "error: cannot read"),
    ("/", "error: Invalid value for 'FILE'"),          # click's usage error, in ctl's one style
])
def test_files_that_are_not_specs(path, expected):
    r = ctl("submit", path)
    assert r.returncode == 2 and expected in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_valid_file_gets_past_validation(tmp_path):
    # the control: the cases above fail in validation, not because ctl never gets that far
    path = tmp_path / "job.yaml"
    path.write_text(GOOD)
    r = ctl("submit", str(path))
    assert r.returncode == 1 and "error: " in r.stderr and "Traceback" not in r.stderr


# -- what only the agent can refuse, seen through ctl ---------------------------------------------

@pytest.fixture(scope="module")
def cluster(request):
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    # the scheduler allows privileged jobs, the agent (default flags) does not: defence in depth
    c = LocalCluster(searchable_dir(request, "hostile"), hosts=1, prefix="ph", net="10.213.184.0/24",
                     etcd_port=23820, scheduler_port=17820, scheduler_args=("--allow-privileged",))
    c.up()
    yield c
    c.down()


def failed_reason(cluster, tmp_path, name: str, container: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\ngroups:\n  - name: g\n    resources: {{cpu: 0.1, memory: 16Mi}}\n"
                    f"    container: {container}\n")
    r = cluster.ctl("submit", str(path), "--wait", "--timeout", "60")
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    status = json.loads(cluster.ctl("status", name, "-o", "json", check=True).stdout)
    (inst,) = status["instances"]
    assert inst["state"] == "failed", inst
    cluster.ctl("stop", name)
    return inst["reason"]


@pytest.mark.integration
def test_an_image_outside_the_allowed_dirs_fails_with_the_reason(cluster, tmp_path):
    reason = failed_reason(cluster, tmp_path, "escape", "{image: /etc}")
    assert "container.image /etc is outside the directories this node allows" in reason


@pytest.mark.integration
def test_a_privileged_container_the_agent_does_not_allow_fails_with_the_reason(cluster, tmp_path):
    reason = failed_reason(cluster, tmp_path, "priv", "{privileged: true}")
    assert "container.privileged is not allowed on node ph-host1" in reason and "--allow-privileged" in reason
