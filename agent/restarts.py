"""What the agent does when an instance ends (issue 13): restart it in place, or let it end, and
the event that says so. A pure function, like the scheduler's reconciler: the InstanceManager
applies its answer (persisted and reported before it is acted on).

- A batch instance that exits 0 is `complete`, never restarted.
- Any other end (a service's exit 0 included: a service is meant to run) is restarted after the
  policy's delay, doubling with each restart counted in the last `interval`, at most `attempts` of
  them; then `mode: fail` lets it fail (the scheduler may reschedule it; `failed` even after an
  exit 0) and `mode: delay` waits until the oldest restart leaves the interval.
- No policy (from a scheduler before issue 13), or a stop asked for: it ends as it always did.
- Killed because its health check failed (`cause`): a failure whatever its exit code (a batch
  instance that exits 0 on SIGTERM did not complete), restarted as any other; the check's message
  is what the event and the reason say.
A start that fails (a refused image, a missing driver) is not an end: nothing is restarted;
except a start failing for a reason that may pass (a registry image's pull: RestartableError),
which the manager passes here as an end with the failure as its `cause`, so the same policy
restarts it (issue 16: a pull failure goes through the restart policy, never a hang).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agent.drivers.base import ExitResult, InstanceSpec
from packyard.durations import format_duration
from packyard.records import COMPLETE, EXITED, FAILED, STARTING, STOPPED


@dataclass(frozen=True)
class AfterExit:
    state: str                         # STARTING while a restart waits; else how it ended
    reason: str                        # the state record's reason
    message: str                       # the event users see
    restart_in: float | None = None    # seconds until the restart; None: not restarted
    attempt: int = 0                   # which restart in the interval this is (1-based)


def classify(result: ExitResult, stopping: bool) -> tuple[str, str]:
    """How an end reads when nothing restarts it: (state, reason)."""
    if stopping:
        return STOPPED, ""
    if result.oom_killed:
        return FAILED, "OOMKilled"
    if result.exit_code == 0:
        return EXITED, ""
    return FAILED, result.reason or "ended while the agent was down"


def after_exit(spec: InstanceSpec, result: ExitResult, stopping: bool, history: Sequence[float],
               now: float, cause: str = "") -> AfterExit:
    """`history`: when the instance was restarted before (seconds, any clock `now` is on).
    `cause`: why the agent killed it (its check failed), "" if it ended on its own."""
    what = cause or describe(result)
    state, reason = classify(result, stopping)
    if stopping:
        return AfterExit(state, reason, "stopped")
    if cause:
        state, reason = FAILED, cause
    if spec.job_type == "batch" and state == EXITED:
        return AfterExit(COMPLETE, "", "completed")
    policy = spec.restart
    if policy is None or policy.attempts == 0:
        return AfterExit(state, reason, what)
    recent = sorted(t for t in history if now - t < policy.interval)
    if len(recent) < policy.attempts:
        attempt = len(recent) + 1
        delay = policy.delay_before(attempt)
        message = f"{what}; restarting in {format_duration(delay)} (attempt {attempt} of {policy.attempts})"
        return AfterExit(STARTING, message, message, delay, attempt)
    window = format_duration(policy.interval)
    if policy.mode == "delay":
        wait = max(recent[0] + policy.interval - now, policy.delay)
        message = (f"{what}; {len(recent)} restarts in {window}: restarting in {format_duration(wait)}, "
                   "once the interval has passed")
        return AfterExit(STARTING, message, message, wait, policy.attempts)
    # the reason stays what it was without restarts (OOMKilled, exit status 1: what metrics and
    # scripts match on); the event says why nothing restarted it. A service's (or system job's)
    # exit 0 that its restarts did not cure is a failure too (issue 13: "when restarts are exhausted
    # the instance is failed"; Nomad's too), so the scheduler reschedules it; with `attempts: 0`
    # nothing was tried and an exit 0 stays `exited`, as before issue 13.
    if state == EXITED:
        state, reason = FAILED, result.reason or "exit status 0"
    return AfterExit(state, reason, f"{what}; not restarted: {len(recent)} restarts in {window} already")


def describe(result: ExitResult) -> str:
    if result.oom_killed:
        return "killed: out of memory (OOMKilled)"
    if result.exit_code is None:
        return result.reason or "ended, exit code unknown"
    if result.reason.startswith("killed by signal"):
        return result.reason
    return f"exited with code {result.exit_code}"
