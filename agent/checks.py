"""Health checks (issue 13): probe an instance as its group's `check` says, count the failures in a
row, and say when it is to be restarted. The InstanceManager runs one Checker per running instance
and applies what it reports (the health in etcd, the kill that leads to a restart in place).

- `exec`: the command inside the instance (the driver's `exec_in`: `runc exec` for containers);
  exit 0 passes.
- `tcp`: a connection to the instance's own address and the port is accepted.
- `http`: GET http://<address>:<port><path> answers 2xx or 3xx (redirects are not followed).
Each probe gives up after the check's timeout. Probes begin `grace` after the instance (re)started;
until the first one the health is unknown. `failures` failed probes in a row make it unhealthy.
"""
from __future__ import annotations

import asyncio
import http.client
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from packyard.durations import format_duration
from packyard.policies import CheckPolicy

UNKNOWN, PASSING, FAILING = "", "passing", "failing"      # "" is shown as `unknown`
MAX_DETAIL = 200


@dataclass(frozen=True)
class Outcome:
    ok: bool
    detail: str = ""               # why it failed: "connection refused", "HTTP 503", "exit code 1: ..."


@dataclass(frozen=True)
class Health:
    status: str = UNKNOWN
    failures: int = 0              # failed probes in a row
    detail: str = ""               # the last failure's

    def after(self, outcome: Outcome) -> Health:
        if outcome.ok:
            return Health(PASSING)
        return Health(FAILING, self.failures + 1, outcome.detail)


UNKNOWN_HEALTH = Health()     # before any probe (frozen: one for every instance)


def unhealthy(policy: CheckPolicy, health: Health) -> bool:
    return health.failures >= policy.failures


def failing_reason(policy: CheckPolicy, health: Health) -> str:
    """The running instance's reason while its check fails, not yet often enough to restart it."""
    return f"check {policy.describe()} failing ({health.failures} of {policy.failures}): {health.detail}"


def unhealthy_message(policy: CheckPolicy, health: Health) -> str:
    times = "once" if health.failures == 1 else f"{health.failures} times"
    return f"check {policy.describe()} failed {times}: {health.detail}"


ExecIn = Callable[[tuple[str, ...], float], Awaitable[tuple[int, str]]]


async def probe(policy: CheckPolicy, address: str, exec_in: ExecIn) -> Outcome:
    """One probe of the instance at `address` (its own IP; "" if it has none)."""
    if policy.type == "exec":
        try:
            code, output = await asyncio.wait_for(exec_in(policy.command, policy.timeout), policy.timeout + 1)
        except TimeoutError:
            return Outcome(False, f"timed out after {format_duration(policy.timeout)}")
        except Exception as e:                     # DriverError: the instance could not be entered
            return Outcome(False, _short(str(e) or repr(e)))
        if code == 0:
            return Outcome(True)
        last = output.strip().splitlines()[-1] if output.strip() else ""
        return Outcome(False, _short(f"exit code {code}" + (f": {last}" if last else "")))
    if not address:
        return Outcome(False, "the instance has no address")
    try:
        if policy.type == "tcp":
            return await asyncio.wait_for(_tcp(address, policy.port), policy.timeout)
        # http.client in a thread: the standard library's HTTP, its own timeout on connect and read
        return await asyncio.wait_for(asyncio.to_thread(_http, address, policy.port, policy.path,
                                                        policy.timeout), policy.timeout + 1)
    except TimeoutError:
        return Outcome(False, f"timed out after {format_duration(policy.timeout)}")
    except ConnectionRefusedError:
        return Outcome(False, "connection refused")
    except OSError as e:
        return Outcome(False, _short(e.strerror or str(e) or repr(e)))
    except http.client.HTTPException as e:
        return Outcome(False, _short(f"bad HTTP answer: {e!r}"))


async def _tcp(address: str, port: int) -> Outcome:
    _, writer = await asyncio.open_connection(address, port)
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass                                    # accepted, then reset: it was listening
    return Outcome(True)


def _http(address: str, port: int, path: str, timeout: float) -> Outcome:
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request("GET", path or "/", headers={"User-Agent": "packyard-check", "Connection": "close"})
        status = conn.getresponse().status       # a socket timeout raises TimeoutError
    finally:
        conn.close()
    return Outcome(True) if 200 <= status < 400 else Outcome(False, f"HTTP {status}")


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_DETAIL else text[:MAX_DETAIL - 1] + "…"


class Checker:
    """Probes one running instance until it is unhealthy (or cancelled when the instance ends).
    `changed(health)` is awaited whenever the health changes (another failure in a row included);
    `unhealthy(health)` once, when `failures` probes in a row failed; then the checker ends."""

    def __init__(self, policy: CheckPolicy, probe_once: Callable[[], Awaitable[Outcome]],
                 changed: Callable[[Health], Awaitable[None]],
                 on_unhealthy: Callable[[Health], Awaitable[None]]):
        self.policy = policy
        self.probe_once = probe_once
        self.changed = changed
        self.on_unhealthy = on_unhealthy
        self.health = Health()

    async def run(self) -> None:
        await asyncio.sleep(self.policy.grace)
        while True:
            began = time.monotonic()
            health = self.health.after(await self.probe_once())
            if health != self.health:
                self.health = health
                await self.changed(health)
            if unhealthy(self.policy, health):
                await self.on_unhealthy(health)
                return
            # probes start every interval (a slow probe does not stretch the period)
            await asyncio.sleep(max(0.0, self.policy.interval - (time.monotonic() - began)))
