"""The agent's instances: start them through their kind's driver, follow them to their end, stop
them, and reattach to them after an agent restart. Each handle is kept in a HandleStore (files in the
state dir) before the instance is reported running, so a restart can always find what it started.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

from agent.drivers.base import Driver, DriverError, ExitResult, Handle, InstanceSpec
from agent.handles import FileHandleStore, HandleStore
from agent.reporter import Reporter
from packyard.records import EXITED, FAILED, RUNNING, STARTING, STOPPED, TERMINAL, StateRecord

log = logging.getLogger(__name__)


@dataclass
class Tracked:
    spec: InstanceSpec
    handle: Handle | None = None
    stopping: bool = False
    grace: float = 10.0
    task: asyncio.Task | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)


def classify(result: ExitResult, stopping: bool) -> StateRecord:
    """How an instance ended → the state users see."""
    if stopping:
        return StateRecord(id="", state=STOPPED, exit_code=result.exit_code, reason="")
    if result.oom_killed:
        return StateRecord(id="", state=FAILED, exit_code=result.exit_code, reason="OOMKilled")
    if result.exit_code == 0:
        return StateRecord(id="", state=EXITED, exit_code=0, reason="")
    return StateRecord(id="", state=FAILED, exit_code=result.exit_code,
                       reason=result.reason or "ended while the agent was down")


class InstanceManager:
    def __init__(self, node: str, state_dir: Path, drivers: dict[str, Driver], reporter: Reporter,
                 store: HandleStore | None = None, instant: bool = False):
        """`store`: where handles are kept for a restarted agent (default: files in
        <state_dir>/handles). `instant`: the drivers start instances at once (FakeDriver on simulated
        hosts), so start() starts them before it returns and confirms each with its outcome,
        `running`, instead of `starting` then `running`: one state write per instance, as a real
        agent whose instance started before its `starting` report went out would coalesce them."""
        self.node = node
        self.drivers = drivers
        self.reporter = reporter
        self.store: HandleStore = store if store is not None else FileHandleStore(Path(state_dir) / "handles")
        self.instant = instant
        self.logs_dir = Path(state_dir) / "logs"
        self.instances: dict[str, Tracked] = {}

    def _forget(self, instance_id: str) -> None:
        self.store.forget(instance_id)
        self.instances.pop(instance_id, None)

    # --- start ------------------------------------------------------------------------------
    async def start(self, specs: list[InstanceSpec]) -> list[tuple[str, bool, str]]:
        """Accept instances (idempotent: a known id is accepted again) and start them in the
        background (`instant`: here). Their first state, `starting` (`instant`: the outcome), is in
        etcd before this returns: the scheduler's confirmation."""
        results, new, refused = self._accept(specs)
        if self.instant:
            await self._start_at_once(new, refused)
            return results
        await self.reporter.report(*[StateRecord(id=s.id, state=STARTING) for s in new], *refused)
        for spec in new:
            t = self.instances[spec.id]
            t.task = asyncio.get_running_loop().create_task(self._run(t))
        return results

    def _accept(self, specs: list[InstanceSpec]) -> tuple[list[tuple[str, bool, str]], list[InstanceSpec],
                                                          list[StateRecord]]:
        """Track the new specs: (id, accepted, error) for each, the new ones, the refused ones' states."""
        results, new = [], []
        for spec in specs:
            if spec.id in self.instances:
                results.append((spec.id, True, ""))
            elif spec.kind not in self.drivers:
                results.append((spec.id, False, f"no {spec.kind} driver on node {self.node}"))
            else:
                self.instances[spec.id] = Tracked(spec)
                new.append(spec)
                results.append((spec.id, True, ""))
        refused = [StateRecord(id=i, state=FAILED, reason=err) for i, ok, err in results if not ok]
        return results, new, refused

    async def _run(self, t: Tracked) -> None:
        started = await self._launch(t)
        if started.state == FAILED:
            await self._report_safely(started)
            return
        if not t.stopping:
            await self._report_safely(started)
        else:
            await self.drivers[t.spec.kind].stop(t.handle, t.grace)
        await self._follow(t)

    async def _start_at_once(self, new: list[InstanceSpec], refused: list[StateRecord]) -> None:
        """`instant` drivers: start each here, follow it, then confirm them all in one report."""
        outcomes = []
        loop = asyncio.get_running_loop()
        for spec in new:
            t = self.instances[spec.id]
            outcomes.append(await self._launch(t))
            if t.handle is not None:
                t.task = loop.create_task(self._follow(t))
                if t.stopping:                  # stopped while it started: nothing stopped it yet
                    loop.create_task(self._stop_one(t))
        await self.reporter.report(*outcomes, *refused)

    async def _launch(self, t: Tracked) -> StateRecord:
        """Start t through its driver and keep its handle: `running`, or `failed` with the reason
        (t forgotten then)."""
        driver = self.drivers[t.spec.kind]
        try:
            t.handle = await driver.start(t.spec)
        except Exception as e:
            reason = str(e) if isinstance(e, DriverError) else f"start failed: {e!r}"
            log.warning("instance %s failed to start: %s", t.spec.id, reason)
            self._forget(t.spec.id)
            return StateRecord(id=t.spec.id, state=FAILED, reason=reason)
        self.store.save(t.spec, t.handle)
        t.started.set()
        return StateRecord(id=t.spec.id, state=RUNNING, address=driver.address(t.handle))

    async def _follow(self, t: Tracked) -> None:
        driver = self.drivers[t.spec.kind]
        try:
            result = await driver.wait(t.handle)
        except Exception as e:
            result = ExitResult(exit_code=None, reason=f"lost track of it: {e!r}")
        ended = classify(result, t.stopping)
        ended.id = t.spec.id
        log.info("%s ended: %s %s", t.spec.id, ended.state, ended.reason)
        try:
            await driver.destroy(t.handle)
        except Exception as e:
            log.warning("cleaning up %s failed: %s", t.spec.id, e)
        self._forget(t.spec.id)
        await self._report_safely(ended)

    async def _report_safely(self, *states: StateRecord) -> None:
        # etcd may be briefly away; the state must still get there
        delay = 0.1
        while True:
            try:
                await self.reporter.report(*states)
                return
            except Exception as e:
                log.warning("reporting %s failed (%s); retrying", [s.id for s in states], e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # --- stop -------------------------------------------------------------------------------
    async def stop(self, ids: list[str], grace: float) -> list[str]:
        unknown = []
        for iid in ids:
            t = self.instances.get(iid)
            if t is None:
                unknown.append(iid)
                continue
            if t.stopping:
                continue
            t.stopping, t.grace = True, grace
            if t.handle is not None:
                asyncio.get_running_loop().create_task(self._stop_one(t))
        if unknown:
            # nothing of these runs here (finished, or never arrived): say so, so the scheduler converges
            current = await self.reporter.reported()
            done = [StateRecord(id=i, state=STOPPED) for i in unknown
                    if i not in current or current[i].state not in TERMINAL]
            if done:
                await self.reporter.report(*done)
        return ids

    async def _stop_one(self, t: Tracked) -> None:
        try:
            await self.drivers[t.spec.kind].stop(t.handle, t.grace)
        except Exception as e:
            log.warning("stopping %s failed: %s", t.spec.id, e)

    # --- recovery after a restart --------------------------------------------------------------
    async def recover(self) -> tuple[list[str], list[str]]:
        """Reattach to what the previous agent process started; report what died meanwhile."""
        adopted, dead = [], []
        for spec, handle in self.store.saved():
            driver = self.drivers.get(spec.kind)
            alive = False
            if driver is not None:
                try:
                    alive = await driver.recover(handle)
                except Exception as e:
                    log.warning("recovering %s failed: %s", spec.id, e)
            if alive:
                t = self.instances[spec.id] = Tracked(spec, handle)
                t.started.set()
                t.task = asyncio.get_running_loop().create_task(self._follow(t))
                adopted.append(spec.id)
                await self._report_safely(StateRecord(id=spec.id, state=RUNNING,
                                                      address=driver.address(handle)))
            else:
                if driver is not None:
                    try:
                        await driver.destroy(handle)
                    except Exception as e:
                        log.warning("cleaning up %s failed: %s", spec.id, e)
                self.store.forget(spec.id)
                dead.append(spec.id)
                await self._report_safely(StateRecord(
                    id=spec.id, state=FAILED, reason="ended while the agent was down"))
        # reported as alive in etcd, but this agent knows nothing of them (state dir lost)
        reported = await self.reporter.reported()
        orphans = [StateRecord(id=i, state=FAILED, reason="the agent lost track of it")
                   for i, s in reported.items()
                   if s.state not in TERMINAL and i not in self.instances and i not in dead]
        if orphans:
            await self._report_safely(*orphans)
        return adopted, dead

    def log_file(self, instance_id: str) -> Path:
        t = self.instances.get(instance_id)
        if t is not None and t.handle is not None:
            return self.drivers[t.spec.kind].log_path(t.handle)
        return self.logs_dir / f"{instance_id}.log"

    def is_active(self, instance_id: str) -> bool:
        return instance_id in self.instances

    async def shutdown(self) -> None:
        """Agent exit: leave instances running (a restart reattaches); stop following them."""
        for t in self.instances.values():
            if t.task:
                t.task.cancel()
        for driver in self.drivers.values():
            try:
                await driver.shutdown()
            except Exception as e:
                log.warning("driver %s shutdown: %s", driver.name, e)
