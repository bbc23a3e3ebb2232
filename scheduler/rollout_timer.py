"""When a rolling job is looked at again with no event to say so. Time alone moves a rollout on
(an instance turns healthy after min_healthy_time, deadlines pass), but a look is a reconcile of
the whole job: 20,000-100,000 instances for a big job's first deployment. So a job is due only
  - when its last look said something falls due by now (`Result.wake_at`), or something heard
    about it since can matter by now (a report of an instance now running: once it has served
    min_healthy_time; any other report, an instance record, a deployment record other than the
    one that look left: at once, and it is looked at as before);
  - and, as before, not more often than its size allows (50,000 instances: every 5 s, not every
    tick, which cost a small job placed meanwhile a quarter of a second).

A rollout that replaces nothing (a job's first deployment) need not be looked at whole at all once
it has been: what time can move on are the instances its last look found waiting
(`Result.waiting`), kept here as they are heard of (a report lowers one's time; its record
changing, say placed, makes it due at once), and a look judges only those whose time came
(`narrow`, scheduler/reconciler.py `look_again`). Such a look costs what it judges, not the job's
size, and is made each tick it is due: the whole look of 100,000 instances that the last of
those small jobs waited out was ~0.9 s (issue 12). A record of an instance it did not name (a new
one, one seen healthy), or any other change, makes the next look whole again, as before.
"""
from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Mapping
from itertools import compress
from operator import itemgetter, not_

from packyard.records import DeploymentRecord

ROLLOUT_INSTANCES_PER_SECOND = 10_000
# A narrow look judges what came due since the last one: made this often (at any evaluation, not
# only once a tick), each judges a quarter of a second's worth: ~2,000 instances (~15 ms) while a
# 100,000-instance first deployment turns healthy at ~8,000 a second in bench/scale.py, where once
# a tick each judged 10,000-14,000 (50-115 ms) and a small job submitted meanwhile waited it out.
NARROW_EVERY = 0.25


class Waiting:
    """A rollout's instances its last look found waiting: when each may next be found otherwise,
    and whether it was placed when last judged, filed by that time's tenth of a second, so that a
    look finds the few whose time came without reading them all (100,000 at first; a heap's pops
    cost more than reading them). Kept as id -> time and a set of the unplaced (no tuple an
    instance: README, issue 12, the scheduler's heap at 100,000), the dict made anew once it holds
    a quarter of what it once did (a dict keeps its largest table)."""

    def __init__(self, items: Mapping[str, tuple[float, bool]]):
        self._at: dict[str, float] = {}
        self._unplaced: set[str] = set()
        self._most = 0                                # the most `_at` held since it was made
        self._files: dict[int, list[str]] = {}        # tenth -> ids filed under it (some since moved)
        self._tenths: list[int] = []                  # a heap of those tenths
        self.put(items)

    def __contains__(self, iid: str) -> bool:
        return iid in self._at

    def _file(self, iid: str, at: float) -> None:
        tenth = _tenth(at)
        ids = self._files.get(tenth)
        if ids is None:
            ids = self._files[tenth] = []
            heapq.heappush(self._tenths, tenth)
        ids.append(iid)

    def put(self, items: Mapping[str, tuple[float, bool]]) -> None:
        ats = list(map(itemgetter(0), items.values()))
        self._at.update(zip(items, ats, strict=True))
        if self._unplaced:
            self._unplaced.difference_update(items)
        self._unplaced.update(compress(items, map(not_, map(itemgetter(1), items.values()))))
        for iid, at in zip(items, ats, strict=True):
            self._file(iid, at)
        self._most = max(self._most, len(self._at))

    def lower(self, iid: str, at: float) -> None:
        """`iid`, if waiting, may be found otherwise from `at` (early rather than late: never later)."""
        old = self._at.get(iid)
        if old is None or at >= old:
            return
        self._at[iid] = at
        if _tenth(at) != _tenth(old):
            self._file(iid, at)

    def take(self, now: float) -> tuple[list[tuple[str, bool]], float | None]:
        """Those whose time came by `now` (no longer kept: `put` those still waiting back), each
        with whether it was placed, and the earliest time of the rest (None: none waits)."""
        at_of, unplaced, files, tenths = self._at, self._unplaced, self._files, self._tenths
        due: list[tuple[str, bool]] = []
        while tenths and tenths[0] <= _tenth(now):
            tenth = heapq.heappop(tenths)
            later = []                                # of the tenth `now` is in: not all due yet
            for iid in files.pop(tenth):
                current = at_of.get(iid)
                if current is None or _tenth(current) != tenth:
                    continue                          # judged, or filed again since under another tenth
                if current <= now:
                    due.append((iid, iid not in unplaced))
                    del at_of[iid]
                    unplaced.discard(iid)
                else:
                    later.append(iid)
            if later:
                files[tenth] = later
                heapq.heappush(tenths, tenth)
                break
        if len(at_of) < self._most // 4:
            at_of = self._at = dict(at_of)
            self._unplaced = set(unplaced)
            self._most = len(at_of)
        rest_at = None
        while tenths and rest_at is None:
            tenth = tenths[0]
            ids = files[tenth] = [i for i in files[tenth] if i in at_of and _tenth(at_of[i]) == tenth]
            if ids:
                rest_at = min(at_of[i] for i in ids)
            else:
                del files[heapq.heappop(tenths)]
        return due, rest_at


def _tenth(t: float) -> int:
    return math.floor(t * 10)


class RolloutTimer:
    def __init__(self, tick: float):
        self.tick = tick
        self._seen: dict[str, float] = {}      # when each rolling job was last looked at on time alone
        # what each job's last look left: (when time alone moves it next, None: never; the
        # deployment record as it was then or was written)
        self._looked: dict[str, tuple[float | None, DeploymentRecord | None]] = {}
        # of those whose last look may be followed by a narrow one: its waiting instances, id ->
        # (when it may next be found otherwise, whether it was placed when last judged)
        self._waiting: dict[str, Waiting] = {}

    def looked(self, job: str, wake_at: float | None, deployment: DeploymentRecord | None,
               waiting: Mapping[str, tuple[float, bool]] | None = None) -> None:
        """`job` was reconciled: nothing falls due before `wake_at` unless something is heard.
        `waiting`: the look's `Result.waiting` (None: the next look must be whole)."""
        self._looked[job] = (wake_at, deployment)
        # the last look's gone before this one's is made: the two were 100,000 instances each
        # at once, with the look's own, at the scheduler's peak (README, issue 12)
        self._waiting.pop(job, None)
        if waiting is not None:
            self._waiting[job] = Waiting(waiting)

    def looked_again(self, job: str, wake_at: float | None,
                     deployment: DeploymentRecord | None, waiting: Mapping[str, tuple[float, bool]] | None) -> None:
        """A narrow look judged what `narrow` handed it: those still waiting are in `waiting`
        (None: the rollout ended)."""
        kept = self._waiting.get(job)
        self._looked[job] = (wake_at, deployment)
        if waiting is None or kept is None:
            self._waiting.pop(job, None)
            return
        kept.put(waiting)

    def heard(self, job: str, matters_at: float | None = None, instance: str = "") -> None:
        """Something about `job` changed that its last look did not see, which can change what
        that look decided no sooner than `matters_at` (None: at once, or not known). `instance`:
        a report of that instance."""
        last = self._looked.get(job) if self._looked else None
        if last is None:
            return
        if matters_at is None:
            del self._looked[job]
            self._waiting.pop(job, None)
            return
        if last[0] is None or matters_at < last[0]:
            self._looked[job] = (matters_at, last[1])
        waiting = self._waiting.get(job)
        if waiting is not None and instance:
            waiting.lower(instance, matters_at)
        # a report of an instance not waiting: one seen healthy is healthy for good; one the last
        # look did not see at all comes with its record, which makes the next look whole

    def changed(self, job: str, instance: str, now: float) -> None:
        """The record of `instance` (of `job`) changed: a narrow look judges it again at once if
        the last look found it waiting; anything else, the whole job is looked at, as `heard`."""
        waiting = self._waiting.get(job)
        if waiting is None or instance not in waiting or job not in self._looked:
            self.heard(job)
            return
        self.heard(job, now, instance)

    def narrow(self, job: str, deployment: DeploymentRecord, now: float
               ) -> tuple[list[tuple[str, bool]], float | None] | None:
        """If a look at `job` now may be narrow (`reconciler.look_again`): the instances it must
        judge (those whose time came), each with whether it was placed when last judged, and the
        earliest time of the rest (None: none waits). Handed over: the look that follows gives
        back those still waiting (`looked_again`), or, looking at the whole job, all (`looked`)."""
        waiting = self._waiting.get(job)
        last = self._looked.get(job)
        if waiting is None or last is None or last[1] != deployment:
            return None
        return waiting.take(now)

    def forget(self) -> None:
        self._looked.clear()
        self._waiting.clear()

    def due(self, now: float, rolling: Mapping[str, DeploymentRecord], size: Callable[[str], int],
            whole: bool = True) -> set[str]:
        """The jobs among `rolling` (name -> its deployment record as cached) to look at now.
        `whole`: those whose look would be whole too (the controller asks once a tick), else only
        those whose look may be narrow (`narrow`; it asks at every evaluation)."""
        self._seen = {j: t for j, t in self._seen.items() if j in rolling}
        self._looked = {j: v for j, v in self._looked.items() if j in rolling}
        self._waiting = {j: v for j, v in self._waiting.items() if j in self._looked}
        due = set()
        for job, deployment in rolling.items():
            # a narrow look costs what it judges: often, so that each judges little
            narrow = job in self._waiting and self._looked[job][1] == deployment
            if not (narrow or whole):
                continue
            every = NARROW_EVERY if narrow else max(self.tick, size(job) / ROLLOUT_INSTANCES_PER_SECOND)
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
