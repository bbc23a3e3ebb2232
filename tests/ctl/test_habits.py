"""Issue 17 part 3 against a real scheduler (embedded etcd) and one FakeDriver agent: ctl version,
-o anywhere, contexts, colour on a terminal, and --watch seeing changes arrive from the stream."""
import json
import os
import pty
import queue
import select
import subprocess
import sys
import threading
import time

import pytest
import yaml

from ctl.local import LocalCluster
from ctl.local_cli import select_local_context
from packyard.about import packyard_version

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")]

JOB = "name: {name}\ngroups:\n  - name: web\n    count: {count}\n    resources: {{cpu: 0.25, memory: 32Mi}}\n" \
      "    container: {{command: [/bin/sleep, '3600']}}\n"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LocalCluster(tmp_path_factory.mktemp("habits"), hosts=1, prefix="pw", net="10.213.121.0/24",
                     drivers="fake", etcd_port=23921, scheduler_port=17921)
    c.up()
    yield c
    c.down()


@pytest.fixture
def env(tmp_path):
    """ctl's environment with its own config file and nothing pointing at a scheduler."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("PACKYARD_") and k != "NO_COLOR"}
    e["PACKYARD_CTL_CONFIG"] = str(tmp_path / "ctl.toml")
    return e


def ctl(*args, env=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "ctl.main", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def submit(cluster, tmp_path, name, count):
    path = tmp_path / f"{name}.yaml"
    path.write_text(JOB.format(name=name, count=count))
    r = cluster.ctl("submit", str(path))
    assert r.returncode == 0, r.stderr


def test_version_names_client_and_scheduler(cluster, env):
    r = ctl("--scheduler", cluster.scheduler_address, "version", "-o", "json", env=env)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["client"]["version"] == packyard_version() != "unknown"
    assert data["scheduler"]["version"] == packyard_version()
    assert data["scheduler"]["leader"] is True and data["scheduler"]["address"] == cluster.scheduler_address
    down = json.loads(ctl("--scheduler", "127.0.0.1:9", "-o", "json", "version", env=env).stdout)
    assert down["scheduler"] is None and "cannot reach the scheduler" in down["scheduler_error"]


def test_output_before_the_command_and_yaml_and_wide(cluster, env):
    after = json.loads(cluster.ctl("nodes", "-o", "json").stdout)
    before = json.loads(cluster.ctl("-o", "json", "nodes").stdout)
    assert before == after and after[0]["name"] == "pw-host1"
    assert yaml.safe_load(cluster.ctl("-o", "yaml", "nodes").stdout) == after
    # the command's own -o wins over the one before it
    assert cluster.ctl("-o", "yaml", "nodes", "-o", "json").stdout.lstrip().startswith("[")
    wide = cluster.ctl("nodes", "-o", "wide").stdout.splitlines()[0]
    assert "USAGE (cpu/mem)" in wide and "ATTRIBUTES" in wide
    # issue 5: usage beside allocated and capacity in the plain table too; wide adds the attributes
    plain = cluster.ctl("nodes").stdout.splitlines()[0]
    assert "USAGE (cpu/mem)" in plain and "ATTRIBUTES" not in plain
    assert json.loads(cluster.ctl("-o", "json", "list").stdout) == json.loads(cluster.ctl("list", "-o", "json").stdout)


def test_contexts_select_the_scheduler_and_flags_override(cluster, env, tmp_path):
    assert ctl("config", "set-context", "lab", "--scheduler", cluster.scheduler_address, env=env).returncode == 0
    # no current context yet: the default address, which nothing answers here
    r = ctl("nodes", env=env)
    assert r.returncode == 1 and "127.0.0.1:7070" in r.stderr
    assert json.loads(ctl("--context", "lab", "nodes", "-o", "json", env=env).stdout)[0]["name"] == "pw-host1"
    assert ctl("config", "use-context", "lab", env=env).returncode == 0
    assert ctl("config", "current-context", env=env).stdout.strip() == "lab"
    assert json.loads(ctl("nodes", "-o", "json", env=env).stdout)[0]["name"] == "pw-host1"
    listed = json.loads(ctl("config", "get-contexts", "-o", "json", env=env).stdout)
    assert listed["current"] == "lab" and listed["contexts"][0]["scheduler"] == cluster.scheduler_address
    # a flag, or the environment, wins over the current context
    r = ctl("--scheduler", "127.0.0.1:9", "nodes", env=env)
    assert r.returncode == 1 and "127.0.0.1:9" in r.stderr
    r = ctl("nodes", env={**env, "PACKYARD_SCHEDULER": "127.0.0.1:9"})
    assert r.returncode == 1 and "127.0.0.1:9" in r.stderr
    r = ctl("--context", "nope", "nodes", env=env)
    assert (r.returncode, r.stderr.strip()) == (2, "error: --context: no context named 'nope' (known: lab)")


def test_packyard_config_is_read_only_when_it_is_a_ctl_file(cluster, env, tmp_path):
    ctl_file = tmp_path / "mine.toml"
    ctl_file.write_text(f'current-context = "x"\n[contexts.x]\nscheduler = "{cluster.scheduler_address}"\n')
    shared = {k: v for k, v in env.items() if k != "PACKYARD_CTL_CONFIG"}
    shared["HOME"] = str(tmp_path)           # no ~/.config/packyard/ctl.toml of the machine's
    r = ctl("nodes", "-o", "json", env={**shared, "PACKYARD_CONFIG": str(ctl_file)})
    assert r.returncode == 0 and json.loads(r.stdout)[0]["name"] == "pw-host1", r.stderr
    # the scheduler's flag file in the environment (its --config) is not ctl's: ignored
    flags = tmp_path / "scheduler.toml"
    flags.write_text('listen = "0.0.0.0:7070"\n')
    r = ctl("nodes", env={**shared, "PACKYARD_CONFIG": str(flags)})
    assert r.returncode == 1 and "127.0.0.1:7070" in r.stderr


def test_local_context_lets_plain_ctl_reach_the_cluster(cluster, env, tmp_path):
    os.environ["PACKYARD_CTL_CONFIG"] = env["PACKYARD_CTL_CONFIG"]
    try:
        line = select_local_context(cluster.scheduler_address, None)
    finally:
        del os.environ["PACKYARD_CTL_CONFIG"]
    assert "context local" in line and "selected" in line
    r = ctl("nodes", env=env)                # nothing exported but the config file's location
    assert r.returncode == 0 and "pw-host1" in r.stdout, r.stderr


def on_a_terminal(args, env):
    """ctl's stdout on a pseudo-terminal, as a user's shell has it."""
    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "ctl.main", *args], stdout=slave, stderr=subprocess.DEVNULL, env=env)
    os.close(slave)
    out = b""
    while True:
        ready, _, _ = select.select([master], [], [], 30)
        try:
            chunk = os.read(master, 65536) if ready else b""
        except OSError:        # the child closed its side
            chunk = b""
        if not chunk:
            break
        out += chunk
    p.wait(timeout=30)
    os.close(master)
    return out.decode()


def test_colour_only_on_a_terminal(cluster, env):
    args = ["--scheduler", cluster.scheduler_address, "nodes"]
    assert "\x1b[32mready\x1b[0m" in on_a_terminal(args, env)
    assert "\x1b[" not in on_a_terminal(args, {**env, "NO_COLOR": "1"})
    assert "\x1b[" not in on_a_terminal(["--no-color", *args], env)
    assert "\x1b[" not in ctl(*args, env=env).stdout            # a pipe
    assert "ready" in ctl(*args, env=env).stdout


class Watch:
    """`ctl ... --watch -o json` running; each line it prints is one view."""

    def __init__(self, cluster, *args):
        self.cluster, self.args = cluster, args
        self.p = subprocess.Popen([sys.executable, "-m", "ctl.main", "--scheduler", cluster.scheduler_address,
                                   *args, "--watch", "-o", "json"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        self.last = None
        # Lines are read by a thread of their own: select() on the pipe followed by readline()
        # missed views, as readline() buffers every line that has arrived and select() then sees
        # none of them (two views sent 0.1 s apart were read as one, and the second never came).
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.put(line)
        self.lines.put("")      # the stream ended

    def next(self, timeout=20.0):
        try:
            line = self.lines.get(timeout=max(timeout, 0))
        except queue.Empty:
            raise AssertionError(f"no view within {timeout:.1f}s{self.what_happened()}") from None
        assert line, self.p.stderr.read()
        self.last = json.loads(line)
        return self.last

    def until(self, done, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            view = self.next(deadline - time.monotonic())
            if done(view):
                return view
        raise AssertionError(f"the change never arrived{self.what_happened()}")

    def what_happened(self) -> str:
        """For a failure's message (CI keeps no tmp dir): the last view, what the same command
        says without --watch (a stale watch, or a change that never happened), and the tail of
        the cluster's logs."""
        now = self.cluster.ctl(*self.args, "-o", "json", timeout=30)
        logs = "".join(f"\n--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                       for log in sorted((self.cluster.workdir / "logs").glob("*.log")))
        return f"\nlast view: {self.last}\nwithout --watch: {now.stdout.strip() or now.stderr.strip()}{logs}"

    def close(self):
        self.p.terminate()
        self.p.wait(timeout=10)
        self.reader.join(timeout=10)
        self.p.stdout.close()
        self.p.stderr.close()


def test_watch_nodes_and_list_see_a_submit_arrive(cluster, tmp_path):
    nodes, jobs = Watch(cluster, "nodes"), Watch(cluster, "list")
    try:
        cpu_before = nodes.next()[0]["allocated"]["cpu"]
        assert "watched" not in [j["name"] for j in jobs.next()]
        submit(cluster, tmp_path, "watched", 2)
        seen = jobs.until(lambda v: any(j["name"] == "watched" for j in v))
        assert next(j for j in seen if j["name"] == "watched")["version"] == 1
        nodes.until(lambda v: v[0]["allocated"]["cpu"] == cpu_before + 0.5)
    finally:
        nodes.close()
        jobs.close()


def test_watch_status_sees_instances_run_then_stop(cluster, tmp_path):
    submit(cluster, tmp_path, "seen", 1)
    watch = Watch(cluster, "status", "seen")
    try:
        watch.until(lambda v: [i["state"] for i in v["instances"]] == ["running"])
        assert cluster.ctl("stop", "seen").returncode == 0
        watch.until(lambda v: v["instances"][0]["desired"] == "stop" and v["instances"][0]["state"] == "stopped")
    finally:
        watch.close()
    r = cluster.ctl("status", "nope", "--watch")
    assert r.returncode == 2 and r.stderr.strip() == "error: job 'nope' not found"

