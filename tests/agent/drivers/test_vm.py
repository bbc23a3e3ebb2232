"""The VM driver on a real libvirtd + QEMU (TCG on this machine: its KVM hangs guests), booting the
project's test guest (deploy/guest/build.sh). Fixtures: vmfixtures.py."""
from __future__ import annotations

import asyncio
import filecmp
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from agent.drivers.base import DriverError, Handle, InstanceSpec
from agent.drivers.vm import VMDriver, overhead, probe
from agent.drivers.vm import domain as dom
from tests.agent.drivers import vmfixtures as fx
from tests.agent.drivers.vmfixtures import ROOT, needs_libvirt, reachable, wait_for_marker
from tests.conftest import opt_in

# the session and per-test fixtures of vmfixtures.py (pytest finds fixtures among module attributes)
libvirt_daemons, guest, probe_choice, vm_node, vm_state_dir = (
    fx.libvirt_daemons, fx.guest, fx.probe_choice, fx.vm_node, fx.vm_state_dir)

MI = 1 << 20

# -- pure parts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("node,iid,expected", [
    ("n1", "web.api.0-x7k2", "pky-n1-web.api.0-x7k2"),
    ("n1", "has space/slash", None),
    ("n1", "x" * 80, None),
], ids=["valid-kept", "sanitised", "too-long"])
def test_domain_name(node, iid, expected):
    name = dom.domain_name(node, iid)
    if expected:
        assert name == expected
    else:
        assert name.startswith("pky-n1-") and len(name) <= dom.MAX_NAME
        assert all(c.isalnum() or c in "_.-" for c in name)
        assert name != dom.domain_name(node, iid + "!")


def _config(**kw) -> dom.DomainConfig:
    base = dict(name="pky-n1-a", instance_id="a", node="n1", job="j", group="g", accelerator="tcg",
                vcpus=2, memory_bytes=256 * MI, console_log="/s/logs/a.log")
    return dom.DomainConfig(**{**base, **kw})


@pytest.mark.parametrize("kw,present,absent", [
    (dict(kernel="/k", initrd="/i", cmdline="console=ttyS0"),
     ["<kernel>/k</kernel>", "<initrd>/i</initrd>", "<cmdline>console=ttyS0</cmdline>"], ["<boot", "<disk"]),
    (dict(disk="/s/d.qcow2"), ['<boot dev="hd"', '<source file="/s/d.qcow2"', 'type="qcow2"'], ["<kernel>"]),
    (dict(disk="/d", nics=(dom.Nic("bridge", "pyb1", "52:54:00:01:02:03"),)),
     ['<interface type="bridge"><source bridge="pyb1"', 'address="52:54:00:01:02:03"'], ["managed"]),
    (dict(disk="/d", nics=(dom.Nic("ethernet", "pyt1"),)),
     ['<interface type="ethernet"><target dev="pyt1" managed="no"'], ["<source bridge"]),
    (dict(disk="/d", accelerator="kvm", cpu_quota_milli=1500), ['type="kvm"', "<global_quota>150000<"], []),
], ids=["kernel-boot", "disk-boot", "nic-bridge", "nic-tap", "kvm-cpu-quota"])
def test_render(kw, present, absent):
    xml = dom.render(_config(**kw))
    for text in present + ['<memory unit="KiB">262144</memory>', "<vcpu>2</vcpu>",
                           '<log file="/s/logs/a.log" append="on"', "<acpi"]:
        assert text in xml
    for text in absent:
        assert text not in xml
    assert dom.identity(xml) == dom.Identity("a", "n1", "j", "g")


@pytest.mark.parametrize("xml", [
    "<domain type='qemu'><name>someone-elses</name></domain>",
    "<domain><metadata><other:x xmlns:other='urn:x' id='a' node='n1'/></metadata></domain>",
    "not xml",
], ids=["no-metadata", "foreign-metadata", "garbage"])
def test_identity_of_foreign_domains(xml):
    assert dom.identity(xml) is None


@pytest.mark.parametrize("candidates,guest_kib,expected", [
    ([(4, 4), (262144, 90000), (16384, 100)], 262144, 90000),
    ([(266240, 5000), (300000, 7000)], 262144, 5000),
    ([(1024, 10)], 262144, 0),
], ids=["exact-size", "smallest-larger", "none"])
def test_guest_mapping(candidates, guest_kib, expected):
    assert overhead._guest_mapping(candidates, guest_kib) == expected


def test_probe_guest_is_a_tiny_initramfs():
    assert probe.PROBE_INIT[:4] == b"\x7fELF" and len(probe.PROBE_INIT) < 256
    assert probe.PROBE_INITRD.startswith(b"070701") and b"TRAILER!!!" in probe.PROBE_INITRD
    assert len(probe.PROBE_SECTOR) == 512 and probe.PROBE_SECTOR.endswith(b"\x55\xaa")


# -- on libvirt + QEMU --------------------------------------------------------------------------



def vm_spec(guest: dict, instance_id: str | None = None, memory_mib: int = 256, disk: bool = False,
            gpus: tuple[int, ...] = (), **config) -> InstanceSpec:
    boot = {"disk": guest["disk"]} if disk else \
        {"kernel": guest["kernel"], "initrd": guest["initrd"], "cmdline": guest["cmdline"]}
    return InstanceSpec(id=instance_id or f"t.g.{uuid.uuid4().hex[:6]}", job="t", group="g", kind="vm",
                        cpu_milli=1000, memory_bytes=(memory_mib + 200) * MI,
                        request_cpu_milli=1000, request_memory_bytes=memory_mib * MI,
                        config={**boot, **config}, gpus=gpus)


@pytest.fixture
async def driver(vm_node, vm_state_dir, libvirt_daemons):
    d = VMDriver(vm_node, vm_state_dir, subnet=_subnet())
    yield d
    d.close()


def _subnet() -> str:
    used = Path("/proc/net/fib_trie").read_text()
    for n in range(200, 254):
        if f"10.213.{n}." not in used:
            return f"10.213.{n}.0/24"
    pytest.skip("no free /24")


def _cgroup_v1_limits(pid: int) -> tuple[int, int] | None:
    """(memory.limit_in_bytes, cpu.cfs_quota_us) of libvirt's cgroup for the domain of QEMU `pid`."""
    paths = dict(line.split(":", 2)[1:] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines())
    if "memory" not in paths or "cpu" not in paths:
        return None
    memory = Path("/sys/fs/cgroup/memory", paths["memory"].lstrip("/"), "memory.limit_in_bytes")
    cpu = Path("/sys/fs/cgroup/cpu", paths["cpu"].lstrip("/")).parent / "cpu.cfs_quota_us"  # above emulator/
    return int(memory.read_text()), int(cpu.read_text())


async def _domain_active(d: VMDriver, handle: Handle) -> bool:
    return await d._lookup(handle) is not None


@pytest.mark.integration
@needs_libvirt()
def test_probe_falls_back_to_tcg_within_its_bound(probe_choice):
    choice, seconds, state_dir = probe_choice
    kvm, tcg = choice.results
    print(f"\nprobe: {seconds:.1f}s; kvm: {kvm}; tcg: {tcg}")
    assert tcg.ok
    assert kvm.seconds < probe.KVM_TIMEOUT + 1                # a hanging KVM is given up on in time
    # KVM and TCG side by side: the slower of the two, plus creating and removing the domains
    assert seconds < max(kvm.seconds, tcg.seconds) + 15
    if os.path.exists("/dev/kvm") and not kvm.ok:    # this machine: /dev/kvm opens, guests hang
        assert "no output from the guest within" in kvm.detail
        assert choice.accelerator == "tcg"
        assert choice.attributes()["vm.accelerator"] == "tcg"
    else:
        assert choice.accelerator == "kvm"
    cached = json.loads((state_dir / probe.PROBE_CACHE).read_text())
    assert cached["accelerator"] == choice.accelerator


@pytest.mark.integration
@needs_libvirt()
async def test_fingerprint_uses_the_cached_probe(driver):
    t0 = time.monotonic()
    attrs = await driver.fingerprint()
    assert time.monotonic() - t0 < 3
    assert attrs["driver.vm"] == "ok"
    assert attrs["vm.accelerator"] in ("kvm", "tcg")
    assert attrs["vm.network"] in ("bridge", "tap")


@pytest.mark.integration
@needs_libvirt()
@pytest.mark.parametrize("uri", ["bogus:///nothing", "qemu:///system?socket=/nonexistent/sock"],
                         ids=["unknown-driver", "no-daemon"])
async def test_fingerprint_reports_a_broken_libvirt(vm_node, vm_state_dir, uri):
    d = VMDriver(vm_node, vm_state_dir, uri=uri, connect_timeout=5)
    attrs = await d.fingerprint()
    assert attrs["driver.vm"].startswith("unavailable: libvirtd not reachable at "), attrs
    d.close()


@pytest.mark.integration
@needs_libvirt()
async def test_kernel_vm_lifecycle(driver, guest):
    spec = vm_spec(guest, gpus=(0,))      # no GPU on this host: recorded, nothing passed through
    t0 = time.monotonic()
    h = await driver.start(spec)
    started = time.monotonic() - t0
    assert h.data["gpus"] == [0] and "gpu_pci" not in h.data
    log = driver.log_path(h)
    boot = await wait_for_marker(log)
    print(f"\nstart: {started:.2f}s, boot to marker: {boot:.1f}s; {log.read_text().splitlines()[0]}")
    assert await _domain_active(driver, h)
    assert f"addrs=[{driver.address(h)}/24]" in log.read_text()
    assert reachable(driver.address(h))                       # the NIC is on the host's bridge
    if Path("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists():   # cgroup v1 (this machine)
        # the whole QEMU process gets the limit (request + overhead), the guest the request
        assert _cgroup_v1_limits(h.data["pid"]) == (spec.memory_bytes, spec.cpu_milli * 100)
    stats = await driver.stats(h)
    assert stats.cpu_seconds > 0 and stats.memory_bytes > stats.guest_memory_bytes > 0
    assert 0 < stats.overhead_memory_bytes < stats.memory_bytes

    t0 = time.monotonic()
    await driver.stop(h, grace_seconds=30)
    result = await driver.wait(h)
    took = time.monotonic() - t0
    print(f"graceful stop: {took:.1f}s, {result}")
    assert result.exit_code == 0 and result.reason == "guest powered off"   # ACPI, not destroy
    assert not h.data.get("destroyed_after_grace") and took < 30
    assert b"power button, powering off" in log.read_bytes()

    await driver.destroy(h)
    assert not await _domain_active(driver, h)
    assert not Path(h.data["dir"]).exists()
    assert driver.network.pool.lookup(h.data["key"]) is None
    assert log.exists()                                       # kept for `ctl logs`
    driver.remove_logs(h)
    assert not log.exists()
    await driver.destroy(h)                                   # idempotent


@pytest.mark.integration
@needs_libvirt()
async def test_a_chosen_gpu_reaches_libvirt_as_a_hostdev(vm_node, vm_state_dir, libvirt_daemons, guest, tmp_path):
    """A fake sysfs names one NVIDIA GPU: its <hostdev> is valid XML for libvirt, which then finds
    no such device to pass through (this host has none, nor an IOMMU), and nothing is left."""
    sysfs = tmp_path / "devices" / "0000:65:1f.0"
    sysfs.mkdir(parents=True)
    (sysfs / "vendor").write_text("0x10de\n")
    (sysfs / "class").write_text("0x030200\n")
    d = VMDriver(vm_node, vm_state_dir, pci_dir=sysfs.parent)
    try:
        with pytest.raises(DriverError, match="GPU 1 chosen for it is not on this node"):
            await d.start(vm_spec(guest, gpus=(1,)))
        with pytest.raises(DriverError) as refused:
            await d.start(vm_spec(guest, gpus=(0,)))
        message = str(refused.value)
        assert "schema" not in message and ("PCI" in message or "65:1f" in message), message
        assert not list(d.instances_dir.iterdir()) and not await d.domains()
    finally:
        d.close()


@pytest.mark.integration
@needs_libvirt()
@opt_in("a slow proof: a second disk boot (~15 s of TCG); tests/integration/test_vms.py boots one")
async def test_disk_vm_gets_its_own_overlay(driver, guest):
    base_before = Path(guest["disk"]).stat().st_mtime
    h = await driver.start(vm_spec(guest, disk=True))
    overlay = Path(h.data["overlay"])
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(overlay)],
                                     capture_output=True, text=True, check=True).stdout)
    # its backing is the file opened at the check, linked (or copied) into the instance's dir:
    # libvirt and QEMU never walk the job's path again (issue 15)
    base = Path(h.data["dir"]) / "base"
    assert info["format"] == "qcow2" and info["backing-filename"] == str(base)
    assert filecmp.cmp(base, guest["disk"], shallow=False)
    boot = await wait_for_marker(driver.log_path(h))
    assert b"boot=disk" in driver.log_path(h).read_bytes()
    print(f"\ndisk boot to marker: {boot:.1f}s")
    await driver.stop(h, grace_seconds=0)                     # no grace: forced off at once
    assert h.data["destroyed_after_grace"]
    assert (await asyncio.wait_for(driver.wait(h), 10)).reason == "domain destroyed"
    assert overlay.exists()                                   # until destroy()
    await driver.destroy(h)
    assert not overlay.exists() and not Path(h.data["dir"]).exists()
    assert not await _domain_active(driver, h)
    assert Path(guest["disk"]).stat().st_mtime == base_before


@pytest.mark.integration
@needs_libvirt()
async def test_a_new_driver_adopts_a_running_domain(driver, guest, vm_node, vm_state_dir):
    h = await driver.start(vm_spec(guest))
    await wait_for_marker(driver.log_path(h))
    pid, start_time = h.data["pid"], h.data["start_time"]
    saved = json.loads(json.dumps(h.data))                    # as the manager persists it
    driver.close()                                            # the old agent goes away

    again = VMDriver(vm_node, vm_state_dir, subnet=driver.network.pool.subnet.with_prefixlen)
    try:
        h2 = Handle(h.id, "vm", saved)
        assert await again.recover(h2)
        assert h2.data["pid"] == pid and h2.data["start_time"] == start_time   # not restarted
        assert h.id in [i.instance_id for i in await again.domains()]       # found by metadata too
        assert await again.recover(Handle("gone", "vm", {**saved, "domain": "pky-nothing-here"})) is False
        await again.stop(h2, grace_seconds=30)
        result = await asyncio.wait_for(again.wait(h2), 10)
        assert result.reason == "guest powered off"
        await again.destroy(h2)
        assert not Path(saved["dir"]).exists()
    finally:
        again.close()


@pytest.mark.integration
@needs_libvirt()
async def test_a_start_cut_off_by_the_agents_end_is_discarded_then_made_again(driver, guest, vm_node, vm_state_dir):
    """The agent died after libvirt started the domain but before it kept a handle: the restarted
    agent has only the spec, and the start made again must not fail on the domain and dir left."""
    spec = vm_spec(guest)
    cut = await driver.start(spec)
    driver.close()
    again = VMDriver(vm_node, vm_state_dir, subnet=driver.network.pool.subnet.with_prefixlen)
    try:
        with pytest.raises(DriverError, match="already exists"):
            await again.start(spec)
        await again.discard(spec)
        assert cut.id not in [i.instance_id for i in await again.domains()]
        assert not Path(cut.data["dir"]).exists()
        h = await again.start(spec)
        assert h.data["pid"] != cut.data["pid"]
        await again.destroy(h)
    finally:
        again.close()


@pytest.mark.integration
@needs_libvirt()
async def test_a_killed_qemu_is_reported(driver, guest):
    h = await driver.start(vm_spec(guest))
    os.kill(h.data["pid"], signal.SIGKILL)
    result = await asyncio.wait_for(driver.wait(h), 20)
    print(f"\n{result}")
    assert result.exit_code is None and result.reason.startswith("QEMU died")
    await driver.destroy(h)
    assert not Path(h.data["dir"]).exists()


@pytest.mark.integration
@needs_libvirt()
@opt_in("a slow proof")
async def test_overhead_of_two_guest_sizes(driver, guest):
    """The agent's measurement of QEMU's overhead (RSS minus the guest RAM it backs), on running
    test guests of 256 and 512 MiB: the figures behind the default VM profile."""
    handles = [await driver.start(vm_spec(guest, memory_mib=m)) for m in (256, 512)]
    try:
        for h in handles:
            await wait_for_marker(driver.log_path(h))
        await asyncio.sleep(3)                                # past boot: a few heartbeats
        print()
        for h in handles:
            m = await driver.measure(h)
            guest_mib = h.data["guest_memory"] // MI
            print(f"guest {guest_mib} MiB ({h.data['accelerator']}): rss {m.rss_bytes / MI:.1f} MiB, "
                  f"guest-backed {m.guest_backed_bytes / MI:.1f} MiB, overhead {m.overhead_bytes / MI:.1f} MiB, "
                  f"cgroup {(m.cgroup_bytes or 0) / MI:.1f} MiB, cpu {m.cpu_seconds:.1f}s")
            assert 0 < m.guest_backed_bytes <= h.data["guest_memory"]
            assert 10 * MI < m.overhead_bytes < 400 * MI
    finally:
        for h in handles:
            await driver.destroy(h)


@pytest.mark.integration
@needs_libvirt()
def test_nic_on_the_bridge_of_an_agent_in_its_own_netns(vm_node, vm_state_dir, guest, libvirt_daemons):
    """ctl/local.py runs agents in their own network namespaces while libvirtd and QEMU stay in the
    root one: the driver makes a tap in libvirtd's namespace, then moves it onto the agent's bridge."""
    ns = f"pkyt-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        args = {"node": vm_node, "state_dir": str(vm_state_dir), "subnet": "10.213.199.0/24",
                "guest": {k: guest[k] for k in ("kernel", "initrd", "cmdline")}}
        p = subprocess.run(["nsenter", f"--net=/var/run/netns/{ns}", sys.executable, "-m",
                            "tests.agent.drivers.vmfixtures", "netns-child", json.dumps(args)],
                           cwd=ROOT, capture_output=True, text=True, timeout=150)
        assert p.returncode == 0, p.stderr[-3000:]
        out = json.loads(p.stdout.strip().splitlines()[-1])
        print(f"\n{out}")
        assert out["fingerprint"]["vm.network"] == "tap"
        assert out["tap_on_bridge"] and out["reachable"]
        assert out["exit"] == "guest powered off"
        assert not out["tap_left"]
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", f"pyt{_tap_suffix(vm_node)}"], capture_output=True)


def _tap_suffix(node: str) -> str:
    from agent.drivers.vm.nic import tap_name
    return tap_name(f"{node}/net.g.0")[3:]
