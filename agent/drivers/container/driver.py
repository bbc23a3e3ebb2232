"""The container driver: runc for namespaces and the root filesystem, the agent for everything else
(cgroups and their limits, the network, exit codes, OOM detection).

Per instance, under `state_dir`:
    instances/<cid>/config.json, rootfs/ (overlay mount), upper/, work/, init.pid, runc.log
    logs/<cid>/current, @*.s          stdout+stderr, rotated by the instance's log process (logger.py);
                                      kept after destroy, removed with the instance's record (purge)
    runc/                             runc's own state (--root)
    images/                           image cache (see rootfs.py)
    network/addresses/                address allocations (see agent/network.py)

Exit codes: `runc run -d` exits once the container runs, orphaning the container's init. The agent
process is made a child subreaper (PR_SET_CHILD_SUBREAPER, done by the constructor, see
become_subreaper) so that init is re-parented to the agent, which then reaps it itself: each
instance's pidfd is registered with the event loop and `os.waitid(P_PIDFD)` collects the status
when it becomes readable. No thread, no waitpid(-1): the agent must not install a child watcher that
reaps every child (asyncio's Safe/FastChildWatcher), or it would steal these statuses; the default
ThreadedChildWatcher and PidfdChildWatcher only wait for their own pids and are fine.

After an agent restart the instances are no longer the agent's children (they were re-parented to
init when the old agent died): `recover` re-arms the pidfd, and their exit code is then unknown
(exit_code None), though an OOM kill is still seen in the cgroup.
"""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent import logfiles
from agent.drivers import availability, diskusage
from agent.drivers.base import DriverError, ExitResult, Handle, InstanceSpec, RestartableError, Stats
from agent.drivers.bridge import Bridge, instance_key
from agent.drivers.container import cgroups as cg
from agent.drivers.container import gpus as gpus_mod
from agent.drivers.container import leftovers, users
from agent.drivers.container import logger as logger_mod
from agent.drivers.container import rootfs as rootfs_mod
from agent.drivers.container import runc as runc_mod
from agent.drivers.container import seccomp as seccomp_mod
from agent.drivers.container import userns as userns_mod
from agent.drivers.failures import Cleanup, driver_error, undone_on_failure
from agent.drivers.paths import Opened, open_allowed
from agent.drivers.process import ended_within, start_time
from agent.images import process as image_process
from agent.images.pull import PullError
from agent.images.store import Image, ImageStore
from agent.network import HostNetwork, NetworkError, bridge_name
from packyard import imageref
from packyard.privilege import choice_problem, host_access, implied_host_access, parse_user

log = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36
KILL_WAIT_SECONDS = 10.0
# after the container's end, how long its log process may take to write what is left in the pipe
# before it is asked to end (SIGTERM: after the next newline), then killed
LOGGER_DRAIN_SECONDS = 5.0


def become_subreaper() -> None:
    """Make this process the reaper of its orphaned descendants (containers after `runc run -d`).
    Idempotent; the agent may call it at start, the driver's constructor does."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise DriverError(f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}")


@dataclass
class _Watched:
    """A running instance whose end this driver object is waiting for."""
    pid: int
    pidfd: int
    cgroup: str
    exited: asyncio.Future[ExitResult]


class ContainerDriver:
    name = "container"

    def __init__(self, node: str, state_dir: Path, subnet: str, bridge: str | None = None,
                 cgroup: cg.Cgroups | None = None, runc: str = "runc",
                 allowed_dirs: Sequence[Path] | None = None, allow_privileged: bool = False,
                 dev_dir: Path = Path("/dev"), parallel_starts: int = 0,
                 seccomp_profile: Path | None = None, userns: str | runc_mod.IdMap = userns_mod.DEFAULT_NAME,
                 images: ImageStore | None = None, log_cap: logger_mod.LogCap | None = None):
        """`allowed_dirs`: where images may be (after symlinks; None: anywhere, for tests; the agent
        always passes its --allowed-dirs). `allow_privileged`: run containers asking for privileged
        mode, the host's network, no seccomp filter or the host's user ids (the agent's
        --allow-privileged); refused otherwise. `dev_dir`: where the host's GPU device nodes are
        (gpus.py). `parallel_starts`: runc creates at once (0: two per CPU, at least four: a confined
        `runc create` is ~15 ms of CPU in ~45 ms, the rest waiting, and starts end in the order they
        came whatever the number). `seccomp_profile`: the filter's profile (None: the default, see
        seccomp.py). `userns`: the node's id range, or the /etc/subuid name to read it for
        (userns.py). Both are read once, here: a missing one makes the driver unavailable.
        `images`: the host's registry image store (default: one under state_dir/images/registry
        with default settings; the agent passes its --registry-config and --image-cache-size).
        `log_cap`: each instance's log rotation (the agent's --log-max-size, --log-max-files)."""
        self.dev_dir = Path(dev_dir)
        self.allowed_dirs = allowed_dirs
        self.allow_privileged = allow_privileged
        self.node = node
        self.state_dir = Path(state_dir)
        self.instances_dir = self.state_dir / "instances"
        self.logs_dir = self.state_dir / "logs"
        self.images_dir = self.state_dir / "images"
        self.runc = runc_mod.Runc(shutil.which(runc) or runc, self.state_dir / "runc")
        self.network = HostNetwork(bridge or bridge_name(node), subnet, self.state_dir)
        self.bridge = Bridge(self.network)
        self._cgroup_error = ""
        self.cgroups: cg.Cgroups | None = cgroup
        if cgroup is None:
            try:
                self.cgroups = cg.detect()
            except cg.CgroupError as e:
                self._cgroup_error = str(e)
        for d in (self.instances_dir, self.logs_dir, self.images_dir, self.runc.root):
            d.mkdir(parents=True, exist_ok=True)
        # images keep setuid programs (privileged .tars and registry layers): no host user may reach
        # them, containers see them only through their overlay (nosuid unless privileged)
        os.chmod(self.images_dir, 0o700)
        become_subreaper()
        self._watched: dict[str, _Watched] = {}
        self._reapers: set[asyncio.Task] = set()   # exec leftovers reaped after a cut-off exec
        self.log_cap = log_cap or logger_mod.LogCap()
        self._loggers: dict[str, int] = {}       # instance id → pidfd of its log process
        self._pipes: dict[str, int] = {}         # instance id → this agent's write end of its pipe
        self.lowers = rootfs_mod.LowerLayers(self.images_dir)
        self.privileged_lowers = rootfs_mod.LowerLayers(self.images_dir / "privileged",
                                                        rootfs_mod.privileged_lower_dir)
        self.images = images or ImageStore(self.images_dir / "registry")
        # told "pulling 12/48 MiB" while a start pulls; the agent points it at its manager
        self.progress: Callable[[str, str], None] = lambda instance_id, message: None
        self._preparing = asyncio.Lock()
        self._running = asyncio.Semaphore(parallel_starts or max(4, 2 * (os.cpu_count() or 2)))
        self._last_turn: asyncio.Future[None] | None = None     # the line's last start's end
        self.seccomp: seccomp_mod.Profile | None = None
        self.ids: runc_mod.IdMap | None = None
        self._seccomp_error = self._userns_error = ""
        try:
            self.seccomp = seccomp_mod.Profile.load(seccomp_profile)
            self.seccomp.oci(runc_mod.CAPABILITIES)      # converted now: a bad profile is told now
        except seccomp_mod.SeccompError as e:
            self._seccomp_error = str(e)
        try:
            self.ids = userns if isinstance(userns, runc_mod.IdMap) else userns_mod.id_map(userns)
            self._userns_error = self._reachable(self.ids)
        except userns_mod.UsernsError as e:
            self._userns_error = str(e)
        ids = self.ids or runc_mod.IdMap(0, 0, 0)
        # images for containers in the user namespace: their own cache, owners shifted once
        self.shifted_lowers = rootfs_mod.LowerLayers(self.images_dir / f"userns-{ids.uid}-{ids.gid}",
                                                     userns_mod.shifted_build(ids))

    # -- protocol -------------------------------------------------------------------------------

    async def fingerprint(self) -> dict[str, str]:
        return await availability.fingerprint(self.name, self._check)

    async def start(self, spec: InstanceSpec) -> Handle:
        # refused before anything is made
        config = spec.config or {}
        registry_image = bool(config.get("image")) and imageref.is_reference(config["image"])
        image = None if registry_image else self._image(spec)
        try:
            host_access = self._host_access(spec)
            gpu_devices = gpus_mod.devices(spec.gpus, self.dev_dir, spec.id)
            return await self._start(spec, image, registry_image, host_access, gpu_devices)
        finally:
            if image is not None:
                image.close()     # the overlay holds the image now (or the start failed)

    async def _start(self, spec: InstanceSpec, opened: Opened | None, registry_image: bool,
                     host_access: list[str], gpu_devices: list) -> Handle:
        config = spec.config or {}
        # the image is used through the fd opened at the check, never by its path again (issue 15)
        image = None if opened is None else opened.proc
        host_network, privileged = "host_network" in host_access, "privileged" in host_access
        seccomp = None if "seccomp" in host_access else self._seccomp_filter()
        ids = None if "userns" in host_access else self._ids()
        cgroups = self._cgroups()
        await self.bridge.ready()
        cid = runc_mod.container_id(spec.id)
        bundle = self.instances_dir / cid
        if bundle.exists():
            raise DriverError(f"instance {spec.id} already exists on {self.node}")
        handle = Handle(spec.id, self.name, {
            "container_id": cid, "bundle": str(bundle),
            # no key, no veth, no address with host_network: the host's own network
            **({} if host_network else {"key": instance_key(self.node, spec.id)}),
            "cgroup": cg.instance_path(self.node, spec.id), "log": str(self.logs_dir / cid / "current"),
            # the GPUs it holds; gpu_devices: the nodes it was given (none where the host has none)
            **({"gpus": list(spec.gpus)} if spec.gpus else {}),
            **({"gpu_devices": [d.path for d in gpu_devices]} if gpu_devices else {})})
        attach: asyncio.Future | None = None
        with contextlib.ExitStack() as pins:    # a pulled image is kept from collection until mounted
            async with undone_on_failure(lambda: self._undo_start(handle, attach), f"cannot start {spec.id}"):
                lower: Path | tuple[Path, ...]
                if registry_image:
                    pulled = await self._pull(spec, ids, privileged)
                    pins.enter_context(self.images.pinned(pulled.digest))
                    lower, proc = pulled.layers, image_process.merged(pulled.config, config)
                    handle.data["image_digest"] = pulled.digest
                    user = self._user(spec, _passwd_layer(pulled.layers), ids, proc.user)
                else:
                    lower = await self._lowers(ids, privileged).get(image)
                    proc = image_process.Process(list(config.get("command") or ["/bin/sleep", "infinity"]),
                                                 dict(config.get("env") or {}), "/", config.get("user"))
                    user = self._user(spec, lower, ids, proc.user)
                # A burst of starts (a job's instances placed here together) is a queue: one start is
                # prepared at a time and at most `parallel_starts` runc creates run at once, so the first
                # in line runs first and the rest follow one by one. Twenty starts interleaved on two
                # cores all ended together, after the last one (issue 12: burst p50 ≈ max).
                async with self._preparing:
                    # no host user may reach a privileged container's setuid programs, nor read what a
                    # container holds or wrote (its rootfs, upper/): root's alone, or for the user
                    # namespace its mapped root's group may search it (runc init walks to rootfs/ as it)
                    bundle.mkdir(parents=True)
                    if ids is not None:
                        os.chown(bundle, 0, ids.gid)
                    bundle.chmod(0o700 if ids is None else 0o710)        # whatever the umask
                    if not host_network and ids is None:
                        # the network (a thread) is set up while cgroup and rootfs are prepared here
                        attach = asyncio.ensure_future(asyncio.to_thread(self.network.attach, handle.data["key"]))
                    cgroups.create(handle.data["cgroup"], cg.Limits(spec.cpu_milli, spec.memory_bytes,
                                                                    spec.pids_max))
                    rootfs = rootfs_mod.mount_overlay(lower, bundle, nosuid=not privileged,
                                                      owner=None if ids is None else (ids.uid, ids.gid))
                    netns_path = None
                    if attach is not None:
                        att = await asyncio.shield(attach)   # a cancelled start must not orphan the thread
                        handle.data.update(netns=att.netns, address=att.address)
                        netns_path = att.netns_path
                    runc_mod.write_config(bundle, runc_mod.config(
                        args=proc.args, env=proc.env | gpus_mod.env(spec.gpus), rootfs=rootfs, cwd=proc.cwd,
                        netns_path=netns_path, cgroups_path=handle.data["cgroup"],
                        hostname=runc_mod.hostname(spec.id), privileged=privileged,
                        host_network=host_network, devices=gpu_devices, user=user, id_map=ids, seccomp=seccomp))
                    # this start's place in the line: it ends after the one prepared before it
                    after, turn = self._last_turn, asyncio.get_running_loop().create_future()
                    self._last_turn = turn
                try:
                    # only runc create (or run) holds a slot: the next in line creates while this one
                    # attaches and starts. `runc start` waits for the previous start's end, so starts
                    # still end in the order they came (a start that took a slot back between create
                    # and start went to the end of the line behind later creates: the first ran last)
                    async with self._running:
                        stdio = self._start_logger(handle)
                        try:
                            if ids is None or host_network:
                                pid = await self.runc.run_detached(cid, bundle, stdio)
                            else:
                                pid = await self.runc.create(cid, bundle, stdio)
                        finally:
                            os.close(stdio)       # the container holds the pipe now: its end is the logger's EOF
                        handle.data.update(pid=pid, start_time=start_time(pid))
                        self._watch(handle, pid, os.pidfd_open(pid))
                    if ids is not None and not host_network:
                        # In a user namespace the network namespace is the one runc made inside it: runc
                        # 1.1 joins the user namespace first on `runc exec`, and then could not enter one
                        # the host's user namespace owns (exec checks would fail). Attached between
                        # create and start.
                        attach = asyncio.ensure_future(asyncio.to_thread(
                            self.network.attach, handle.data["key"], f"/proc/{pid}/ns/net"))
                        att = await asyncio.shield(attach)
                        handle.data.update(netns=att.netns, address=att.address)
                    if after is not None:
                        await asyncio.shield(after)
                    if ids is not None and not host_network:
                        await self.runc.start(cid)
                finally:
                    turn.set_result(None)         # failed or not, the next in line may go on
        return handle

    async def wait(self, handle: Handle) -> ExitResult:
        watched = self._watched.get(handle.id) or self._rewatch(handle)
        if watched is None:
            return self._ended_unobserved(handle)
        result = await asyncio.shield(watched.exited)
        await self._flush_log(handle)    # `ctl logs` right after its end shows its last lines
        return result

    async def stop(self, handle: Handle, grace_seconds: float) -> None:
        watched = self._watched.get(handle.id) or self._rewatch(handle)
        if watched is None or watched.exited.done():
            return
        _signal(watched, signal.SIGTERM)
        if not await _ended_reaping(watched.exited, grace_seconds):
            await self._kill(handle, watched)

    async def destroy(self, handle: Handle) -> None:
        cleanup, data = Cleanup(handle.id), handle.data
        watched = self._watched.get(handle.id) or self._rewatch(handle)
        if watched is not None and not watched.exited.done():
            with cleanup.step(DriverError):
                await self._kill(handle, watched)
        if "container_id" in data:
            with cleanup.step(runc_mod.RuncError):
                await self.runc.delete(data["container_id"])
        # after runc delete: no process of the container is left to hold the pipe
        await self._flush_log(handle)
        await self._end_logger(handle)
        if "bundle" in data:
            with cleanup.step(rootfs_mod.RootfsError):
                rootfs_mod.unmount(Path(data["bundle"]) / "rootfs")
        if self.cgroups is not None and "cgroup" in data:
            with cleanup.step(cg.CgroupError):
                self.cgroups.remove(data["cgroup"])
        if "key" in data:
            with cleanup.step(NetworkError):
                await asyncio.to_thread(self.network.detach, data["key"])
        if "bundle" in data and not rootfs_mod.is_mounted(Path(data["bundle"]) / "rootfs"):
            shutil.rmtree(data["bundle"], ignore_errors=True)
        if "image_digest" in data:
            await self.images.released()      # its image may be one the cache no longer has room for
        self._forget(handle.id)
        cleanup.done()

    async def discard(self, spec: InstanceSpec) -> None:
        cid = runc_mod.container_id(spec.id)
        bundle = self.instances_dir / cid
        if not bundle.exists():
            return          # cut off before its parts were made (during a pull, say): none to remove
        self._cgroups()
        await self.bridge.ready()
        # what a start makes, by the names it gives them (all removed idempotently, made or not)
        await self.destroy(Handle(spec.id, self.name, {
            "container_id": cid, "bundle": str(bundle), "cgroup": cg.instance_path(self.node, spec.id),
            "key": instance_key(self.node, spec.id)}))

    async def recover(self, handle: Handle) -> bool:
        self._cgroups()
        await self.bridge.ready()
        if handle.id in self._watched:
            return not self._watched[handle.id].exited.done()
        if self._rewatch(handle) is None:
            return False
        self._refind_logger(handle)
        return True

    async def stats(self, handle: Handle) -> Stats:
        try:
            u = self._cgroups().usage(handle.data["cgroup"])
        except (cg.CgroupError, KeyError) as e:
            raise driver_error(f"no stats for {handle.id}", e) from e
        disk = await asyncio.to_thread(diskusage.measure, self._disk_paths(handle))
        return Stats(cpu_seconds=u.cpu_seconds, memory_bytes=u.memory_bytes, oom_kills=u.oom_kills,
                     disk_bytes=disk)

    def _disk_paths(self, handle: Handle) -> list[Path]:
        """What counts against resources.disk: the overlay's writable layer (upper, and work, where
        copy-ups are staged) and the instance's log, rotated files included (as kubelet counts)."""
        paths = [*(Path(handle.data["bundle"]) / d for d in ("upper", "work"))] if "bundle" in handle.data else []
        return [*paths, *logfiles.segments(self.log_path(handle))]

    def log_path(self, handle: Handle) -> Path:
        if "log" in handle.data:
            return Path(handle.data["log"])      # logs/<cid>.log for instances of an older agent
        return self.log_path_for(handle.id)

    def log_path_for(self, instance_id: str) -> Path:
        """The current file of the instance's log (its log process's directory, see logger.py), or
        the single file an older agent wrote."""
        cid = runc_mod.container_id(instance_id)
        older = self.logs_dir / f"{cid}.log"
        if older.exists() and not (self.logs_dir / cid).exists():
            return older
        return self.logs_dir / cid / "current"     # as _start names it

    def address(self, handle: Handle) -> str:
        return str(handle.data.get("address", ""))

    async def exec_in(self, handle: Handle, command: tuple[str, ...], timeout: float) -> tuple[int, str]:
        try:
            return await self.runc.exec(handle.data["container_id"], list(command), timeout)
        except (runc_mod.RuncError, KeyError) as e:
            raise driver_error(f"cannot run {command[0] if command else 'a command'} in {handle.id}", e) from e
        except (TimeoutError, asyncio.CancelledError):
            # runc cut off half-way may leave its `runc init` to die as our zombie inside the
            # container's PID namespace (leftovers.py): reaped as it appears, so that the
            # container's init can still end on its own
            task = asyncio.get_running_loop().create_task(_reap_for_a_while())
            self._reapers.add(task)
            task.add_done_callback(self._reapers.discard)
            raise

    # -- beyond the protocol ---------------------------------------------------------------------

    def remove_logs(self, handle: Handle) -> None:
        """Remove the instance's log, its rotated files too (destroy keeps them for `ctl logs`
        after the end)."""
        logfiles.remove(self.log_path(handle))

    def close(self) -> None:
        """Stop watching instances (they keep running; a new driver object can recover them)."""
        loop = None
        with contextlib.suppress(RuntimeError):
            loop = asyncio.get_running_loop()
        for w in self._watched.values():
            if loop is not None:
                loop.remove_reader(w.pidfd)
            with contextlib.suppress(OSError):
                os.close(w.pidfd)
            if not w.exited.done():
                w.exited.cancel()
        self._watched.clear()
        for fd in [*self._loggers.values(), *self._pipes.values()]:   # log processes go on
            with contextlib.suppress(OSError):
                os.close(fd)
        self._loggers.clear()
        self._pipes.clear()

    async def shutdown(self) -> None:
        """On agent shutdown: close(), then remove this node's empty cgroup parents
        (packyard/<node>) and, when no instance is left, the bridge."""
        self.close()
        if self.cgroups is not None:
            with contextlib.suppress(cg.CgroupError):
                self.cgroups.remove_node(self.node)
        if not any(self.instances_dir.iterdir()) and not self.network.pool.in_use():
            await self.bridge.teardown()

    # -- internals -------------------------------------------------------------------------------

    def _cgroups(self) -> cg.Cgroups:
        if self.cgroups is None:
            raise DriverError(f"cgroups unavailable: {self._cgroup_error}")
        return self.cgroups

    async def _check(self, attrs: dict[str, str]) -> str:
        """The fingerprint's check: what is missing to run containers here ("" if nothing)."""
        if self.cgroups is not None:
            attrs["cgroup.version"] = self.cgroups.version
        problem = self._missing_dependency()
        if not problem:
            await self.bridge.ready()
            self.lowers.warm()   # the built-in image, ready before the first start needs it
            self.shifted_lowers.warm()
        return problem

    def _missing_dependency(self) -> str:
        if problem := availability.missing_root():
            return problem
        if self.cgroups is None:
            return self._cgroup_error
        if not os.access(self.runc.binary, os.X_OK):
            return f"runc not found ({self.runc.binary})"
        if logger_mod.binary() is None:      # no container without its log's cap
            return f"{logger_mod.BINARY} not found (Debian package s6)"
        with open("/proc/filesystems") as f:
            if not any(line.split()[-1] == "overlay" for line in f if line.strip()):
                return "the kernel has no overlayfs"
        return self._seccomp_error or self._userns_error

    async def _undo_start(self, handle: Handle, attach: asyncio.Future | None) -> None:
        """What a failed or cancelled start made, removed (see undone_on_failure)."""
        if attach is not None:
            if not attach.done():
                await asyncio.wait([attach])      # its thread cannot be cancelled: let it finish
            if not attach.cancelled():
                attach.exception()                # retrieved; destroy() undoes what it did
        await self.destroy(handle)

    def _image(self, spec: InstanceSpec) -> Opened | None:
        """The image opened, if it is in an allowed directory and not in this agent's state (other
        instances' layers); None: the default rootfs. The caller closes it."""
        image = (spec.config or {}).get("image")
        if image is None:
            return None
        return open_allowed(image, self.allowed_dirs, f"{spec.id}: container.image", (self.state_dir,))

    def _host_access(self, spec: InstanceSpec) -> list[str]:
        """The HOST_ACCESS fields the instance asks for or implies (privileged: also no seccomp
        filter and the host's ids), if this node allows them; its other security fields checked."""
        config = spec.config or {}
        for name in ("seccomp", "userns"):
            if problem := choice_problem(name, config.get(name)):
                raise DriverError(f"{spec.id}: container.{name}: {problem}")
        if config.get("user") is not None:
            try:
                parse_user(config["user"])
            except ValueError as e:
                raise DriverError(f"{spec.id}: container.user: {e}") from None
        asked = host_access(config)
        if asked and not self.allow_privileged:
            raise DriverError(f"{spec.id}: container.{asked[0]} is not allowed on node {self.node} "
                              "(packyard-agent --allow-privileged)")
        return implied_host_access(asked)

    def _lowers(self, ids: runc_mod.IdMap | None, privileged: bool) -> rootfs_mod.LowerLayers:
        """Where the instance's image tree is built: owners shifted for the user namespace; setuid
        bits kept for privileged containers (issue 15: a .tar loses them otherwise)."""
        if ids is not None:
            return self.shifted_lowers
        return self.privileged_lowers if privileged else self.lowers

    def _seccomp_filter(self) -> dict:
        if self.seccomp is None:
            raise DriverError(self._seccomp_error)
        return self.seccomp.oci(runc_mod.CAPABILITIES)

    def _ids(self) -> runc_mod.IdMap:
        if self.ids is None or self._userns_error:
            raise DriverError(f"no user namespace: {self._userns_error}")
        return self.ids

    def _reachable(self, ids: runc_mod.IdMap) -> str:
        """Why the mapped root could not reach the instances' root filesystems, or "": this
        driver's own directories are made searchable (o+x), those above must be already."""
        for d in (self.state_dir, self.instances_dir):
            mode = d.stat().st_mode
            if not mode & 0o001:
                d.chmod(mode & 0o7777 | 0o001)
        blocked = userns_mod.unreachable(self.instances_dir, ids)
        return (f"{blocked} is not searchable by the containers' root (host uid {ids.uid}): give it o+x "
                "(chmod o+x), as the user namespace needs") if blocked else ""

    async def _pull(self, spec: InstanceSpec, ids: runc_mod.IdMap | None, privileged: bool) -> Image:
        """The registry image, pulled if need be; a pull's failure is the instance's (one line).
        Its layers keep their setuid bits for a privileged container only (issue 16)."""
        config = spec.config or {}
        try:
            return await self.images.get(config["image"], config.get("pull") or "if-not-present", ids,
                                         progress=lambda message: self.progress(spec.id, message),
                                         setuid=privileged)
        except PullError as e:      # the restart policy tries again: the registry's answer may change
            raise RestartableError(f"cannot pull {config['image']}: {e}") from None

    @staticmethod
    def _user(spec: InstanceSpec, image_root: Path, ids: runc_mod.IdMap | None, value: str | None
              ) -> runc_mod.User:
        what = f"{spec.id}: container.user"
        user = users.resolve(value, image_root, what)
        if ids is not None and max(user.uid, user.gid, *user.groups) >= ids.size:
            raise DriverError(f"{what}: {max(user.uid, user.gid, *user.groups)} is outside the node's user "
                              f"namespace (ids 0..{ids.size - 1})")
        return user

    def _start_logger(self, handle: Handle) -> int:
        """Start the instance's log process on a new pipe; the pipe's write end, for the container
        (the caller closes it). Kept in the handle, so a restarted agent finds it again."""
        read, write = os.pipe()
        try:
            process = logger_mod.start(self.log_cap, Path(handle.data["log"]).parent, read,
                                       Path(handle.data["bundle"]) / "logger.err")
        except BaseException:
            os.close(write)
            raise
        finally:
            os.close(read)
        handle.data["logger"] = process.data()
        pidfd = logger_mod.find(process)
        if pidfd is not None:
            self._loggers[handle.id] = pidfd
        self._pipes[handle.id] = os.dup(write)   # see _flush_log
        return write

    def _refind_logger(self, handle: Handle) -> None:
        """After an agent restart: the log process of a running instance, found again by the pid and
        start time in its handle (never a second one: the container's pipe is its alone)."""
        if handle.id in self._loggers or "logger" not in handle.data:
            return
        pidfd = logger_mod.find(logger_mod.LogProcess.from_data(handle.data["logger"]))
        if pidfd is None:
            log.warning("%s: its log process (pid %s) is gone; its output is lost until it restarts",
                        handle.id, handle.data["logger"].get("pid"))
            return
        self._loggers[handle.id] = pidfd

    async def _flush_log(self, handle: Handle) -> None:
        """Once the container ended: its last line into the log even without a newline. s6-log
        drops a partial line at EOF but writes it (with a newline) if told SIGHUP before: so this
        agent keeps a write end of the pipe, waits until the log process has read all, tells it,
        then closes its end (the EOF). An agent restarted meanwhile has no such end: the EOF comes
        with the container's end, and a last line without newline is lost."""
        write = self._pipes.pop(handle.id, None)
        if write is None:
            return
        try:
            pidfd = self._loggers.get(handle.id)
            if pidfd is not None and await logger_mod.drained(write, LOGGER_DRAIN_SECONDS):
                logger_mod.signal_it(pidfd, signal.SIGHUP)
        finally:
            os.close(write)
        if pidfd is not None:
            await logger_mod.ended(pidfd, LOGGER_DRAIN_SECONDS)

    async def _end_logger(self, handle: Handle) -> None:
        """Once the container ended: its log process ends by itself when the pipe's last writer is
        gone, after writing what was left; asked to (SIGTERM), then killed, if it has not in time."""
        pidfd = self._loggers.pop(handle.id, None)
        if pidfd is None:
            pidfd = logger_mod.find(logger_mod.LogProcess.from_data(handle.data.get("logger")))
        if pidfd is None:
            return
        try:
            for sig in (None, signal.SIGTERM, signal.SIGKILL):
                if sig is not None:
                    logger_mod.signal_it(pidfd, sig)
                if await logger_mod.ended(pidfd, LOGGER_DRAIN_SECONDS if sig is None else 2.0):
                    break
            logger_mod.reap(pidfd)
        finally:
            os.close(pidfd)

    def _watch(self, handle: Handle, pid: int, pidfd: int) -> _Watched:
        loop = asyncio.get_running_loop()
        w = _Watched(pid, pidfd, handle.data["cgroup"], loop.create_future())
        self._watched[handle.id] = w
        loop.add_reader(pidfd, self._on_exit, w)
        return w

    def _rewatch(self, handle: Handle) -> _Watched | None:
        """Watch an instance started by an earlier agent (or driver object): only if its pid is
        alive, is the same process (start time) and is still in the instance's cgroup."""
        pid, cgroup = handle.data.get("pid"), handle.data.get("cgroup")
        if not pid or not cgroup or self.cgroups is None:
            return None
        try:
            pidfd = os.pidfd_open(pid)
        except (ProcessLookupError, OSError):
            return None
        try:
            same = start_time(pid) == handle.data.get("start_time")
            running = same and pid in self.cgroups.pids(cgroup)
        except (OSError, cg.CgroupError, ValueError):
            same = running = False
        if not running:
            if same:                     # it ended unwatched: collect the zombie if it is ours
                _reap_if_ours(pidfd)
            os.close(pidfd)
            return None
        return self._watch(handle, pid, pidfd)

    def _on_exit(self, w: _Watched) -> None:
        asyncio.get_running_loop().remove_reader(w.pidfd)
        try:
            info = os.waitid(os.P_PIDFD, w.pidfd, os.WEXITED)
        except ChildProcessError:
            info = None                  # not our child (we were restarted): status unknown
        finally:
            os.close(w.pidfd)
        if not w.exited.done():
            w.exited.set_result(_exit_result(info, self._oom_kills(w.cgroup)))

    def _oom_kills(self, cgroup: str | None) -> int:
        try:
            return self.cgroups.oom_kills(cgroup) if self.cgroups is not None and cgroup else 0
        except cg.CgroupError:
            return 0

    def _ended_unobserved(self, handle: Handle) -> ExitResult:
        oom = self._oom_kills(handle.data.get("cgroup")) > 0
        return ExitResult(None, oom_killed=oom, reason="OOMKilled" if oom else "ended unobserved")

    async def _kill(self, handle: Handle, w: _Watched) -> None:
        _signal(w, signal.SIGKILL)
        if self.cgroups is not None:
            with contextlib.suppress(cg.CgroupError):
                self.cgroups.kill(w.cgroup)
        if not await _ended_reaping(w.exited, KILL_WAIT_SECONDS):
            raise DriverError(f"{handle.id} (pid {w.pid}) still alive {KILL_WAIT_SECONDS:g}s after SIGKILL")

    def _forget(self, instance_id: str) -> None:
        w = self._watched.pop(instance_id, None)
        if w is not None and not w.exited.done():
            asyncio.get_running_loop().remove_reader(w.pidfd)
            with contextlib.suppress(OSError):
                os.close(w.pidfd)
            w.exited.cancel()


async def _ended_reaping(exited: asyncio.Future, seconds: float) -> bool:
    """ended_within(), reaping exec leftovers meanwhile: one of them unreaped keeps a container's
    init from ending, whatever signal it got."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(seconds, 0)
    while True:
        leftovers.reap_exec_leftovers()
        left = deadline - loop.time()
        if await ended_within(exited, min(0.2, max(left, 0))):
            return True
        if left <= 0:
            return False


async def _reap_for_a_while() -> None:
    for delay in (0.05, 0.2, 0.5, 1.0, 2.0, 5.0):
        await asyncio.sleep(delay)
        leftovers.reap_exec_leftovers()


def _passwd_layer(layers: tuple[Path, ...]) -> Path:
    """The topmost layer holding /etc/passwd or /etc/group: where users.py reads names."""
    return next((p for p in layers if os.path.lexists(p / "etc/passwd") or os.path.lexists(p / "etc/group")),
                layers[-1])


def _exit_result(info: os.waitid_result | None, oom_kills: int) -> ExitResult:
    code: int | None = None
    reason = "ended while the agent was not its parent"
    if info is not None:
        if info.si_code == os.CLD_EXITED:
            code, reason = info.si_status, f"exit status {info.si_status}"
        else:                            # CLD_KILLED / CLD_DUMPED: si_status is the signal
            code, reason = 128 + info.si_status, f"killed by signal {info.si_status}"
    if oom_kills > 0:
        return ExitResult(code, oom_killed=True, reason="OOMKilled")
    return ExitResult(code, reason=reason)


def _signal(w: _Watched, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, OSError):
        signal.pidfd_send_signal(w.pidfd, sig)


def _reap_if_ours(pidfd: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)


__all__ = ["ContainerDriver", "become_subreaper"]
