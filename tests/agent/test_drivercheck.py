"""--drivers auto and the periodic re-check: a driver whose fingerprint changes after start-up (a
libvirtd started later) changes the node record in etcd; the scheduler filter and `ctl nodes` give
the agent's reason."""
from __future__ import annotations

import asyncio
import contextlib

import pytest
from click.testing import CliRunner

from agent import drivercheck
from agent import main as agent_main
from agent.registration import Registration
from ctl.render import drivers_json
from packyard import keys, records
from packyard.records import NodeRecord
from tests.conftest import eventually


class SwitchableDriver:
    def __init__(self, name: str, state: str):
        self.name, self.state = name, state

    async def fingerprint(self) -> dict[str, str]:
        return {f"driver.{self.name}": self.state}


def test_auto_means_every_driver_and_a_list_is_kept():
    assert drivercheck.driver_names("auto") == ["container", "vm"]
    assert drivercheck.driver_names(" container ,") == ["container"]
    assert drivercheck.driver_names("fake:vm,container") == ["fake:vm", "container"]
    assert drivercheck.driver_names("container,container") == ["container"]


@pytest.mark.parametrize("text, words", [
    ("contianer", "unknown driver 'contianer'"), ("container,kvm", "unknown driver 'kvm'"),
    ("auto,vm", "auto stands alone"), (" , ", "no driver given"), ("", "no driver given"),
])
def test_a_driver_list_that_names_no_driver_is_refused(text, words):
    with pytest.raises(ValueError, match=words):
        drivercheck.driver_names(text)


@pytest.mark.parametrize("value, words", [("contianer", "unknown driver 'contianer'"), ("", "no driver given")])
def test_the_agent_refuses_a_bad_drivers_flag_before_it_starts(tmp_path, value, words):
    """One line, exit 2, before etcd is dialled (the port given is closed)."""
    result = CliRunner().invoke(agent_main.main, ["--etcd", "127.0.0.1:9", "--node", "n1", "--state-dir",
                                                  str(tmp_path / "s"), "--drivers", value])
    assert result.exit_code == 2 and "Invalid value for --drivers: " + words in result.output
    assert not (tmp_path / "s").exists()


def test_nodes_json_drivers_shape():
    attrs = {"driver.container": "ok", "driver.vm": "unavailable: libvirtd not reachable at qemu:///system",
             "vm.accelerator": "tcg"}
    assert drivers_json(attrs) == {"container": {"healthy": True},
                                   "vm": {"healthy": False, "reason": "libvirtd not reachable at qemu:///system"}}


async def test_a_driver_that_comes_up_later_is_published(etcd):
    vm = SwitchableDriver("vm", "unavailable: libvirtd not reachable at qemu+unix:///system?socket=/x")
    drivers = {"container": SwitchableDriver("container", "ok"), "vm": vm}
    attrs = {**await drivercheck.fingerprints(drivers), "arch": "x86_64"}
    reg = Registration(etcd, NodeRecord(name="n1", address="127.0.0.1:1", capacity={"cpu_milli": 1000},
                                        attributes=attrs), ttl=5)
    await reg.start()
    task = asyncio.get_running_loop().create_task(drivercheck.recheck(drivers, reg, 0.05))

    async def published() -> dict[str, str]:
        return records.loads(NodeRecord, await etcd.get(keys.node("n1"))).attributes

    try:
        assert (await published())["driver.vm"].startswith("unavailable: libvirtd not reachable")
        vm.state = "ok"
        await eventually(lambda: reg.record.attributes["driver.vm"] == "ok", timeout=5, what="re-checked")
        stored = await published()
        assert stored["driver.vm"] == "ok" and stored["arch"] == "x86_64"   # other attributes kept
        assert reg.lease_id is not None and stored == reg.record.attributes
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await reg.close(deregister=True)


def test_known_names_pass_and_a_typo_is_refused_by_name():
    for text in ("container", "vm", "fake", "fake:vm", "container,vm", "fake,fake:vm"):
        assert drivercheck.driver_names(text) == text.split(",")
    for text, named in (("contianer", "'contianer'"), ("container,qemu", "'qemu'")):
        with pytest.raises(ValueError, match=f"unknown driver {named}"):
            drivercheck.driver_names(text)
    with pytest.raises(ValueError, match="no driver given"):
        drivercheck.driver_names("")
@pytest.mark.parametrize("value", ["abc", "127.0.0.1:", ":9100x", "127.0.0.1:70000"])
def test_the_agent_refuses_a_bad_metrics_address_in_one_line(tmp_path, value):
    result = CliRunner().invoke(agent_main.main, ["--etcd", "127.0.0.1:9", "--node", "n1", "--state-dir",
                                                  str(tmp_path / "s"), "--metrics", value])
    assert result.exit_code == 2 and "Invalid value for '--metrics': " in result.output, result.output
