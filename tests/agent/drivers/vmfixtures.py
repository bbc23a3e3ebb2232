"""Fixtures for the VM driver's tests on a real libvirtd + QEMU (TCG here).

- `libvirt_daemons` (session): starts `virtlogd -d` and `libvirtd -d` when they are not running
  (never as descendants of a child subreaper: see _not_a_subreaper), and at the end stops only
  what it started, by pid.
- `guest` (session): builds the test guest with deploy/guest/build.sh (idempotent, ~1 s, then
  ~30 ms) into PACKYARD_TEST_GUEST (default /var/lib/packyard/guest): readable by QEMU, which runs
  as libvirt-qemu and cannot enter pytest's 0700 temp dirs.
- `probe_choice` (session): the accelerator probe, run once; each test's state dir gets the cached
  result, so drivers built on it do not probe again.
- `vm_node`, `vm_state_dir`: a unique node name (`tvm-<hex>`: every domain is `pky-tvm-<hex>-…`)
  and a state dir under /var/tmp (mode 0711, QEMU must reach the overlays). At the end, every
  domain of that node (by name and metadata, nothing else), tap, bridge and file is removed, also
  when the test failed.

Run as `python -m tests.agent.drivers.vmfixtures netns-child '<json>'` (inside another network
namespace) it is the agent half of the namespaced-NIC test.
"""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
BUILD = ROOT / "deploy" / "guest" / "build.sh"
GUEST_DIR = Path(os.environ.get("PACKYARD_TEST_GUEST", "/var/lib/packyard/guest"))
MARKER = b"packyard-guest: up"
DAEMONS = {"virtlogd": "/run/virtlogd.pid", "libvirtd": "/run/libvirtd.pid"}
LIBVIRT_SOCKET = "/run/libvirt/libvirt-sock"
PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER = 36, 37


def needs_libvirt() -> pytest.MarkDecorator:
    missing = [b for b in ("libvirtd", "virtlogd", "qemu-system-x86_64", "qemu-img") if not shutil.which(b)]
    return pytest.mark.skipif(bool(missing) or os.geteuid() != 0,
                              reason=f"needs root and {', '.join(missing) or 'libvirt'}")


def _alive(pidfile: str) -> int | None:
    try:
        pid = int(Path(pidfile).read_text().split()[0])
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError, IndexError):
        return None


def _wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _socket_answers() -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(LIBVIRT_SOCKET)
            return True
        except OSError:
            return False


@contextlib.contextmanager
def _not_a_subreaper():
    """The container driver makes this process a child subreaper. Daemons started meanwhile would
    be re-parented to it (not to init) when they daemonize, and so would every QEMU libvirtd
    daemonizes later: their zombies, never reaped here, keep libvirt waiting ~40 s per stop."""
    libc = ctypes.CDLL(None, use_errno=True)
    flag = ctypes.c_int(0)
    libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, flag.value, 0, 0, 0)


@pytest.fixture(scope="session")
def libvirt_daemons():
    """virtlogd and libvirtd running; those this fixture started are stopped (by pid) at the end."""
    started: list[int] = []
    with _not_a_subreaper():
        for name, pidfile in DAEMONS.items():
            if _alive(pidfile) is None:
                subprocess.run([name, "-d"], check=True, timeout=30)
                _wait_for(lambda p=pidfile: _alive(p) is not None, 15, f"{name} to write {pidfile}")
                started.append(_alive(pidfile) or 0)
    _wait_for(_socket_answers, 15, "libvirtd's socket")
    yield
    for pid in reversed(started):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        with contextlib.suppress(RuntimeError):
            _wait_for(lambda p=pid: not os.path.exists(f"/proc/{p}"), 15, f"pid {pid} to exit")


@pytest.fixture(scope="session")
def guest() -> dict[str, str]:
    subprocess.run([str(BUILD), str(GUEST_DIR)], check=True, timeout=300, capture_output=True)
    return {"kernel": str(GUEST_DIR / "vmlinuz"), "initrd": str(GUEST_DIR / "initrd.img"),
            "cmdline": (GUEST_DIR / "cmdline").read_text().strip(), "disk": str(GUEST_DIR / "disk.qcow2")}


def _scratch(prefix: str) -> Path:
    d = Path("/var/tmp") / f"{prefix}-{uuid.uuid4().hex[:10]}"
    d.mkdir(mode=0o711)
    os.chmod(d, 0o711)
    return d


@pytest.fixture(scope="session")
def probe_choice(libvirt_daemons):
    """The accelerator probe, once per session, timed: (Choice, seconds, state dir with its cache)."""
    import libvirt

    from agent.drivers.vm import probe
    from agent.drivers.vm.events import ensure_event_loop
    ensure_event_loop()
    d = _scratch("packyard-test-probe")
    conn = libvirt.open("qemu:///system")
    try:
        conn.getVersion()        # a fresh libvirtd probes QEMU's capabilities first (~7 s): not ours
        t0 = time.monotonic()
        choice = probe.choose(conn, d, f"tvm-probe-{uuid.uuid4().hex[:6]}", use_cache=False)
        seconds = time.monotonic() - t0
    finally:
        conn.close()
    yield choice, seconds, d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def vm_node() -> str:
    return f"tvm-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def vm_state_dir(vm_node, probe_choice):
    d = _scratch("packyard-test-vm")
    shutil.copy(probe_choice[2] / "vm-probe.json", d / "vm-probe.json")
    yield d
    cleanup_node(vm_node, d)
    shutil.rmtree(d, ignore_errors=True)


def cleanup_node(node: str, state_dir: Path) -> None:
    """Destroy every domain of `node` (by name prefix and metadata) and its bridge."""
    import libvirt

    from agent.drivers.vm import domain as dom
    from agent.drivers.vm.events import ensure_event_loop
    from agent.network import bridge_name
    ensure_event_loop()
    with contextlib.suppress(libvirt.libvirtError):
        conn = libvirt.open("qemu:///system")
        try:
            for d in conn.listAllDomains(0):
                if not d.name().startswith(f"{dom.PREFIX}{node}-"):
                    continue
                ident = dom.identity(d.XMLDesc(0))
                if ident is not None and ident.node == node:
                    with contextlib.suppress(libvirt.libvirtError):
                        d.destroy()
                    with contextlib.suppress(libvirt.libvirtError):
                        d.undefine()
        finally:
            conn.close()
    subprocess.run(["ip", "link", "del", bridge_name(node)], capture_output=True)
    for f in Path("/var/log/libvirt/qemu").glob(f"{dom.PREFIX}{node}-*.log"):
        f.unlink(missing_ok=True)


async def wait_for_marker(path: Path, timeout: float = 90.0, marker: bytes = MARKER) -> float:
    """Seconds until `marker` is in the console log at `path`."""
    t0 = time.monotonic()
    while True:
        with contextlib.suppress(FileNotFoundError):
            if marker in path.read_bytes():
                return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            tail = path.read_bytes()[-500:] if path.exists() else b"(no log)"
            raise AssertionError(f"no {marker!r} in {path} after {timeout:g}s; tail: {tail!r}")
        await asyncio.sleep(0.1)


def reachable(address: str, timeout: float = 3.0) -> bool:
    """True when the guest's kernel answers a TCP connection (a refusal is an answer)."""
    with socket.socket() as s:
        s.settimeout(timeout)
        try:
            s.connect((address, 9))
            return True
        except ConnectionRefusedError:
            return True
        except OSError:
            return False


# -- the agent half of the namespaced-NIC test --------------------------------------------------

def _on_bridge(tap: str, bridge: str) -> bool:
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        idx, br = ipr.link_lookup(ifname=tap), ipr.link_lookup(ifname=bridge)
        return bool(idx and br and ipr.get_links(idx[0])[0].get_attr("IFLA_MASTER") == br[0])


async def _netns_child(args: dict) -> dict:
    from agent.drivers.base import InstanceSpec
    from agent.drivers.vm import VMDriver
    out: dict = {}
    d = VMDriver(args["node"], Path(args["state_dir"]), subnet=args["subnet"], accelerator="tcg")
    h = None
    try:
        out["fingerprint"] = await d.fingerprint()
        spec = InstanceSpec(id="net.g.0", job="net", group="g", kind="vm", cpu_milli=1000,
                            memory_bytes=256 << 20, config=args["guest"])
        h = await d.start(spec)
        out["handle"] = h.data
        out["boot_seconds"] = await wait_for_marker(d.log_path(h))
        out["tap_on_bridge"] = await asyncio.to_thread(_on_bridge, h.data.get("tap", "-"), d.network.bridge)
        out["reachable"] = reachable(d.address(h))
        await d.stop(h, 30)
        out["exit"] = (await d.wait(h)).reason
    finally:
        if h is not None:
            await d.destroy(h)
        d.close()
        if d.network is not None:
            await asyncio.to_thread(d.network.teardown)     # pyroute2's IPRoute: not on the loop's thread
    out["tap_left"] = bool(h and subprocess.run(["ip", "link", "show", h.data.get("tap", "-")],
                                                capture_output=True).returncode == 0)
    return out


if __name__ == "__main__" and sys.argv[1:2] == ["netns-child"]:
    print(json.dumps(asyncio.run(_netns_child(json.loads(sys.argv[2])))))
