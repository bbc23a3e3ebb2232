"""A libvirtd started after the agent is picked up by the drivers' re-check: a private libvirtd
(session mode, as libvirt-qemu, on its own socket and URI; never the system one) is started only
once the agent has published the VM driver as unhealthy, naming the URI it could not reach."""
from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from agent import drivercheck
from agent.registration import Registration
from ctl.render import drivers_json
from packyard import keys, records
from packyard.records import NodeRecord
from tests.agent.conftest import needs_root
from tests.conftest import eventually

pytestmark = [pytest.mark.integration, needs_root(),
              pytest.mark.skipif(not shutil.which("libvirtd"), reason="needs libvirtd")]
USER = "libvirt-qemu"


@pytest.fixture
def private_libvirtd():
    """(uri, start): the URI of a libvirtd that runs only once start() is called; stopped by pid."""
    import pwd
    try:
        account = pwd.getpwnam(USER)
    except KeyError:
        pytest.skip(f"no user {USER}")
    base = Path(tempfile.mkdtemp(prefix="packyard-libvirtd-", dir="/var/tmp"))
    base.chmod(0o711)
    home, run = base / "home", base / "run"
    for d in (home, run):
        d.mkdir(mode=0o700)
        os.chown(d, account.pw_uid, account.pw_gid)
    uri = f"qemu+unix:///session?socket={run}/libvirt/libvirt-sock"
    procs: list[subprocess.Popen] = []

    def start() -> None:
        env = {"PATH": os.environ["PATH"], "HOME": str(home), "XDG_RUNTIME_DIR": str(run),
               "XDG_CONFIG_HOME": str(home / ".config"), "XDG_CACHE_HOME": str(home / ".cache"),
               "XDG_DATA_HOME": str(home / ".local/share")}
        procs.append(subprocess.Popen(["libvirtd"], env=env, cwd=base, user=account.pw_uid,
                                      group=account.pw_gid, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))

    yield uri, start
    for p in procs:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    shutil.rmtree(base, ignore_errors=True)


async def test_a_libvirtd_started_after_the_agent_is_picked_up(etcd, private_libvirtd, node, state_dir):
    from agent.drivers.vm import VMDriver
    uri, start = private_libvirtd
    # the accelerator probe has its own tests: forced here, the check is libvirtd answering
    vm = VMDriver(node=node, state_dir=state_dir, uri=uri, accelerator="tcg", connect_timeout=3)
    drivers = {"vm": vm}
    reg = Registration(etcd, NodeRecord(name=node, address="127.0.0.1:1", capacity={"cpu_milli": 1000},
                                        attributes=await drivercheck.fingerprints(drivers)), ttl=5)
    await reg.start()
    task = asyncio.get_running_loop().create_task(drivercheck.recheck(drivers, reg, 0.5))

    async def published() -> dict:
        return drivers_json(records.loads(NodeRecord, await etcd.get(keys.node(node))).attributes)

    try:
        before = (await published())["vm"]
        assert not before["healthy"] and before["reason"].startswith(f"libvirtd not reachable at {uri}")
        start()
        async def healthy() -> bool:
            return (await published())["vm"] == {"healthy": True}
        await eventually(healthy, timeout=30, interval=0.2, what="the late libvirtd picked up")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        vm.close()
        await reg.close(deregister=True)
