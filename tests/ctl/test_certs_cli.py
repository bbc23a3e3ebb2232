"""`ctl certs init` and `--tls DIR` on the three programs: files written, bad input refused with one
line naming --tls (ctl: `error:` and exit 2), never a traceback. No server is started here."""
from __future__ import annotations

import stat

import pytest
from click.testing import CliRunner

from agent.main import main as agent_main
from ctl.main import cli
from scheduler.main import main as scheduler_main


@pytest.fixture
def runner():
    return CliRunner()


def test_certs_init_writes_the_cluster_ca_and_every_roles_pair(runner, tmp_path):
    r = runner.invoke(cli, ["certs", "init", str(tmp_path / "tls")])
    assert r.exit_code == 0, r.output
    names = {p.name for p in (tmp_path / "tls").iterdir()}
    assert names == {f"{s}.{e}" for s in ("ca", "scheduler", "agent", "ctl", "etcd", "root") for e in ("crt", "key")}
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in (tmp_path / "tls").glob("*.key"))


def test_certs_init_refuses_to_overwrite_a_ca_without_force(runner, tmp_path):
    assert runner.invoke(cli, ["certs", "init", str(tmp_path)]).exit_code == 0
    before = (tmp_path / "ca.key").read_bytes()
    r = runner.invoke(cli, ["certs", "init", str(tmp_path)])
    assert r.exit_code == 2
    assert r.output.startswith("error: ") and "--force" in r.output and "Traceback" not in r.output
    assert (tmp_path / "ca.key").read_bytes() == before
    assert runner.invoke(cli, ["certs", "init", "--force", str(tmp_path)]).exit_code == 0
    assert (tmp_path / "ca.key").read_bytes() != before


def test_certs_init_refuses_a_bad_validity(runner, tmp_path):
    r = runner.invoke(cli, ["certs", "init", "--days", "0", str(tmp_path / "t")])
    assert r.exit_code == 2 and r.output.startswith("error: days: 0")


def test_certs_init_works_while_PACKYARD_TLS_names_the_directory_to_be(runner, tmp_path):
    """The usual order: export PACKYARD_TLS=DIR, then make DIR."""
    r = runner.invoke(cli, ["certs", "init", str(tmp_path / "t")], env={"PACKYARD_TLS": str(tmp_path / "t")})
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("make, message", [
    (lambda d: None, "is not a directory"),
    (lambda d: d.mkdir(), "cannot read"),
], ids=["missing", "empty"])
def test_ctl_with_an_unusable_tls_dir_is_bad_input(runner, tmp_path, make, message):
    make(tmp_path / "t")
    r = runner.invoke(cli, ["--tls", str(tmp_path / "t"), "list"])
    assert r.exit_code == 2
    assert r.output.startswith("error: --tls: ") and message in r.output and "Traceback" not in r.output


def test_scheduler_and_agent_name_tls_in_a_usage_error(runner, tmp_path):
    bad = str(tmp_path / "nope")
    for main, args in ((scheduler_main, []), (agent_main, ["--etcd", "http://127.0.0.1:1", "--node", "n1"])):
        r = runner.invoke(main, [*args, "--tls", bad])
        assert r.exit_code == 2, r.output
        assert "Invalid value for '--tls'" in r.output and "not a directory" in r.output
        assert r.exception is None or isinstance(r.exception, SystemExit)


def test_certs_issue_writes_a_nodes_pair_and_refuses_bad_input(runner, tmp_path):
    assert runner.invoke(cli, ["certs", "init", str(tmp_path)]).exit_code == 0
    r = runner.invoke(cli, ["certs", "issue", str(tmp_path), "agent", "host1"])
    assert r.exit_code == 0, r.output
    assert stat.S_IMODE((tmp_path / "agent-host1.key").stat().st_mode) == 0o600
    for args, message in ((["agent", "Host_1"], "error: name: 'Host_1' is not a DNS label"),
                          (["etcd", "m1", "--ip", "300.1.1.1"], "error: ip: '300.1.1.1' is not an IP address")):
        r = runner.invoke(cli, ["certs", "issue", str(tmp_path), *args])
        assert r.exit_code == 2 and r.output.startswith(message) and "Traceback" not in r.output, r.output
    r = runner.invoke(cli, ["certs", "issue", str(tmp_path / "none"), "agent", "host1"])
    assert r.exit_code == 2 and "cannot read" in r.output and "ca.crt" in r.output


def test_an_agent_without_its_nodes_certificate_is_a_usage_error(runner, tmp_path):
    assert runner.invoke(cli, ["certs", "init", str(tmp_path)]).exit_code == 0
    r = runner.invoke(agent_main, ["--etcd", "http://127.0.0.1:1", "--node", "n1", "--tls", str(tmp_path)])
    assert r.exit_code == 2, r.output
    assert "Invalid value for '--tls'" in r.output and "no certificate for node n1" in r.output
