"""The OCI bundle (config.json) and the runc calls.

runc only sets up namespaces and the root filesystem and execs the process; cgroup limits are the
agent's (cgroups.py): config.json names the cgroup path but carries no cpu/memory/pids
resources, only the device allow-list (a security setting, not a limit) and the device nodes made
in the container beyond runc's defaults (an instance's GPUs, gpus.py).

What confines a container, as Docker's defaults do (issue 15): its own cgroup namespace; /proc
nosuid,noexec,nodev; Docker's masked and read-only paths; a seccomp filter (seccomp.py); a user
namespace whose root is an unprivileged host uid (userns.py); oom_score_adj 0 and ordinary rlimits
rather than the agent's own (its unit raises NOFILE and CORE and lowers OOMScoreAdjust).

Subprocesses are awaited with a pidfd registered in the event loop: no thread and no waitpid(-1),
so asyncio's child watcher and the driver's own reaping of container processes are not disturbed.
"""
from __future__ import annotations

import asyncio
import functools
import glob
import hashlib
import json
import os
import re
import resource
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import private

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
VALID_ID = re.compile(r"^[A-Za-z0-9_+.-]{1,128}$")
# Docker's default set: enough for ordinary programs (ping needs NET_RAW), nothing administrative.
CAPABILITIES = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
                "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
                "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]
# Docker's lists (moby daemon/pkg/oci/defaults.go, 2025), plus each CPU's thermal_throttle that
# exists (masked_paths()); /proc/interrupts and powercap since GHSA-6fw5-f8r9-fgfm, GHSA-jq35-85cj-fj4p
MASKED_PATHS = ["/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/sched_debug", "/proc/scsi", "/proc/timer_list",
                "/proc/timer_stats", "/sys/devices/virtual/powercap", "/sys/firmware"]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
RLIM_INFINITY = 2**64 - 1
# what an ordinary service gets from systemd (DefaultLimitNOFILE=1024:524288, DefaultLimitCORE=0:infinity),
# and so containerd 2's and Docker's containers; RLIMIT_NPROC is left alone: it counts a host uid's
# processes, which all containers of the node's id range share (the pids cgroup bounds each one)
RLIMITS = {"RLIMIT_NOFILE": (1024, 524288), "RLIMIT_CORE": (0, RLIM_INFINITY)}


@functools.cache
def rlimits() -> list[dict[str, Any]]:
    """RLIMITS, no higher than the agent's own (read once): under a user namespace runc cannot raise
    a hard limit (no CAP_SYS_RESOURCE in the host's namespace)."""
    out = []
    for name, (soft, hard) in RLIMITS.items():
        own = resource.getrlimit(getattr(resource, name))[1]
        hard = hard if own == resource.RLIM_INFINITY else min(hard, own)
        out.append({"type": name, "soft": min(soft, hard), "hard": hard})
    return out
# Every capability, by number (linux/capability.h); a privileged container gets those the agent has.
ALL_CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN",
    "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE"]


class RuncError(Exception):
    """runc failed; the message carries runc's own error text."""


@dataclass(frozen=True)
class IdMap:
    """A user namespace: container ids 0..size-1 are host ids uid..uid+size-1 (gids likewise)."""
    uid: int
    gid: int
    size: int


@dataclass(frozen=True)
class User:
    """Who runs the process, in the container's ids."""
    uid: int = 0
    gid: int = 0
    groups: tuple[int, ...] = ()          # supplementary groups


@dataclass(frozen=True)
class Device:
    """A character device node of the host, made at the same path in the container and allowed."""
    path: str
    major: int
    minor: int
    mode: int = 0o666
    source: str = ""          # the host's node (default: `path`), bound in a user namespace


def container_id(instance_id: str) -> str:
    """The id runc gets: the instance id when runc accepts it, else a sanitized form + a hash."""
    if VALID_ID.match(instance_id) and instance_id not in (".", ".."):
        return instance_id
    clean = re.sub(r"[^A-Za-z0-9_+.-]", "_", instance_id)[:100].strip(".") or "x"
    return f"{clean}-{hashlib.sha1(instance_id.encode()).hexdigest()[:8]}"


def hostname(instance_id: str) -> str:
    name = re.sub(r"[^a-z0-9-]", "-", instance_id.lower()).strip("-")[:63]
    return name or "container"


def host_capabilities() -> list[str]:
    """The capabilities in the agent's own bounding set: all a privileged container can be given
    (runc fails on one the agent lacks, as when the agent itself runs in a container)."""
    try:
        with open("/proc/self/status") as f:
            bounding = next(int(line.split()[1], 16) for line in f if line.startswith("CapBnd:"))
    except (OSError, ValueError, StopIteration):
        return list(CAPABILITIES)
    return [name for bit, name in enumerate(ALL_CAPABILITIES) if bounding >> bit & 1]


@functools.cache
def masked_paths() -> list[str]:
    """MASKED_PATHS and this host's /sys/devices/system/cpu/cpu*/thermal_throttle (read once)."""
    return MASKED_PATHS + sorted(glob.glob("/sys/devices/system/cpu/cpu[0-9]*/thermal_throttle"))


def config(*, args: list[str], env: dict[str, str], rootfs: Path, netns_path: str | None,
           cgroups_path: str, hostname: str, privileged: bool = False,
           host_network: bool = False, devices: list[Device] | None = None, user: User = User(),
           id_map: IdMap | None = None, seccomp: dict[str, Any] | None = None, cwd: str = "/") -> dict[str, Any]:
    """config.json for one instance (OCI runtime spec 1.0). `privileged` and `host_network` are
    only asked for when the operator allowed them (the driver checks). `devices`: made in the
    container and allowed (read, write, mknod), every other device staying denied. `id_map`: a user
    namespace (None: the host's ids); `seccomp`: linux.seccomp (None: no filter)."""
    env = dict(env)
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("HOSTNAME", hostname)
    network: dict[str, str] = {"type": "network"}
    if netns_path:
        network["path"] = netns_path
    cfg = _base_config(args, env, rootfs, cgroups_path, hostname,
                       namespaces=[{"type": t} for t in ("pid", "ipc", "uts", "mount", "cgroup")]
                       + ([] if host_network else [network]))
    cfg["process"]["cwd"] = cwd            # an image's WorkingDir (issue 16)
    cfg["process"]["user"] = {"uid": user.uid, "gid": user.gid,
                              **({"additionalGids": list(user.groups)} if user.groups else {})}
    if id_map is not None:
        _in_user_namespace(cfg, id_map)
    if seccomp is not None:
        cfg["linux"]["seccomp"] = seccomp
    if devices and id_map is not None:
        # no mknod in a user namespace: the host's nodes are bound (what runc does from `path`)
        cfg["mounts"] += [{"destination": d.path, "type": "bind", "source": d.source or d.path,
                           "options": ["bind", "nosuid", "noexec"]} for d in devices]
    elif devices:
        cfg["linux"]["devices"] = [{"path": d.path, "type": "c", "major": d.major, "minor": d.minor,
                                    "fileMode": d.mode, "uid": 0, "gid": 0} for d in devices]
    if devices:
        cfg["linux"]["resources"]["devices"] += [{"allow": True, "type": "c", "major": d.major,
                                                  "minor": d.minor, "access": "rwm"} for d in devices]
    if privileged:
        _make_privileged(cfg)
    return cfg


def _in_user_namespace(cfg: dict[str, Any], id_map: IdMap) -> None:
    """Root in the container is host uid `id_map.uid`. The network namespace must be one runc makes
    (owned by this user namespace: see ContainerDriver.start), not a path."""
    linux = cfg["linux"]
    linux["namespaces"].append({"type": "user"})
    for ns in linux["namespaces"]:
        ns.pop("path", None)
    linux["uidMappings"] = [{"containerID": 0, "hostID": id_map.uid, "size": id_map.size}]
    linux["gidMappings"] = [{"containerID": 0, "hostID": id_map.gid, "size": id_map.size}]


def _make_privileged(cfg: dict[str, Any]) -> None:
    """What `docker run --privileged` changes: every capability, setuid binaries work, nothing of
    /proc masked or read-only, every device allowed, /sys writable. (Nor any seccomp filter: the
    driver gives none, nor a user namespace.)"""
    caps = host_capabilities()
    cfg["process"]["capabilities"] = {k: caps for k in ("bounding", "effective", "permitted")}
    cfg["process"]["noNewPrivileges"] = False
    linux = cfg["linux"]
    linux["maskedPaths"], linux["readonlyPaths"] = [], []
    linux["resources"]["devices"] = [{"allow": True, "access": "rwm"}]
    for mount in cfg["mounts"]:
        if mount["destination"] == "/sys":
            mount["options"] = [o for o in mount["options"] if o != "ro"]


def _base_config(args: list[str], env: dict[str, str], rootfs: Path, cgroups_path: str, hostname: str,
                 namespaces: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": list(args),
            "env": [f"{k}={v}" for k, v in env.items()],
            "cwd": "/",
            "capabilities": {k: CAPABILITIES for k in ("bounding", "effective", "permitted")},
            "noNewPrivileges": True,
            "oomScoreAdj": 0,                # not the agent's (its unit sets -500)
            "rlimits": rlimits(),
        },
        "root": {"path": str(rootfs), "readonly": False},
        "hostname": hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
        ],
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": "/" + cgroups_path.strip("/"),
            # no cpu/memory/pids here: the agent writes those itself
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "maskedPaths": masked_paths(),
            "readonlyPaths": READONLY_PATHS,
        },
    }


def write_config(bundle: Path, cfg: dict[str, Any]) -> None:
    bundle.mkdir(parents=True, exist_ok=True)
    private.write_text(bundle / "config.json", json.dumps(cfg, indent=1))   # it holds the job's env


class Runc:
    def __init__(self, binary: str, root: Path):
        self.binary = binary
        self.root = root

    def _argv(self, *args: str, log: Path | None = None) -> list[str]:
        argv = [self.binary, "--root", str(self.root)]
        if log is not None:
            argv += ["--log", str(log), "--log-format", "json"]
        return argv + list(args)

    async def run_detached(self, cid: str, bundle: Path, stdio: int) -> int:
        """`runc run -d`: start the container and return its init's pid once it runs. The container
        inherits stdout/stderr = `stdio` (runc's pass-through stdio, no terminal): the write end of
        the pipe its log process reads (logger.py)."""
        return await self._launch("run", "-d", cid=cid, bundle=bundle, stdio=stdio)

    async def create(self, cid: str, bundle: Path, stdio: int) -> int:
        """`runc create`: the container made, its init waiting to exec the command (`start`); its
        pid. Stdout/stderr as run_detached."""
        return await self._launch("create", cid=cid, bundle=bundle, stdio=stdio)

    async def start(self, cid: str) -> None:
        """`runc start`: a created container's init execs its command."""
        rc, stderr = await run(self._argv("start", cid))
        if rc != 0:
            raise RuncError(f"runc start {cid}: {stderr.decode(errors='replace').strip() or f'exit status {rc}'}")

    async def _launch(self, *verb: str, cid: str, bundle: Path, stdio: int) -> int:
        pid_file, runc_log = bundle / "init.pid", bundle / "runc.log"
        pid_file.unlink(missing_ok=True)
        argv = self._argv(*verb, "--pid-file", str(pid_file), "--bundle", str(bundle), cid, log=runc_log)
        # runc's own errors are in runc_log (its stderr is the container's, in the instance's log)
        rc, _ = await run(argv, stdout=stdio, stderr=stdio)
        if rc != 0:
            raise RuncError(_runc_message(runc_log, b"") or f"runc {verb[0]} exited with {rc}")
        try:
            return int(pid_file.read_text())
        except (OSError, ValueError) as e:
            raise RuncError(f"runc {verb[0]} succeeded but wrote no pid file: {e}") from e

    async def exec(self, cid: str, command: list[str], timeout: float) -> tuple[int, str]:
        """`runc exec`: run command in the container (its namespaces, cgroup, user and capabilities)
        and return (exit status, the last 4 KiB of its output: runc's own error, with its status, when
        it could not run it). After `timeout` seconds the command is killed (not just runc: it
        would live on in the container) and TimeoutError raised."""
        # the pid file outside runc's --root: every directory there is taken for a container
        with tempfile.TemporaryDirectory(prefix="packyard-exec-") as scratch, \
                tempfile.TemporaryFile() as out:
            pid_file, runc_log = Path(scratch) / "pid", Path(scratch) / "runc.log"
            argv = self._argv("exec", "--pid-file", str(pid_file), cid, *command, log=runc_log)
            running = asyncio.ensure_future(run(argv, stdout=out, stderr=out))
            try:
                done, _ = await asyncio.wait({running}, timeout=timeout)
                if not done:
                    # the command first, so that runc (its parent) sees it end and reaps it: killed
                    # before it, runc would orphan it to the agent, whose unreaped zombie in the
                    # container's PID namespace keeps the container's init from ever exiting
                    if _kill_from(pid_file):
                        await asyncio.wait({running}, timeout=5.0)
                    raise TimeoutError(f"{command[0]} still running after {timeout:g}s")
                rc, _ = running.result()
            finally:
                running.cancel()                  # runc itself, if it has not ended: killed
                await asyncio.gather(running, return_exceptions=True)
            failed_to_run = _runc_message(runc_log, b"") if rc != 0 else ""
            if failed_to_run:
                return rc, failed_to_run
            out.seek(max(0, out.seek(0, os.SEEK_END) - 4096))
            return rc, out.read().decode(errors="replace")

    async def delete(self, cid: str) -> None:
        """`runc delete --force`: kill if running, remove runc's state and cgroups. Idempotent."""
        rc, stderr = await run(self._argv("delete", "--force", cid))
        text = stderr.decode(errors="replace").strip()
        if rc != 0 and "does not exist" not in text and "not exist" not in text:
            raise RuncError(f"runc delete {cid}: {text or f'exit status {rc}'}")


def _runc_message(runc_log: Path, stderr: bytes) -> str:
    """runc's error lines from its JSON log, else its stderr."""
    messages = []
    try:
        for line in runc_log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("level") in ("error", "fatal"):
                messages.append(str(entry.get("msg", "")).strip())
    except OSError:
        pass
    return "; ".join(dict.fromkeys(m for m in messages if m)) or stderr.decode(errors="replace").strip()


def _kill_from(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
        return True
    except (OSError, ValueError):
        return False                      # not started yet, or ended meanwhile


async def run(argv: list[str], *, stdout: Any = subprocess.DEVNULL,
              stderr: Any = None) -> tuple[int, bytes]:
    """Run argv to completion without blocking the loop; return (exit status, stderr) (stderr is
    empty when it was sent elsewhere)."""
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout,
                                    stderr=err if stderr is None else stderr, close_fds=True)
        except OSError as e:
            raise RuncError(f"cannot run {argv[0]}: {e.strerror}") from e
        try:
            await wait_pid_exit(proc.pid)
        except BaseException:
            proc.kill()                  # cancelled: do not leave it running unobserved
            raise
        finally:
            rc = proc.wait()
        err.seek(0)
        return rc, err.read()


async def wait_pid_exit(pid: int) -> None:
    """Until process `pid` has ended (it may stay a zombie until reaped)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        await wait_readable(fd)
    finally:
        os.close(fd)


async def wait_readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def ready() -> None:
        loop.remove_reader(fd)
        if not done.done():
            done.set_result(None)

    loop.add_reader(fd, ready)
    try:
        await done
    finally:
        loop.remove_reader(fd)
