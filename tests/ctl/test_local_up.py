"""The README's first command for real: `ctl local up` brings a cluster up, writes and selects the
`local` context, and plain `ctl nodes` in another terminal (no --scheduler, no export) reaches it;
Ctrl-C (here SIGTERM, which it treats the same) tears it all down."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tomllib

import pytest

from tests.agent.conftest import needs_runc
from tests.conftest import needs_root, searchable_dir, wait_for

pytestmark = [pytest.mark.integration, needs_root(), needs_runc(), pytest.mark.timeout(240)]

NET, PREFIX, SCHEDULER_PORT, ETCD_PORT = "10.213.91.0/24", "plu", 17910, 23910


def plain_env(config) -> dict[str, str]:
    """A newcomer's second terminal: nothing exported but where ctl keeps its config (a temporary
    file here, so that the user's own ~/.config is never touched)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PACKYARD_") and k not in ("NO_COLOR",)}
    return env | {"PACKYARD_CTL_CONFIG": str(config)}


def test_local_up_writes_and_selects_a_context_that_plain_ctl_reaches(request, tmp_path):
    work = searchable_dir(request, "local-up")
    config = tmp_path / "ctl.toml"
    env = plain_env(config)
    up = subprocess.Popen([sys.executable, "-m", "ctl.main", "local", "up", "--hosts", "2",
                           "--workdir", str(work / "cluster"), "--drivers", "container",
                           "--prometheus-port", "0", "--net", NET, "--prefix", PREFIX,
                           "--scheduler-port", str(SCHEDULER_PORT), "--etcd-port", str(ETCD_PORT)],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: up.poll() is not None or (config.exists() and "local" in config.read_text()),
                 timeout=120, what="the local context written")
        assert up.poll() is None, up.communicate()
        written = tomllib.loads(config.read_text())
        assert written["current-context"] == "local", written
        assert written["contexts"]["local"]["scheduler"].endswith(f":{SCHEDULER_PORT}"), written

        def nodes():
            r = subprocess.run([sys.executable, "-m", "ctl.main", "nodes", "-o", "json"], env=env,
                               capture_output=True, text=True, timeout=30)
            return r.returncode == 0 and json.loads(r.stdout)
        listed = wait_for(lambda: (n := nodes()) and len(n) == 2 and n, timeout=60, what="both hosts listed")
        assert {n["name"] for n in listed} == {f"{PREFIX}-host1", f"{PREFIX}-host2"}
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
        try:
            _, err = up.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            up.kill()
            _, err = up.communicate()
    assert up.returncode == 0, err
    assert "tearing the cluster down" in err
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"{PREFIX}-host" not in namespaces
