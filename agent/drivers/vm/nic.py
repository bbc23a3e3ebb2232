"""A VM's NIC on the host's bridge, also when the agent and libvirtd live in different network
namespaces.

The bridge (agent/network.py, `pyb<hash(node)>`) lives in the agent's network namespace. libvirtd
and QEMU run in theirs (the root namespace); when both are the same (production), the NIC is a
plain `<interface type='bridge'>`. When they differ (several agents side by side on one machine,
each in its own namespace, see ctl/local.py), libvirt cannot see the bridge, so:

  1. before the domain starts, the agent creates a persistent tap `pyt<hash(key)>` in libvirtd's
     namespace (`nsenter --net=/proc/<libvirtd pid>/ns/net ip tuntap add ...`);
  2. the domain gets `<interface type='ethernet'><target dev='pyt…' managed='no'/>`: libvirt opens
     that tap and hands its fd to QEMU;
  3. once the domain runs, the agent moves the tap into its own namespace and enslaves it to the
     bridge. A tap keeps working when moved while QEMU holds its fd (measured: guest reachable
     from the bridge's namespace).

The tap is persistent (managed='no': libvirt neither creates nor deletes it), so `remove` deletes
it, wherever it is. Blocking calls (subprocess, netlink): run them in a thread.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from pyroute2 import IPRoute, NetlinkError

LIBVIRTD_PIDFILES = ("/run/libvirtd.pid", "/var/run/libvirtd.pid", "/run/libvirt/virtqemud.pid",
                     "/run/virtqemud.pid")


class NicError(Exception):
    """The tap could not be created, moved or removed."""


def tap_name(key: str) -> str:
    return "pyt" + hashlib.sha1(key.encode()).hexdigest()[:10]


def libvirtd_pid() -> int | None:
    for p in LIBVIRTD_PIDFILES:
        try:
            pid = int(Path(p).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if os.path.exists(f"/proc/{pid}"):
            return pid
    return None


def _netns_id(pid: int | str) -> tuple[int, int]:
    st = os.stat(f"/proc/{pid}/ns/net")
    return st.st_dev, st.st_ino


def libvirtd_netns_differs(uri: str) -> int | None:
    """The pid of a local libvirtd whose network namespace differs from ours, else None (same
    namespace, or a remote libvirt we cannot see: plain bridge attachment then)."""
    if "://" in uri and uri.split("://", 1)[1].split("/", 1)[0]:
        return None                                  # qemu+ssh://host/system: not ours to see
    pid = libvirtd_pid() or 1                        # no pid file: assume it runs where init does
    try:
        return pid if _netns_id(pid) != _netns_id("self") else None
    except OSError:
        return None


def create_tap(tap: str, libvirtd: int) -> None:
    """A persistent tap in libvirtd's namespace (any leftover of the same name is replaced)."""
    ns = ["nsenter", f"--net=/proc/{libvirtd}/ns/net", "ip"]
    subprocess.run([*ns, "link", "del", tap], capture_output=True)
    _run([*ns, "tuntap", "add", "dev", tap, "mode", "tap"], f"cannot create tap {tap}")


def adopt_tap(tap: str, libvirtd: int, bridge: str) -> None:
    """Move the tap from libvirtd's namespace into ours and put it on the bridge, up."""
    with IPRoute() as ipr:
        if not ipr.link_lookup(ifname=tap):
            _run(["nsenter", f"--net=/proc/{libvirtd}/ns/net", "ip", "link", "set", "dev", tap,
                  "netns", str(os.getpid())], f"cannot move tap {tap} into the agent's namespace")
        try:
            index = ipr.link_lookup(ifname=tap)[0]
            master = ipr.link_lookup(ifname=bridge)
            if not master:
                raise NicError(f"bridge {bridge} does not exist")
            ipr.link("set", index=index, master=master[0], state="up")
        except (NetlinkError, IndexError) as e:
            raise NicError(f"cannot put tap {tap} on bridge {bridge}: {e}") from e


def remove_tap(tap: str, libvirtd: int | None) -> None:
    """Delete the tap in our namespace and, if it never moved, in libvirtd's. Idempotent."""
    try:
        with IPRoute() as ipr:
            for index in ipr.link_lookup(ifname=tap):
                ipr.link("del", index=index)
    except NetlinkError as e:
        raise NicError(f"cannot remove tap {tap}: {e}") from e
    if libvirtd:
        subprocess.run(["nsenter", f"--net=/proc/{libvirtd}/ns/net", "ip", "link", "del", tap],
                       capture_output=True)


def _run(cmd: list[str], what: str) -> None:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise NicError(f"{what}: {p.stderr.strip() or p.returncode}")
