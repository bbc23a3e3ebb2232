"""`--config FILE`: a YAML or TOML file of long flag names fills click's default_map; flags win."""
from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from packyard import config


@click.command()
@click.option("--etcd", "etcd_url", envvar="TEST_PACKYARD_ETCD", required=True)
@click.option("--state-dir", default="/var/lib/x")
@click.option("--lease-ttl", type=int, default=10)
@click.option("--allow-privileged", is_flag=True)
@click.option("--labels", default="")
@config.click_option()
def show(**opts):
    click.echo(json.dumps(opts, sort_keys=True))


def run(args, env=None):
    result = CliRunner().invoke(show, args, env=env or {})
    return result.exit_code, result.output


@pytest.mark.parametrize("name, text", [
    ("c.yaml", "etcd: http://a:2379\nstate-dir: /srv/s\nlease_ttl: 5\nallow-privileged: true\n"
               "labels: {zone: a, disk: ssd}\n"),
    ("c.toml", 'etcd = "http://a:2379"\nstate-dir = "/srv/s"\nlease_ttl = 5\nallow-privileged = true\n'
               'labels = {zone = "a", disk = "ssd"}\n'),
], ids=["yaml", "toml"])
def test_file_fills_every_kind_of_option(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    code, out = run(["--config", str(path)])
    assert code == 0, out
    assert json.loads(out) == {"etcd_url": "http://a:2379", "state_dir": "/srv/s", "lease_ttl": 5,
                               "allow_privileged": True, "labels": "zone=a,disk=ssd"}


@pytest.mark.parametrize("args, env, expected", [
    (["--lease-ttl", "7"], {}, {"lease_ttl": 7, "etcd_url": "http://file:2379"}),
    (["--etcd", "http://flag:2379"], {}, {"lease_ttl": 5, "etcd_url": "http://flag:2379"}),
    ([], {"TEST_PACKYARD_ETCD": "http://env:2379"}, {"lease_ttl": 5, "etcd_url": "http://env:2379"}),
], ids=["flag-after", "flag-overrides-required", "env-overrides"])
def test_flags_and_environment_override_the_file(tmp_path, args, env, expected):
    path = tmp_path / "c.yaml"
    path.write_text("etcd: http://file:2379\nlease-ttl: 5\n")
    # the flag may come before or after --config: --config is read first either way
    code, out = run(args + ["--config", str(path)], env)
    assert code == 0, out
    got = json.loads(out)
    assert {k: got[k] for k in expected} == expected


def test_list_values_are_joined_with_commas(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("etcd: [http://a:2379, http://b:2379]\n")
    code, out = run(["--config", str(path)])
    assert code == 0, out
    assert json.loads(out)["etcd_url"] == "http://a:2379,http://b:2379"


def test_without_config_required_options_still_required():
    code, out = run([])
    assert code == 2 and "--etcd" in out


@pytest.mark.parametrize("text, message", [
    ("etcd: x\nnode-name: a\n", "'node-name' is not a flag of show"),
    ("- a\n- b\n", "the top level must be a mapping"),
    ("etcd: [unclosed\n", "not valid YAML"),
    ("etcd: {a: [1]}\n", "etcd: expected a string"),
], ids=["unknown-key", "not-a-mapping", "bad-yaml", "nested"])
def test_bad_files_are_usage_errors_naming_the_file(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    code, out = run(["--config", str(path)])
    assert code == 2
    assert str(path) in out and message in out


def test_missing_file_is_a_usage_error(tmp_path):
    code, out = run(["--config", str(tmp_path / "nope.yaml")])
    assert code == 2 and "nope.yaml" in out


def test_empty_file_changes_nothing(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("")
    code, out = run(["--config", str(path), "--etcd", "e"])
    assert code == 0 and json.loads(out)["state_dir"] == "/var/lib/x"


@pytest.mark.parametrize("program, text", [
    ("scheduler", "etcd: http://127.0.0.1:1\nlisten: bad\n"),
    ("agent", "etcd: http://127.0.0.1:1\nnode: Bad_Name\n"),
], ids=["scheduler", "agent"])
def test_the_programs_read_it(tmp_path, program, text):
    """The real commands take their values from the file: a bad value in it is reported by name."""
    from agent.main import main as agent_main
    from scheduler.main import main as scheduler_main
    path = tmp_path / "c.yaml"
    path.write_text(text)
    command = {"scheduler": scheduler_main, "agent": agent_main}[program]
    result = CliRunner().invoke(command, ["--config", str(path)])
    assert result.exit_code == 2
    assert ("--listen" if program == "scheduler" else "--node") in result.output
