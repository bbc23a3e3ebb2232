from __future__ import annotations

import asyncio
import time
from pathlib import Path

from agent.drivers.base import DriverError, ExitResult, Handle, InstanceSpec, RestartableError, Stats


class FakeDriver:
    def __init__(self, name: str, state_dir: Path, start_delay: float = 0.0, write_logs: bool = True):
        self.name = name
        self.logs = Path(state_dir) / "logs"
        self.start_delay = start_delay
        # simulated hosts run 100,000 instances: a file each would cost more than the rest
        self.write_logs = write_logs
        self._ends: dict[str, asyncio.Future] = {}
        self._refused: dict[str, list[DriverError]] = {}   # the next starts' failures, in order
        self.started: list[str] = []
        self.discarded: list[str] = []     # starts cut off by an agent's end, cleaned before made again
        self.exec_results: dict[str, tuple[int, str]] = {}

    async def fingerprint(self) -> dict[str, str]:
        return {f"driver.{self.name}": "ok"}

    async def start(self, spec: InstanceSpec) -> Handle:
        if self.start_delay:
            await asyncio.sleep(self.start_delay)
        if self._refused.get(spec.id):
            raise self._refused[spec.id].pop(0)
        if self.write_logs:
            self.logs.mkdir(parents=True, exist_ok=True)
            (self.logs / f"{spec.id}.log").write_text(f"fake {self.name} {spec.id} started\n")
        self._ends[spec.id] = asyncio.get_running_loop().create_future()
        self.started.append(spec.id)
        return Handle(id=spec.id, driver=self.name, data={"started": time.time()})

    async def wait(self, handle: Handle) -> ExitResult:
        fut = self._ends.get(handle.id)
        if fut is None:
            return ExitResult(exit_code=None, reason="unknown instance")
        return await asyncio.shield(fut)

    async def stop(self, handle: Handle, grace_seconds: float) -> None:
        fut = self._ends.get(handle.id)
        if fut is not None and not fut.done():
            fut.set_result(ExitResult(exit_code=143, reason="killed by signal 15"))

    def refuse(self, instance_id: str, reason: str, times: int = 1, restartable: bool = False) -> None:
        """Test hook: make the next `times` starts of an instance fail with DriverError(reason)
        (RestartableError: a failed pull, say)."""
        error = RestartableError if restartable else DriverError
        self._refused[instance_id] = [error(reason) for _ in range(times)]

    def exit(self, instance_id: str, code: int, oom: bool = False) -> None:
        """Test hook: make an instance end as if its process had exited."""
        reason = "OOMKilled" if oom else f"exit status {code}"
        self._ends[instance_id].set_result(ExitResult(exit_code=code, oom_killed=oom, reason=reason))

    async def discard(self, spec: InstanceSpec) -> None:
        self.discarded.append(spec.id)
        self._ends.pop(spec.id, None)

    async def destroy(self, handle: Handle) -> None:
        self._ends.pop(handle.id, None)

    async def recover(self, handle: Handle) -> bool:
        # nothing survives the process that "ran" it
        return handle.id in self._ends

    async def stats(self, handle: Handle) -> Stats:
        return Stats()

    def log_path(self, handle: Handle) -> Path:
        return self.log_path_for(handle.id)

    def log_path_for(self, instance_id: str) -> Path:
        return self.logs / f"{instance_id}.log"

    def address(self, handle: Handle) -> str:
        return ""

    async def exec_in(self, handle: Handle, command: tuple[str, ...], timeout: float) -> tuple[int, str]:
        """Test hook: `exec_results[id]` is what the command answers (default: exit 0)."""
        if handle.id not in self._ends:
            raise DriverError(f"{handle.id} is not running")
        return self.exec_results.get(handle.id, (0, ""))

    async def shutdown(self) -> None:
        pass
