"""Reaping what a cut-off `runc exec` leaves behind.

A check's `runc exec` that times out before its command started (a loaded host) is killed half-way
through runc's setup. The `runc init` it had already forked into the container's PID namespace is
then orphaned to the agent (the containers' subreaper) and dies there as a zombie that nobody waits
for. A PID namespace's init cannot finish exiting while any process of its namespace is unreaped,
so such a zombie kept a stopped container "running" for ever (its pidfd never became readable).

Only zombies that are this process's children, inside another PID namespace, and not the init of
that namespace are reaped here, each by its own pid: a container's init (pid 1 of its namespace) is
the driver's to reap through its pidfd, and the agent's own subprocesses (runc, skopeo, s6-log) live
in the host's PID namespace, where asyncio waits for them."""
from __future__ import annotations

import contextlib
import os


def _fields(pid: str) -> dict[str, str]:
    out: dict[str, str] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("State", "PPid", "NSpid"):
                out[key] = value.strip()
    return out


def exec_leftovers() -> list[int]:
    """Pids of this process's zombie children that are not the init of their PID namespace."""
    me, found = str(os.getpid()), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            f = _fields(entry)
        except OSError:                 # gone meanwhile
            continue
        nspids = f.get("NSpid", "").split()
        if f.get("PPid") == me and f.get("State", "").startswith("Z") and len(nspids) > 1 and nspids[-1] != "1":
            found.append(int(entry))
    return found


def reap_exec_leftovers() -> int:
    """Wait for each such zombie (never blocking); how many were reaped."""
    reaped = 0
    for pid in exec_leftovers():
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                reaped += 1
    return reaped
