"""When a rolling job is looked at again with no event to say so. Time alone moves a rollout on
(an instance turns healthy after min_healthy_time, deadlines pass), but a look is a reconcile of
the whole job: 20,000-100,000 instances for a big job's first deployment. So a job is due only
  - when its last look said something falls due by now (`Result.wake_at`), or something heard
    about it since can matter by now (a report of an instance now running: once it has served
    min_healthy_time; any other report, an instance record, a deployment record other than the
    one that look left: at once, and it is looked at as before);
  - and, as before, not more often than its size allows (50,000 instances: every 5 s, not every
    tick, which cost a small job placed meanwhile a quarter of a second).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

from packyard.records import DeploymentRecord

ROLLOUT_INSTANCES_PER_SECOND = 10_000


class RolloutTimer:
    def __init__(self, tick: float):
        self.tick = tick
        self._seen: dict[str, float] = {}      # when each rolling job was last looked at on time alone
        # what each job's last look left: (when time alone moves it next, None: never; the
        # deployment record as it was then or was written)
        self._looked: dict[str, tuple[float | None, DeploymentRecord | None]] = {}

    def looked(self, job: str, wake_at: float | None, deployment: DeploymentRecord | None) -> None:
        """`job` was reconciled: nothing falls due before `wake_at` unless something is heard."""
        self._looked[job] = (wake_at, deployment)

    def heard(self, job: str, matters_at: float | None = None) -> None:
        """Something about `job` changed that its last look did not see, which can change what
        that look decided no sooner than `matters_at` (None: at once, or not known)."""
        last = self._looked.get(job) if self._looked else None
        if last is None:
            return
        if matters_at is None:
            del self._looked[job]
        elif last[0] is None or matters_at < last[0]:
            self._looked[job] = (matters_at, last[1])

    def forget(self) -> None:
        self._looked.clear()

    def due(self, now: float, rolling: Mapping[str, DeploymentRecord], size: Callable[[str], int]) -> set[str]:
        """The jobs among `rolling` (name -> its deployment record as cached) to look at now."""
        self._seen = {j: t for j, t in self._seen.items() if j in rolling}
        self._looked = {j: v for j, v in self._looked.items() if j in rolling}
        due = set()
        for job, deployment in rolling.items():
            every = max(self.tick, size(job) / ROLLOUT_INSTANCES_PER_SECOND)
            if now - self._seen.get(job, 0.0) < every or not self._falls_due(job, deployment, now):
                continue
            self._seen[job] = now
            due.add(job)
        return due

    def _falls_due(self, job: str, deployment: DeploymentRecord, now: float) -> bool:
        last = self._looked.get(job)
        if last is None or last[1] != deployment:
            return True                # not looked at since something changed: as before
        wake_at = last[0]
        return wake_at is not None and wake_at <= now
