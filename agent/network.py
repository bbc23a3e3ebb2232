"""Per-host bridge and per-instance network namespaces, over rtnetlink (pyroute2's IPRoute).

    bridge pyb<hash(node)>  (gateway = first address of the subnet, in the agent's netns)
      └── veth pyv<hash(key)> ── eth0 in netns /var/run/netns/pyn-<hash(key)>  (next free address)

Several agents may share one machine and one network namespace, so every name is derived from the
node name or the instance key, never fixed. Interface names must fit in 15 characters: hashes.

Addresses are allocated as one file per address under `<state_dir>/network/addresses/` (created
with O_EXCL, holding the key), so allocations survive an agent restart without a shared index file.

The netns is created by unsharing a fresh, short-lived thread (not the caller's thread, not a fork:
the agent runs gRPC threads, and forking a threaded process is fragile) and bind-mounting that
thread's namespace at /var/run/netns/<name>; runc is then given that path. The same thread opens the
netlink socket (an IPRoute) used to configure eth0 inside the namespace: a netlink socket talks to
the namespace of the thread that opened it. All methods block for a few ms: call
them from a worker thread (asyncio.to_thread) in async code.
"""
from __future__ import annotations

import ctypes
import errno
import hashlib
import ipaddress
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pyroute2 import IPRoute, NetlinkError

NETNS_DIR = "/var/run/netns"
# Docker's defaults in a container's own network namespace: any user of the container may bind a port
# below 1024 and ping (ICMP datagram sockets), not only its root.
NETNS_SYSCTLS = {"net/ipv4/ip_unprivileged_port_start": "0", "net/ipv4/ping_group_range": "0 2147483647"}
CONTAINER_IFNAME = "eth0"
CLONE_NEWNET = 0x40000000
MS_BIND, MS_REC, MS_SHARED = 4096, 16384, 1 << 20
MNT_DETACH = 2
IFNAMSIZ = 15

T = TypeVar("T")
_libc = ctypes.CDLL(None, use_errno=True)
_netns_dir_ready = threading.Lock()
_netns_dir_shared = False


class NetworkError(Exception):
    """The bridge, a namespace or an address could not be set up or removed."""


def _hash(text: str, n: int) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:n]


def bridge_name(node: str) -> str:
    return "pyb" + _hash(node, 8)


def veth_name(key: str) -> str:
    return "pyv" + _hash(key, 10)


def netns_name(key: str) -> str:
    return "pyn-" + _hash(key, 16)


def netns_path(key: str) -> str:
    return os.path.join(NETNS_DIR, netns_name(key))


@dataclass(frozen=True)
class Attachment:
    netns: str                          # name under /var/run/netns
    netns_path: str                     # what runc gets as the network namespace path
    address: str
    veth: str


class AddressPool:
    """Addresses of `subnet` handed out by key; the first host address is the gateway (bridge)."""

    def __init__(self, subnet: str, directory: Path):
        self.subnet = ipaddress.ip_network(subnet)
        if self.subnet.version != 4 or self.subnet.prefixlen > 29:
            raise NetworkError(f"subnet {subnet}: need an IPv4 subnet of at least 8 addresses")
        self.gateway = str(next(self.subnet.hosts()))
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()       # attach/detach run in worker threads, concurrently
        self._by_key = {p.read_text(): p.name for p in self.dir.iterdir() if p.is_file()}

    def allocate(self, key: str) -> str:
        with self._lock:
            if key in self._by_key:
                return self._by_key[key]
            taken = set(self._by_key.values())
            for host in self.subnet.hosts():
                ip = str(host)
                if ip == self.gateway or ip in taken:
                    continue
                try:
                    fd = os.open(self.dir / ip, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    continue
                with os.fdopen(fd, "w") as f:
                    f.write(key)
                self._by_key[key] = ip
                return ip
        raise NetworkError(f"no free address left in {self.subnet}")

    def lookup(self, key: str) -> str | None:
        with self._lock:
            return self._by_key.get(key)

    def release(self, key: str) -> None:
        with self._lock:
            ip = self._by_key.pop(key, None)
            if ip is not None:
                (self.dir / ip).unlink(missing_ok=True)

    def in_use(self) -> dict[str, str]:
        with self._lock:
            return dict(self._by_key)


class HostNetwork:
    def __init__(self, bridge: str, subnet: str, state_dir: Path):
        if len(bridge) > IFNAMSIZ:
            raise NetworkError(f"bridge name '{bridge}' is longer than {IFNAMSIZ} characters")
        self.bridge = bridge
        self.pool = AddressPool(subnet, Path(state_dir) / "network" / "addresses")
        self.prefixlen = self.pool.subnet.prefixlen
        self.gateway = self.pool.gateway

    def setup(self) -> None:
        """Create the bridge with the gateway address and bring it up. Idempotent (agent restart)."""
        with _errors(f"bridge {self.bridge}"), IPRoute() as ipr:
            self._check_subnet_free(ipr)
            found = ipr.link_lookup(ifname=self.bridge)
            if not found:
                ipr.link("add", ifname=self.bridge, kind="bridge")
                found = ipr.link_lookup(ifname=self.bridge)
            index = found[0]
            if self.gateway not in {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(family=socket.AF_INET,
                                                                                    index=index)}:
                ipr.addr("add", index=index, address=self.gateway, prefixlen=self.prefixlen)
            ipr.link("set", index=index, state="up")

    def _check_subnet_free(self, ipr: IPRoute) -> None:
        # Another bridge (another agent) with an overlapping subnet would steal our routes.
        for a in ipr.get_addr(family=socket.AF_INET):
            net = ipaddress.ip_network(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}", strict=False)
            label = a.get_attr("IFA_LABEL")
            if net.overlaps(self.pool.subnet) and label != self.bridge:
                raise NetworkError(f"subnet {self.pool.subnet} overlaps {net} on {label}")

    def teardown(self) -> None:
        """Remove the bridge. Call when no instance is attached any more."""
        with _errors(f"bridge {self.bridge}"), IPRoute() as ipr:
            for index in ipr.link_lookup(ifname=self.bridge):
                ipr.link("del", index=index)

    def attach(self, key: str, join: str | None = None) -> Attachment:
        """A netns for `key` with eth0 on the bridge, an address, a default route and lo up.
        `join`: an existing network namespace to use (a container's, /proc/PID/ns/net, which runc
        made inside the container's user namespace), pinned at the same place; None: a new one."""
        ip = self.pool.allocate(key)
        att = Attachment(netns_name(key), netns_path(key), ip, veth_name(key))
        try:
            _in_fresh_thread(lambda a: self._attach(a, join), att)
        except BaseException:
            self.detach(key)
            raise
        return att

    def _attach(self, att: Attachment, join: str | None = None) -> None:
        # Runs in a thread of its own: it unshares (or joins) its network namespace half way through.
        with _errors(f"veth {att.veth}"), IPRoute() as host:
            bridge = host.link_lookup(ifname=self.bridge)
            if not bridge:
                raise NetworkError(f"bridge {self.bridge} does not exist (setup() not called?)")
            for index in host.link_lookup(ifname=att.veth):    # a leftover of a crashed attach
                host.link("del", index=index)
            _remove_netns(att.netns_path)
            if join is None:
                _create_netns_here(att.netns_path)
            else:
                _join_netns_here(join, att.netns_path)
            _set_sysctls(NETNS_SYSCTLS)
            # opened after unshare/setns: this socket talks to the instance's namespace
            with IPRoute() as ns:
                nsfd = os.open(att.netns_path, os.O_RDONLY)
                try:
                    host.link("add", ifname=att.veth, kind="veth", peer={"ifname": CONTAINER_IFNAME,
                                                                          "net_ns_fd": nsfd})
                finally:
                    os.close(nsfd)
                veth = host.link_lookup(ifname=att.veth)[0]
                host.link("set", index=veth, master=bridge[0], state="up")
                eth0 = ns.link_lookup(ifname=CONTAINER_IFNAME)[0]
                ns.addr("add", index=eth0, address=att.address, prefixlen=self.prefixlen)
                ns.link("set", index=eth0, state="up")
                ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
                ns.route("add", dst="0.0.0.0/0", gateway=self.gateway)

    def detach(self, key: str) -> None:
        """Remove the veth pair, the netns and the address of `key`. Idempotent."""
        with _errors(f"veth {veth_name(key)}"), IPRoute() as ipr:
            for index in ipr.link_lookup(ifname=veth_name(key)):
                ipr.link("del", index=index)
        _remove_netns(netns_path(key))
        self.pool.release(key)

    def attached(self, key: str) -> bool:
        return os.path.exists(netns_path(key)) and self.pool.lookup(key) is not None


def _in_fresh_thread(fn: Callable[[T], None], arg: T) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn(arg)
        except BaseException as e:  # noqa: B036 - re-raised in the caller's thread
            errors.append(e)

    t = threading.Thread(target=run, name="packyard-netns", daemon=True)
    t.start()
    t.join()
    if errors:
        raise errors[0]


def _ensure_netns_dir() -> None:
    """Make NETNS_DIR a shared mount point, as iproute2 does, so that unmounting a namespace here
    also unmounts the copies that mount namespaces created meanwhile (containers) hold; otherwise
    those copies would keep the namespace alive."""
    global _netns_dir_shared
    with _netns_dir_ready:
        if _netns_dir_shared:
            return
        os.makedirs(NETNS_DIR, exist_ok=True)
        bound = False
        while _libc.mount(b"none", NETNS_DIR.encode(), b"none", MS_SHARED | MS_REC, None) != 0:
            err = ctypes.get_errno()
            if err != errno.EINVAL or bound:
                raise NetworkError(f"cannot make {NETNS_DIR} a shared mount: {os.strerror(err)}")
            if _libc.mount(NETNS_DIR.encode(), NETNS_DIR.encode(), b"none", MS_BIND | MS_REC, None) != 0:
                err = ctypes.get_errno()
                raise NetworkError(f"cannot bind-mount {NETNS_DIR}: {os.strerror(err)}")
            bound = True
        _netns_dir_shared = True


def _create_netns_here(path: str) -> None:
    """Move the calling thread into a new network namespace and pin it at `path`."""
    _ensure_netns_dir()
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    if _libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        os.unlink(path)
        raise NetworkError(f"cannot create a network namespace: {os.strerror(err)}")
    if _libc.mount(b"/proc/thread-self/ns/net", path.encode(), b"none", MS_BIND, None) != 0:
        err = ctypes.get_errno()
        os.unlink(path)
        raise NetworkError(f"cannot bind-mount the network namespace at {path}: {os.strerror(err)}")


def _join_netns_here(source: str, path: str) -> None:
    """Pin the network namespace at `source` at `path` and move the calling thread into it."""
    _ensure_netns_dir()
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    if _libc.mount(source.encode(), path.encode(), b"none", MS_BIND, None) != 0:
        err = ctypes.get_errno()
        os.unlink(path)
        raise NetworkError(f"cannot bind-mount the network namespace {source} at {path}: {os.strerror(err)}")
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise NetworkError(f"cannot enter the network namespace {source}: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)


def _set_sysctls(values: dict[str, str]) -> None:
    """Write network sysctls of the calling thread's network namespace (/proc/sys/net is the
    namespace of the thread that opens it)."""
    for name, value in values.items():
        with open(f"/proc/sys/{name}", "w") as f:
            f.write(value)


def _remove_netns(path: str) -> None:
    if not os.path.exists(path):
        return
    if _libc.umount2(path.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):       # EINVAL: not mounted (half-created)
            raise NetworkError(f"cannot unmount {path}: {os.strerror(err)}")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise NetworkError(f"cannot remove {path}: {e.strerror}") from e


class _errors:
    """Translate netlink/OS errors into NetworkError naming what was being done."""

    def __init__(self, what: str):
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, tb) -> bool:
        if isinstance(exc, NetlinkError):               # the kernel refused: errno and its text
            raise NetworkError(f"{self.what}: {os.strerror(exc.code)}") from exc
        if isinstance(exc, OSError):
            raise NetworkError(f"{self.what}: {exc.strerror or exc}") from exc
        return False
