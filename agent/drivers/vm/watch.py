"""How a running domain ended: seen twice, on purpose.

A pidfd on the QEMU process (registered with the asyncio loop) says *that* it ended, without
depending on libvirt (whose connection may be gone: libvirtd restarted). libvirt's lifecycle event
(events.py runs libvirt's event loop in a thread) says *why*: the guest powered off, the domain was
destroyed, QEMU failed. libvirt emits STOPPED only once it has cleaned up after QEMU, 1.5-2 s after
the pidfd fires here; when it does not come within REASON_WAIT, the end is reported without reason.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import libvirt

from agent.drivers.base import ExitResult

REASON_WAIT = 10.0
_QEMU_MESSAGE = re.compile(r"qemu-system-\w+: ")     # "…Z qemu-system-x86_64: <what went wrong>"

STOPPED_REASONS = {
    libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN: (0, "guest powered off"),
    libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED: (None, "domain destroyed"),
    libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED: (None, "the guest crashed"),
    libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED: (None, "QEMU died: the emulator quit unexpectedly"),
    libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED: (None, "domain migrated away"),
    libvirt.VIR_DOMAIN_EVENT_STOPPED_SAVED: (None, "domain saved"),
}


@dataclass
class Watched:
    """A running domain whose end is awaited."""
    domain: str
    pid: int
    pidfd: int
    exited: asyncio.Future[ExitResult]
    timer: asyncio.TimerHandle | None = None


class Watcher:
    """The running domains of one driver object, by instance id; all methods on the asyncio loop
    except on_libvirt_event (libvirt's event thread)."""

    def __init__(self) -> None:
        self._by_id: dict[str, Watched] = {}
        self._by_domain: dict[str, str] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self, instance_id: str) -> Watched | None:
        return self._by_id.get(instance_id)

    def watch(self, instance_id: str, domain: str, pid: int) -> Watched:
        """Follow QEMU `pid` of `domain`; raises OSError when the process is already gone."""
        loop = self._loop = asyncio.get_running_loop()
        pidfd = os.pidfd_open(pid)
        w = Watched(domain, pid, pidfd, loop.create_future())
        self._by_id[instance_id] = w
        self._by_domain[domain] = instance_id
        loop.add_reader(pidfd, self._on_pid_exit, w)
        return w

    def forget(self, instance_id: str) -> None:
        w = self._by_id.pop(instance_id, None)
        if w is not None:
            self._by_domain.pop(w.domain, None)
            self._unwatch(w)

    def close(self) -> None:
        for w in self._by_id.values():
            self._unwatch(w)
        self._by_id.clear()
        self._by_domain.clear()

    def on_libvirt_event(self, _conn, domain, event: int, detail: int, _opaque) -> None:
        """libvirt's lifecycle callback (its event thread): hop onto the asyncio loop."""
        if event != libvirt.VIR_DOMAIN_EVENT_STOPPED or self._loop is None:
            return
        with contextlib.suppress(RuntimeError):          # the loop is closed: nobody listens
            self._loop.call_soon_threadsafe(self._stopped, domain.name(), detail)

    def _stopped(self, domain: str, detail: int) -> None:
        iid = self._by_domain.get(domain)
        w = self._by_id.get(iid) if iid else None
        if w is None:
            return
        code, reason = STOPPED_REASONS.get(detail, (None, f"domain stopped (detail {detail})"))
        if detail == libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED:
            reason += qemu_log_hint(domain)
        self._resolve(w, ExitResult(code, reason=reason))

    def _on_pid_exit(self, w: Watched) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(w.pidfd)
        # QEMU daemonizes; when libvirtd descends from a child subreaper (the agent makes itself one
        # for containers; a test process that started libvirtd), QEMU is re-parented to it, and its
        # zombie would keep libvirt waiting ~40 s for it to go. Reap it if it is ours.
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitid(os.P_PIDFD, w.pidfd, os.WEXITED | os.WNOHANG)
        if not w.exited.done():
            w.timer = loop.call_later(REASON_WAIT, self._resolve, w, ExitResult(
                None, reason=f"QEMU (pid {w.pid}) ended; libvirt gave no reason"))

    def _resolve(self, w: Watched, result: ExitResult) -> None:
        if w.exited.done():
            return
        self._release(w)
        w.exited.set_result(result)

    def _unwatch(self, w: Watched) -> None:
        if not w.exited.done():
            self._release(w)
            w.exited.cancel()

    def _release(self, w: Watched) -> None:
        if w.timer is not None:
            w.timer.cancel()
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(w.pidfd)
        with contextlib.suppress(OSError):
            os.close(w.pidfd)


def qemu_log_hint(domain: str) -> str:
    """The last line QEMU itself wrote to libvirt's per-domain log (e.g. an assertion), if any."""
    try:
        lines = Path(f"/var/log/libvirt/qemu/{domain}.log").read_text(errors="replace").splitlines()
    except OSError:
        return ""
    own = [line for line in lines[-20:] if _QEMU_MESSAGE.search(line)]
    return f" ({own[-1].strip()[:200]})" if own else ""
