"""Cgroup v1 and v2 behind one small API: create an instance's cgroup with its limits, read its usage,
kill what is in it, remove it.

The agent owns one subtree per node, `packyard/<node>/<instance>` below each hierarchy root (v1: one
root per controller mount, e.g. /sys/fs/cgroup/memory; v2: the cgroup2 mount). The relative path is
also what runc gets as `linux.cgroupsPath`, so runc joins the cgroups made here; the limits are
written here, not by runc.

Which version is in force is detected from /proc/self/mountinfo, never assumed. A hybrid host (v1
controllers plus a cgroup2 mount at /sys/fs/cgroup/unified holding no controllers) is v1 for limits;
`CgroupsV2(root=...)` can still be pointed at its unified mount.
"""
from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

CPU_PERIOD_US = 100_000
MIN_CPU_QUOTA_US = 1_000            # the kernel refuses smaller quotas
V2_CONTROLLERS = ("cpu", "memory", "pids")
V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids")
MOUNTINFO = "/proc/self/mountinfo"


class CgroupError(Exception):
    """A cgroup could not be created, limited, read or removed."""


@dataclass(frozen=True)
class Limits:
    cpu_milli: int = 0                  # 0: no cpu quota
    memory_bytes: int = 0               # 0: no memory limit
    pids_max: int = 0                   # 0: no pids limit


@dataclass(frozen=True)
class Usage:
    cpu_seconds: float = 0.0
    memory_bytes: int = 0
    oom_kills: int = 0


def instance_path(node: str, instance: str) -> str:
    """The cgroup of an instance, relative to each hierarchy root (no leading slash)."""
    for part in (node, instance):
        if not part or "/" in part or part in (".", ".."):
            raise CgroupError(f"'{part}' cannot be a cgroup name")
    return f"packyard/{node}/{instance}"


def node_path(node: str) -> str:
    return instance_path(node, "x").rsplit("/", 1)[0]


@dataclass(frozen=True)
class Mount:
    path: str
    fstype: str                          # cgroup | cgroup2
    controllers: frozenset[str]          # v1: from the super options (cpu, name=systemd, ...)


def cgroup_mounts(mountinfo: str = MOUNTINFO) -> list[Mount]:
    """Every cgroup (v1) and cgroup2 mount of this mount namespace."""
    mounts = []
    with open(mountinfo) as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            fstype, super_opts = fields[sep + 1], fields[sep + 3]
            if fstype not in ("cgroup", "cgroup2"):
                continue
            opts = frozenset(super_opts.split(",")) - {"rw", "ro"} if fstype == "cgroup" else frozenset()
            mounts.append(Mount(_unescape(fields[4]), fstype, opts))
    return mounts


def _unescape(path: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    return path.encode().decode("unicode_escape") if "\\" in path else path


def detect(root: str = "/sys/fs/cgroup", mountinfo: str = MOUNTINFO) -> Cgroups:
    """The cgroup API for this host: v2 when `root` is itself a cgroup2 mount, v1 when the v1
    controllers we need are mounted, else CgroupError."""
    mounts = cgroup_mounts(mountinfo)
    root = root.rstrip("/") or "/"
    if any(m.fstype == "cgroup2" and m.path == root for m in mounts):
        return CgroupsV2(root)
    v1 = [m for m in mounts if m.fstype == "cgroup"]
    missing = [c for c in V1_CONTROLLERS if not any(c in m.controllers for m in v1)]
    if v1 and not missing:
        return CgroupsV1(mounts)
    if v1:
        raise CgroupError(f"cgroup v1 controllers not mounted: {', '.join(missing)}")
    raise CgroupError(f"no cgroup hierarchy found at {root}")


class Cgroups:
    """What the agent asks of cgroups. Paths are relative (see instance_path)."""
    version: str

    def create(self, rel: str, limits: Limits | None = None) -> None:
        raise NotImplementedError

    def usage(self, rel: str) -> Usage:
        raise NotImplementedError

    def oom_kills(self, rel: str) -> int:
        raise NotImplementedError

    def pids(self, rel: str) -> list[int]:
        raise NotImplementedError

    def add(self, rel: str, pid: int) -> None:
        raise NotImplementedError

    def kill(self, rel: str) -> None:
        """SIGKILL everything in the cgroup (does not wait)."""
        raise NotImplementedError

    def remove(self, rel: str) -> None:
        """Remove the cgroup in every hierarchy, sub-cgroups (e.g. made by runc) first. Idempotent.
        Anything still inside is killed first."""
        raise NotImplementedError

    def roots(self) -> list[str]:
        """Every hierarchy root this host has; `remove` looks below all of them."""
        raise NotImplementedError

    def remove_node(self, node: str) -> None:
        """Remove the `packyard/<node>` parents (on agent shutdown) where they are empty. The shared
        `packyard` directory stays: other agents on this host may be creating their nodes in it."""
        for root in self.roots():
            path = os.path.join(root, node_path(node))
            try:
                os.rmdir(path)
            except OSError as e:
                if e.errno not in (errno.ENOENT, errno.EBUSY, errno.ENOTEMPTY):
                    raise CgroupError(f"cannot remove {path}: {e.strerror}") from e

    # helpers shared by both versions
    def _remove_tree(self, path: str) -> None:
        """rmdir `path` bottom-up; kill and retry briefly while tasks are still leaving."""
        if not os.path.isdir(path):
            return
        for dirpath, _dirs, _files in sorted(os.walk(path), key=lambda w: -w[0].count("/")):
            for attempt in range(50):
                try:
                    os.rmdir(dirpath)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY or attempt == 49:
                        raise CgroupError(f"cannot remove cgroup {dirpath}: {e.strerror}") from e
                    _kill_pids(_read_pids(os.path.join(dirpath, "cgroup.procs")))
                    time.sleep(0.01)


class CgroupsV1(Cgroups):
    version = "v1"

    def __init__(self, mounts: list[Mount] | None = None):
        mounts = cgroup_mounts() if mounts is None else mounts
        self.mounts = mounts
        self.by_controller: dict[str, str] = {}
        for m in mounts:
            for c in m.controllers if m.fstype == "cgroup" else ():
                self.by_controller.setdefault(c, m.path)
        missing = [c for c in V1_CONTROLLERS if c not in self.by_controller]
        if missing:
            raise CgroupError(f"cgroup v1 controllers not mounted: {', '.join(missing)}")

    def _dir(self, controller: str, rel: str) -> str:
        return os.path.join(self.by_controller[controller], rel)

    def roots(self) -> list[str]:
        return [m.path for m in self.mounts]

    def create(self, rel: str, limits: Limits | None = None) -> None:
        try:
            for root in {self.by_controller[c] for c in V1_CONTROLLERS}:
                os.makedirs(os.path.join(root, rel), exist_ok=True)
        except OSError as e:
            raise CgroupError(f"cannot create cgroup {rel}: {e.strerror}") from e
        if limits is None:
            return
        if limits.cpu_milli:
            cpu = self._dir("cpu", rel)
            _write(cpu, "cpu.cfs_period_us", CPU_PERIOD_US)
            _write(cpu, "cpu.cfs_quota_us", _quota_us(limits.cpu_milli))
        if limits.memory_bytes:
            mem = self._dir("memory", rel)
            _write(mem, "memory.limit_in_bytes", limits.memory_bytes)
            # with swap accounting, also cap memory+swap so the limit cannot be escaped into swap
            if os.path.exists(os.path.join(mem, "memory.memsw.limit_in_bytes")):
                _write(mem, "memory.memsw.limit_in_bytes", limits.memory_bytes)
        if limits.pids_max:
            _write(self._dir("pids", rel), "pids.max", limits.pids_max)

    def usage(self, rel: str) -> Usage:
        return Usage(cpu_seconds=int(_read(self._dir("cpuacct", rel), "cpuacct.usage")) / 1e9,
                     memory_bytes=int(_read(self._dir("memory", rel), "memory.usage_in_bytes")),
                     oom_kills=self.oom_kills(rel))

    def oom_kills(self, rel: str) -> int:
        return _keyed(_read(self._dir("memory", rel), "memory.oom_control")).get("oom_kill", 0)

    def pids(self, rel: str) -> list[int]:
        return _read_pids(os.path.join(self._dir("memory", rel), "cgroup.procs"))

    def add(self, rel: str, pid: int) -> None:
        for root in {self.by_controller[c] for c in V1_CONTROLLERS}:
            _write(os.path.join(root, rel), "cgroup.procs", pid)

    def kill(self, rel: str) -> None:
        _kill_pids(self.pids(rel) if os.path.isdir(self._dir("memory", rel)) else [])

    def remove(self, rel: str) -> None:
        # runc joins every hierarchy it knows (devices, freezer, blkio, name=systemd, the hybrid
        # unified mount...), creating `rel` there too: look below every cgroup mount.
        for root in self.roots():
            self._remove_tree(os.path.join(root, rel))


class CgroupsV2(Cgroups):
    version = "v2"

    def __init__(self, root: str = "/sys/fs/cgroup"):
        self.root = root.rstrip("/") or "/"
        if not os.path.exists(os.path.join(self.root, "cgroup.procs")):
            raise CgroupError(f"{self.root} is not a cgroup2 hierarchy")

    def roots(self) -> list[str]:
        return [self.root]

    def create(self, rel: str, limits: Limits | None = None) -> None:
        # Each ancestor must delegate the controllers to its children (subtree_control) before a
        # child can use them. Only the controllers the parent has can be enabled.
        parent = self.root
        try:
            for part in rel.split("/"):
                _enable_controllers(parent)
                parent = os.path.join(parent, part)
                os.makedirs(parent, exist_ok=True)
        except OSError as e:
            raise CgroupError(f"cannot create cgroup {rel}: {e.strerror}") from e
        if limits is None:
            return
        path = os.path.join(self.root, rel)
        if limits.cpu_milli:
            _write(path, "cpu.max", f"{_quota_us(limits.cpu_milli)} {CPU_PERIOD_US}")
        if limits.memory_bytes:
            _write(path, "memory.max", limits.memory_bytes)
            if os.path.exists(os.path.join(path, "memory.swap.max")):
                _write(path, "memory.swap.max", 0)
        if limits.pids_max:
            _write(path, "pids.max", limits.pids_max)

    def available(self, rel: str = "") -> set[str]:
        """Controllers usable by `rel`'s children (its cgroup.controllers)."""
        return set(_read(os.path.join(self.root, rel), "cgroup.controllers").split())

    def usage(self, rel: str) -> Usage:
        path = os.path.join(self.root, rel)
        cpu = _keyed(_read(path, "cpu.stat")).get("usage_usec", 0) / 1e6
        memory = int(_read(path, "memory.current")) if os.path.exists(
            os.path.join(path, "memory.current")) else 0
        return Usage(cpu_seconds=cpu, memory_bytes=memory, oom_kills=self.oom_kills(rel))

    def oom_kills(self, rel: str) -> int:
        path = os.path.join(self.root, rel)
        if not os.path.exists(os.path.join(path, "memory.events")):
            if not os.path.isdir(path):
                raise CgroupError(f"no cgroup {path}")
            return 0                    # no memory controller here: nothing can be OOM-killed by it
        return _keyed(_read(path, "memory.events")).get("oom_kill", 0)

    def pids(self, rel: str) -> list[int]:
        return _read_pids(os.path.join(self.root, rel, "cgroup.procs"))

    def add(self, rel: str, pid: int) -> None:
        _write(os.path.join(self.root, rel), "cgroup.procs", pid)

    def kill(self, rel: str) -> None:
        path = os.path.join(self.root, rel)
        if not os.path.isdir(path):
            return
        try:
            _write(path, "cgroup.kill", 1)        # kernel >= 5.14: kills the whole subtree at once
        except CgroupError:
            _kill_pids(self.pids(rel))

    def remove(self, rel: str) -> None:
        self._remove_tree(os.path.join(self.root, rel))


def _enable_controllers(path: str) -> None:
    have = set(_read(path, "cgroup.controllers").split())
    enabled = set(_read(path, "cgroup.subtree_control").split())
    wanted = [c for c in V2_CONTROLLERS if c in have and c not in enabled]
    if wanted:
        _write(path, "cgroup.subtree_control", " ".join("+" + c for c in wanted))


def _quota_us(cpu_milli: int) -> int:
    return max(MIN_CPU_QUOTA_US, cpu_milli * CPU_PERIOD_US // 1000)


def _read(directory: str, name: str) -> str:
    path = os.path.join(directory, name)
    try:
        return Path(path).read_text()
    except OSError as e:
        raise CgroupError(f"cannot read {path}: {e.strerror}") from e


def _write(directory: str, name: str, value: object) -> None:
    path = os.path.join(directory, name)
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, str(value).encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise CgroupError(f"cannot write {value} to {path}: {e.strerror}") from e


def _keyed(text: str) -> dict[str, int]:
    """`key value` lines (cpu.stat, memory.events, memory.oom_control) as a dict of ints."""
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def _read_pids(path: str) -> list[int]:
    try:
        return [int(p) for p in Path(path).read_text().split()]
    except FileNotFoundError:
        return []
    except OSError as e:
        raise CgroupError(f"cannot read {path}: {e.strerror}") from e


def _kill_pids(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
