"""The VM driver: libvirt (libvirt-python) runs QEMU; the agent decides everything else.

Per instance, under `state_dir`:
    instances/<domain name>/disk.qcow2   copy-on-write overlay over `vm.disk` (removed by destroy)
    logs/<id>.log                        serial console, written by virtlogd; kept after destroy
    vm-probe.json                        the accelerator probe's cached result (probe.py)

Domains are transient (`createXML`), not defined: a packyard VM exists in libvirt exactly while it
runs, so an agent that dies, or a state dir that is lost, leaves no stale definitions behind, and
the handle persisted by the manager plus the domain's metadata (domain.py) are all recover() needs.
Transient domains survive agent and libvirtd restarts (libvirt keeps their live XML in /run).

Ends are seen by a pidfd on the QEMU process (that it ended) and libvirt's lifecycle event (why):
watch.py. Accelerator: probe.py. NIC: nic.py. Overhead measurement: overhead.py.

The guest gets the request (vCPUs = request cpu rounded up, RAM = request memory); the whole QEMU
process (libvirt's cgroup for the domain) is limited to the spec's limit: a cpu quota (cputune
global_quota) and, with `enforce_memory_limit`, a memory hard limit (set live: _limit_memory).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Sequence
from pathlib import Path

import libvirt

from agent import logfiles
from agent.drivers import availability
from agent.drivers.base import DriverError, ExitResult, Handle, InstanceSpec, Stats
from agent.drivers.bridge import Bridge, instance_key
from agent.drivers.failures import Cleanup, undone_on_failure
from agent.drivers.paths import Opened, open_allowed
from agent.drivers.process import ended_within, start_time
from agent.drivers.vm import domain as dom
from agent.drivers.vm import gpus as gpus_mod
from agent.drivers.vm import nic as nic_mod
from agent.drivers.vm import overhead, probe
from agent.drivers.vm.events import ensure_event_loop
from agent.drivers.vm.watch import Watched, Watcher
from agent.network import HostNetwork, bridge_name

QEMU_PIDFILE_DIR = Path("/run/libvirt/qemu")
QEMU_LOG_DIR = Path("/var/log/libvirt/qemu")
KILL_WAIT_SECONDS = 15.0
SHUTDOWN_REPEAT = 5.0         # re-press the power button: a press before acpid runs is lost
MIN_GUEST_MEMORY = 64 << 20
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


class VMDriver:
    name = "vm"

    def __init__(self, node: str, state_dir: Path, subnet: str | None = None,
                 bridge: str | None = None, uri: str = "qemu:///system",
                 probe_kernel: str | None = None, accelerator: str | None = None,
                 kvm_timeout: float = probe.KVM_TIMEOUT, tcg_timeout: float = probe.TCG_TIMEOUT,
                 connect_timeout: float = 10.0, enforce_memory_limit: bool = True,
                 allowed_dirs: Sequence[Path] | None = None, pci_dir: Path = gpus_mod.PCI_DEVICES):
        """`subnet`: the host's instance subnet (None: no NIC). `probe_kernel`: the kernel the
        accelerator probe boots (None: the newest /boot/vmlinuz-*). `accelerator`: skip the probe
        and use this one (kvm | tcg). `allowed_dirs`: where kernel, initrd and disk may be (after
        symlinks; None: anywhere, for tests; the agent always passes its --allowed-dirs). `pci_dir`:
        where the host's PCI devices are listed, its GPUs among them (gpus.py)."""
        self.pci_dir = Path(pci_dir)
        self.allowed_dirs = allowed_dirs
        self.node = node
        self.state_dir = Path(state_dir)
        self.uri = uri
        self.instances_dir = self.state_dir / "instances"
        self.logs_dir = self.state_dir / "logs"
        for d in (self.instances_dir, self.logs_dir):
            d.mkdir(parents=True, exist_ok=True)
        # QEMU runs as libvirt-qemu: it must traverse to the overlays
        os.chmod(self.instances_dir, 0o711)
        self.network = HostNetwork(bridge or bridge_name(node), subnet, self.state_dir) if subnet else None
        self.bridge = Bridge(self.network) if self.network is not None else None
        self.probe_kernel = probe_kernel
        self.kvm_timeout, self.tcg_timeout = kvm_timeout, tcg_timeout
        self.connect_timeout = connect_timeout
        self.enforce_memory_limit = enforce_memory_limit
        self._forced_accelerator = accelerator
        self.choice: probe.Choice | None = None
        self._conn: libvirt.virConnect | None = None
        self._callback_id: int | None = None
        self._conn_lock = asyncio.Lock()
        self._probe_lock = asyncio.Lock()
        self.watcher = Watcher()
        ensure_event_loop()

    # -- protocol -------------------------------------------------------------------------------

    async def fingerprint(self) -> dict[str, str]:
        return await availability.fingerprint(self.name, self._check)

    async def start(self, spec: InstanceSpec) -> Handle:
        config = dict(spec.config or {})
        if not config.get("kernel") and not config.get("disk"):
            raise DriverError(f"{spec.id}: vm needs kernel or disk")
        opened: dict[str, Opened] = {}
        try:
            for f in ("kernel", "initrd", "disk"):
                if config.get(f):
                    opened[f] = open_allowed(config[f], self.allowed_dirs, f"{spec.id}: vm.{f}",
                                             (self.state_dir,))
                    if not stat.S_ISREG(os.fstat(opened[f].fd).st_mode):
                        raise DriverError(f"{spec.id}: vm.{f} {config[f]} is not a file on {self.node}")
            return await self._start(spec, config, opened)
        finally:
            for o in opened.values():
                o.close()

    async def _start(self, spec: InstanceSpec, config: dict, opened: dict[str, Opened]) -> Handle:
        hostdevs = gpus_mod.passthrough(spec.gpus, gpus_mod.host_gpus(self.pci_dir) if spec.gpus else (),
                                        spec.id)
        conn = await self._connection()
        accel = await self._accelerator()
        name = dom.domain_name(self.node, spec.id)
        workdir = self.instances_dir / name
        if workdir.exists():
            raise DriverError(f"instance {spec.id} already exists on {self.node}")
        guest_memory = max(MIN_GUEST_MEMORY, spec.request_memory_bytes or spec.memory_bytes)
        vcpus = max(1, math.ceil((spec.request_cpu_milli or spec.cpu_milli) / 1000))
        handle = Handle(spec.id, self.name, {
            "domain": name, "dir": str(workdir), "log": str(self.log_path_for(spec.id)),
            "key": instance_key(self.node, spec.id), "guest_memory": guest_memory, "vcpus": vcpus,
            "accelerator": accel,
            # the GPUs it holds; gpu_pci: the devices passed through (none where none are known)
            **({"gpus": list(spec.gpus)} if spec.gpus else {}),
            **({"gpu_pci": [str(a) for a in hostdevs]} if hostdevs else {})})
        async with undone_on_failure(lambda: self.destroy(handle), f"cannot start {spec.id}", _describe):
            workdir.mkdir(parents=True)
            os.chmod(workdir, 0o711)
            disk = ""
            # kernel, initrd and the disk's base: the files opened at the check, linked (or copied)
            # into the instance's dir, which is all libvirt and QEMU are given (issue 15)
            for f in ("kernel", "initrd"):
                if f in opened:
                    config[f] = str(workdir / f)
                    await asyncio.to_thread(_link_or_copy, opened[f], config[f])
            if "disk" in opened:
                disk = str(workdir / "disk.qcow2")
                await asyncio.to_thread(_create_overlay, opened["disk"], str(workdir / "base"), disk,
                                        f"{spec.id}: vm.disk {config['disk']}")
                handle.data["overlay"] = disk
            nics, cmdline = await self._plan_nic(handle, config)
            hard_limit = spec.memory_bytes if self.enforce_memory_limit and \
                spec.memory_bytes > guest_memory else 0
            xml = dom.render(dom.DomainConfig(
                name=name, instance_id=spec.id, node=self.node, job=spec.job, group=spec.group,
                accelerator=accel, vcpus=vcpus, memory_bytes=guest_memory,
                console_log=handle.data["log"], kernel=config.get("kernel") or "",
                initrd=config.get("initrd") or "", cmdline=cmdline if config.get("kernel") else "",
                disk=disk, nics=nics, cpu_quota_milli=spec.cpu_milli, hostdevs=hostdevs))
            domain = await asyncio.to_thread(conn.createXML, xml, 0)
            if hard_limit:
                await asyncio.to_thread(_limit_memory, domain, hard_limit)
            handle.data["uuid"] = domain.UUIDString()
            pid = _qemu_pid(name)
            handle.data.update(pid=pid, start_time=start_time(pid))
            if handle.data.get("tap"):
                await asyncio.to_thread(nic_mod.adopt_tap, handle.data["tap"],
                                        handle.data["libvirtd"], self.network.bridge)
            self.watcher.watch(handle.id, name, pid)
        return handle

    async def wait(self, handle: Handle) -> ExitResult:
        w = self.watcher.get(handle.id) or await self._rewatch(handle)
        if w is None:
            return ExitResult(None, reason="ended unobserved")
        return await asyncio.shield(w.exited)

    async def stop(self, handle: Handle, grace_seconds: float) -> None:
        w = self.watcher.get(handle.id) or await self._rewatch(handle)
        if w is None or w.exited.done():
            return
        deadline = asyncio.get_running_loop().time() + max(grace_seconds, 0)
        while not w.exited.done():
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            await self._domain_call(handle, "shutdownFlags", libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
            await ended_within(w.exited, min(left, SHUTDOWN_REPEAT))
        if not w.exited.done():
            handle.data["destroyed_after_grace"] = True
            await self._kill(handle, w)

    async def destroy(self, handle: Handle) -> None:
        cleanup, data = Cleanup(handle.id), handle.data
        w = self.watcher.get(handle.id) or await self._rewatch(handle)
        if w is not None and not w.exited.done():
            with cleanup.step(DriverError):
                await self._kill(handle, w)
        elif w is None and "domain" in data:
            with cleanup.step(DriverError):      # ours, running, but its pid unknown or changed
                await self._domain_call(handle, "destroy")
        if data.get("tap"):
            with cleanup.step(nic_mod.NicError):
                await asyncio.to_thread(nic_mod.remove_tap, data["tap"], data.get("libvirtd"))
        if self.network is not None and "key" in data:
            self.network.pool.release(data["key"])
        if "dir" in data:
            shutil.rmtree(data["dir"], ignore_errors=True)
        if "domain" in data and (w is None or w.exited.done()):
            # libvirt's own per-domain log (QEMU's command line and stderr): one file per transient
            # domain name, never reused, so it would pile up; a failure's hint is already taken
            (QEMU_LOG_DIR / f"{data['domain']}.log").unlink(missing_ok=True)
        self.watcher.forget(handle.id)
        cleanup.done()

    async def discard(self, spec: InstanceSpec) -> None:
        name = dom.domain_name(self.node, spec.id)
        workdir = self.instances_dir / name
        if not workdir.exists():
            return          # cut off before its parts were made: none to remove
        # a domain libvirt may be running under its name, its dir, its address (destroy: idempotent)
        await self.destroy(Handle(spec.id, self.name, {
            "domain": name, "dir": str(workdir), "key": instance_key(self.node, spec.id)}))

    async def recover(self, handle: Handle) -> bool:
        await self._connection()
        w = self.watcher.get(handle.id)
        if w is not None:
            return not w.exited.done()
        return await self._rewatch(handle) is not None

    async def stats(self, handle: Handle) -> Stats:
        pid = handle.data.get("pid")
        if not pid:
            raise DriverError(f"no stats for {handle.id}: no QEMU process")
        try:
            m = await asyncio.to_thread(overhead.measure, pid, handle.data["guest_memory"])
        except (OSError, KeyError, ValueError) as e:
            raise DriverError(f"no stats for {handle.id}: {e}") from e
        return Stats(cpu_seconds=m.cpu_seconds, memory_bytes=m.rss_bytes,
                     overhead_memory_bytes=m.overhead_bytes, guest_memory_bytes=m.guest_backed_bytes)

    def log_path(self, handle: Handle) -> Path:
        if "log" in handle.data:
            return Path(handle.data["log"])
        return self.log_path_for(handle.id)

    def address(self, handle: Handle) -> str:
        return str(handle.data.get("address", ""))

    async def exec_in(self, handle: Handle, command: tuple[str, ...], timeout: float) -> tuple[int, str]:
        # nothing of ours runs inside a guest (the spec refuses exec checks on VMs: tcp and http)
        raise DriverError(f"{handle.id} is a VM: commands cannot be run inside it")

    async def shutdown(self) -> None:
        """Agent exit: stop following domains (they keep running for a restarted agent). The
        bridge stays: VMs on it outlive the agent."""
        self.close()

    # -- beyond the protocol ---------------------------------------------------------------------

    def log_path_for(self, instance_id: str) -> Path:
        return self.logs_dir / f"{_SAFE.sub('_', instance_id)}.log"

    def remove_logs(self, handle: Handle) -> None:
        """Remove the instance's console log (destroy keeps it for `ctl logs` after the end)."""
        logfiles.remove(self.log_path(handle))        # virtlogd's rotated files too

    async def measure(self, handle: Handle) -> overhead.Measurement:
        """The full overhead measurement of a running instance (stats() carries its summary)."""
        try:
            return await asyncio.to_thread(overhead.measure, handle.data["pid"],
                                           handle.data["guest_memory"])
        except (OSError, KeyError) as e:
            raise DriverError(f"cannot measure {handle.id}: {e}") from e

    async def domains(self) -> list[dom.Identity]:
        """packyard domains of this node that libvirt runs (whether or not a handle knows them)."""
        conn = await self._connection()

        def scan() -> list[dom.Identity]:
            found = []
            for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                if not d.name().startswith(dom.PREFIX):
                    continue
                with contextlib.suppress(libvirt.libvirtError):
                    ident = dom.identity(d.XMLDesc(0))
                    if ident is not None and ident.node == self.node \
                            and not ident.instance_id.startswith(probe.PROBE_ID):
                        found.append(ident)
            return found
        return await asyncio.to_thread(scan)

    async def probe_accelerator(self, use_cache: bool = True) -> probe.Choice:
        """Run (or read from the cache) the accelerator probe; fingerprint() and start() use it."""
        conn = await self._connection()
        async with self._probe_lock:
            if use_cache and self.choice is not None:     # a concurrent caller just probed
                return self.choice
            self.choice = await asyncio.to_thread(
                probe.choose, conn, self.state_dir, self.node, self.probe_kernel,
                self.kvm_timeout, self.tcg_timeout, use_cache)
        return self.choice

    def close(self) -> None:
        """Stop watching domains and drop the libvirt connection; domains keep running."""
        self.watcher.close()
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(libvirt.libvirtError):
                if self._callback_id is not None:
                    conn.domainEventDeregisterAny(self._callback_id)
                conn.close()
        self._callback_id = None

    # -- internals: libvirt ----------------------------------------------------------------------

    async def _check(self, attrs: dict[str, str]) -> str:
        """The fingerprint's check: what is missing to run VMs here ("" if nothing)."""
        problem = availability.missing_root() or ("" if shutil.which("qemu-img") else "qemu-img not found")
        if not problem:
            await self._connection()
            attrs["vm.accelerator"] = await self._accelerator()
            if self.choice is not None:
                attrs.update(self.choice.attributes())
            attrs["vm.network"] = await self._network_mode()
        return problem

    async def _connection(self) -> libvirt.virConnect:
        async with self._conn_lock:
            if self._conn is not None:
                try:
                    if self._conn.isAlive():
                        return self._conn
                except libvirt.libvirtError:
                    pass
                self._conn = None
            try:
                conn = await asyncio.wait_for(asyncio.to_thread(libvirt.open, self.uri),
                                              self.connect_timeout)
            except TimeoutError:
                raise DriverError(f"libvirtd not reachable at {self.uri}: no answer within "
                                  f"{self.connect_timeout:g}s") from None
            except libvirt.libvirtError as e:
                raise DriverError(f"libvirtd not reachable at {self.uri}: {_message(e)}") from e
            self._callback_id = conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self.watcher.on_libvirt_event, None)
            self._conn = conn
            return conn

    async def _accelerator(self) -> str:
        if self._forced_accelerator:
            return self._forced_accelerator
        choice = self.choice or await self.probe_accelerator()
        if not choice.accelerator:
            details = "; ".join(f"{r.accelerator}: {r.detail}" for r in choice.results)
            raise DriverError(f"no accelerator runs a guest ({details})")
        return choice.accelerator

    async def _lookup(self, handle: Handle) -> libvirt.virDomain | None:
        """The handle's domain if it is running and is ours (metadata names this node and id)."""
        conn = await self._connection()

        def find() -> libvirt.virDomain | None:
            try:
                d = conn.lookupByName(handle.data["domain"])
                ident = dom.identity(d.XMLDesc(0))
                ours = ident is not None and ident.node == self.node and ident.instance_id == handle.id
                return d if ours and d.isActive() else None
            except libvirt.libvirtError as e:
                if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return None
                raise
        try:
            return await asyncio.to_thread(find)
        except libvirt.libvirtError as e:
            raise DriverError(f"libvirt: {_message(e)}") from e

    async def _domain_call(self, handle: Handle, method: str, *args) -> None:
        d = await self._lookup(handle)
        if d is None:
            return
        try:
            await asyncio.to_thread(getattr(d, method), *args)
        except libvirt.libvirtError as e:
            if e.get_error_code() not in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID):
                raise DriverError(f"{method} {handle.data['domain']}: {_message(e)}") from e

    # -- internals: watching ---------------------------------------------------------------------

    async def _rewatch(self, handle: Handle) -> Watched | None:
        """Watch a domain started by an earlier agent (or driver object), if it still runs and is
        ours; the QEMU pid is taken from libvirt again (the same process: not restarted)."""
        if "domain" not in handle.data:
            return None
        try:
            d = await self._lookup(handle)
        except DriverError:
            return None
        if d is None:
            return None
        try:
            pid = _qemu_pid(handle.data["domain"])
            handle.data.update(pid=pid, start_time=start_time(pid))
            if handle.data.get("tap") and self.network is not None:
                # (again) on the bridge: the previous agent may have died before moving it
                await asyncio.to_thread(nic_mod.adopt_tap, handle.data["tap"],
                                        handle.data["libvirtd"], self.network.bridge)
            return self.watcher.watch(handle.id, handle.data["domain"], pid)
        except (OSError, ValueError, nic_mod.NicError, AttributeError):
            return None

    async def _kill(self, handle: Handle, w: Watched) -> None:
        await self._domain_call(handle, "destroy")
        if not await ended_within(w.exited, KILL_WAIT_SECONDS):
            raise DriverError(f"{handle.id} (QEMU pid {w.pid}) still running {KILL_WAIT_SECONDS:g}s after destroy")

    # -- internals: network ----------------------------------------------------------------------

    async def _network_mode(self) -> str:
        if self.network is None:
            return "none: no subnet configured"
        return "tap" if nic_mod.libvirtd_netns_differs(self.uri) else "bridge"

    async def _plan_nic(self, handle: Handle, config: dict) -> tuple[tuple[dom.Nic, ...], str]:
        """The domain's NIC and the kernel command line carrying its address (direct kernel boot:
        the test guest's /init reads `packyard.ip=`; a disk image must find its own address)."""
        cmdline = str(config.get("cmdline") or "console=ttyS0")
        if self.bridge is None:
            return (), cmdline
        network = await self.bridge.ready()
        key = handle.data["key"]
        mac = dom.mac_address(key)
        if config.get("kernel"):
            address = network.pool.allocate(key)
            handle.data["address"] = address
            cmdline += f" packyard.ip={address}/{network.prefixlen},{network.gateway}"
        libvirtd = nic_mod.libvirtd_netns_differs(self.uri)
        if libvirtd is None:
            return (dom.Nic("bridge", network.bridge, mac),), cmdline
        tap = nic_mod.tap_name(key)
        handle.data.update(tap=tap, libvirtd=libvirtd)
        await asyncio.to_thread(nic_mod.create_tap, tap, libvirtd)
        return (dom.Nic("ethernet", tap, mac),), cmdline


def _create_overlay(base: Opened, copy: str, overlay: str, what: str) -> None:
    """`overlay`: a qcow2 over `copy`, the opened base linked (or copied) into the instance's dir.
    The format is read from the file's magic, never probed by QEMU (a raw disk whose guest wrote a
    qcow2 header would otherwise name any host file as its backing); a qcow2 with a backing file or
    an external data file is refused (OpenStack OSSA-2024-001: it reads the host's files)."""
    with open(base.proc, "rb") as f:
        fmt = "qcow2" if f.read(4) == b"QFI\xfb" else "raw"
    if fmt == "qcow2":
        info = subprocess.run(["qemu-img", "info", "-U", "--output=json", "-f", "qcow2", base.proc],
                              capture_output=True, text=True, pass_fds=(base.fd,))
        if info.returncode != 0:
            raise DriverError(f"{what}: {info.stderr.strip()}")
        if problem := qcow2_problem(json.loads(info.stdout)):
            raise DriverError(f"{what}: {problem}, which is refused (it could read the host's files)")
    _link_or_copy(base, copy)
    p = subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", copy, "-F", fmt, overlay],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise DriverError(f"cannot create an overlay of {what}: {p.stderr.strip()}")


def qcow2_problem(info: dict) -> str:
    """What makes a qcow2 (`qemu-img info --output=json`) unsafe to boot, or ""."""
    if info.get("backing-filename") or info.get("full-backing-filename"):
        return f"it has a backing file ({info.get('backing-filename') or info.get('full-backing-filename')})"
    data = ((info.get("format-specific") or {}).get("data") or {})
    if data.get("data-file"):
        return f"it has an external data file ({data['data-file']})"
    return ""


def _link_or_copy(opened: Opened, dest: str) -> None:
    """A hard link to the opened file (same file system), else a copy read from its fd."""
    try:
        os.link(opened.proc, dest, follow_symlinks=True)
    except OSError:
        with open(opened.proc, "rb") as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        os.chmod(dest, 0o644)          # QEMU (libvirt-qemu) reads it


def _limit_memory(domain: libvirt.virDomain, limit: int) -> None:
    """The memory cgroup hard limit of the running domain. Set live rather than in the XML: a
    <memtune><hard_limit> at creation also makes libvirt raise QEMU's RLIMIT_MEMLOCK to it, which
    fails without CAP_SYS_RESOURCE (containers, this CI); the live setting only writes the cgroup."""
    domain.setMemoryParameters({libvirt.VIR_DOMAIN_MEMORY_HARD_LIMIT: (limit + 1023) // 1024},
                               libvirt.VIR_DOMAIN_AFFECT_LIVE)


def _qemu_pid(name: str) -> int:
    return int((QEMU_PIDFILE_DIR / f"{name}.pid").read_text().strip())


def _message(e: libvirt.libvirtError) -> str:
    return (e.get_error_message() or str(e)).splitlines()[0]


def _describe(e: BaseException) -> str:
    """An error as users read it: libvirt's own message, first line."""
    return _message(e) if isinstance(e, libvirt.libvirtError) else str(e)


__all__ = ["VMDriver"]
