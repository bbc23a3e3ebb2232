"""libvirt's event loop, run once per process in a daemon thread.

libvirt-python delivers domain events (a domain stopped, and why) only to connections opened after
`virEventRegisterDefaultImpl()`, and only while something runs `virEventRunDefaultImpl()`. asyncio
has no place for that loop, so a thread runs it and callbacks hop onto the asyncio loop with
`call_soon_threadsafe`. libvirt's default error handler prints every error to stderr, including
the ones we expect (a domain that is gone): it is replaced by a silent one; errors still raise.
"""
from __future__ import annotations

import threading

import libvirt

_lock = threading.Lock()
_started = False


def ensure_event_loop() -> None:
    """Register libvirt's default event implementation and start the thread running it. Idempotent.
    Must run before the connections whose events are wanted are opened."""
    global _started
    with _lock:
        if _started:
            return
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        libvirt.virEventRegisterDefaultImpl()
        threading.Thread(target=_run, name="libvirt-events", daemon=True).start()
        _started = True


def _run() -> None:
    while True:
        libvirt.virEventRunDefaultImpl()
