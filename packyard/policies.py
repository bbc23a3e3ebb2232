"""The restart, reschedule and check policies in force for an instance, every field filled in
(packyard/lifecycle.py fills them from the spec and its defaults). Plain dataclasses: the agent
reads them without loading the spec parser.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RestartPolicy:
    attempts: int
    interval: float
    delay: float
    mode: str = "fail"

    def delay_before(self, attempt: int) -> float:
        """The wait before restart number `attempt` (1-based): delay, doubling each time, at most
        the interval (a wait longer than the window the attempts are counted in is no backoff)."""
        return min(self.delay * 2 ** max(0, attempt - 1), max(self.interval, self.delay))


@dataclass(frozen=True)
class ReschedulePolicy:
    attempts: int
    interval: float
    delay: float
    max_delay: float
    unlimited: bool

    def delay_before(self, attempt: int) -> float:
        return min(self.delay * 2 ** max(0, attempt - 1), max(self.max_delay, self.delay))


@dataclass(frozen=True)
class CheckPolicy:
    type: str
    command: tuple[str, ...] = ()
    port: int = 0
    path: str = ""
    interval: float = 10.0
    timeout: float = 2.0
    failures: int = 3
    grace: float = 10.0

    def describe(self) -> str:
        """How events name it: `http :8080/healthz`, `tcp :5432`, `exec pg_isready`."""
        if self.type == "exec":
            return f"exec {self.command[0] if self.command else ''}"
        return f"{self.type} :{self.port}{self.path}"


@dataclass(frozen=True)
class UpdatePolicy:
    """How a changed group is rolled out (issue 14): see packyard/update.py."""
    max_parallel: int = 1
    min_healthy_time: float = 10.0
    healthy_deadline: float = 300.0
    progress_deadline: float = 600.0
    auto_revert: bool = False
    canary: int = 0
    auto_promote: bool = False
