"""A job's versions (issue 14): which submissions change what instances run, which version a
rollback or an automatic revert goes back to, which are forgotten. Pure functions over the
records the scheduler keeps (`/packyard/versions/<job>/<n>`).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from packyard.records import KEPT_VERSIONS, VersionRecord
from packyard.spec import JobSpec
from scheduler.reconciler import group_hash


def changes_what_runs(old: JobSpec | None, new: JobSpec) -> bool:
    """A new version rolls out (gets a deployment) unless only counts, priorities or update
    policies changed: those scale or reorder what runs, and replace nothing."""
    if old is None or old.type != new.type:
        return True
    before = {g.name: group_hash(g) for g in old.groups}
    return any(before.get(g.name) != group_hash(g) for g in new.groups)


@dataclass(frozen=True)
class WayBack:
    """Where a job goes back to from `version`: `target` (None: nowhere) and, in words for the
    deployment's description, logs and the API's refusal, the rule that chose it or why there
    is none."""
    version: int
    target: VersionRecord | None
    why: str
    same_spec: bool = False        # (revert_target) none: the target found has the failed spec

    @property
    def nowhere(self) -> str:
        """Why there is no target, as one sentence."""
        return self.why if self.same_spec else f"no stable version before version {self.version}, and {self.why}"


def way_back(kept: Mapping[int, VersionRecord], version: int) -> WayBack:
    """Where an automatic revert of `version` goes, and `ctl rollback` with no --version from it:

    1. the newest stable version older than `version` (its deployment succeeded, or it is a
       count-only change of one that did);
    2. with none stable yet, the version `version` replaced (`version - 1`), provided its own
       deployment did not fail: it was superseded while still rolling out (a first version still
       serving out its min_healthy_time), or it scaled one such (count-only);
    3. nothing otherwise: a version whose deployment failed is never a target, and a job's first
       version has nothing before it.

    Nomad (nomad/deploymentwatcher, `latestStableJob`) stops at 1: with no stable version, a
    failed deployment is not reverted. Here `ctl submit --wait` of a first version returns once
    its instances run, before it can be stable (min_healthy_time, 10 s by default), so the
    natural `submit v1 --wait; submit v2 --wait` would leave a bad v2 in place; 2 gives that v2
    the way back a user would take by hand. It goes one version back only, never further: past
    a failed version nothing is known to have served. Decided from the version records alone
    (`stable`, `failed`, both in etcd with the deployment that earned them), so a scheduler
    that took over in between decides the same."""
    older = [v for n, v in kept.items() if n < version and v.stable]
    if older:
        return WayBack(version, max(older, key=lambda v: v.version), "the last stable version")
    replaced = kept.get(version - 1)
    if replaced is None:
        return WayBack(version, None, "it is the job's first version" if version <= 1
                       else f"version {version - 1} is not kept")
    if replaced.failed:
        return WayBack(version, None, f"the deployment of version {replaced.version}, which it replaced, failed")
    return WayBack(version, replaced, "the version it replaced, not stable yet (its deployment had not failed)")


def revert_target(kept: Mapping[int, VersionRecord], failed: int) -> WayBack:
    """`way_back` for an automatic revert of the failed version `failed`, unless the target's
    spec is the very one that failed (a job stopped and submitted again as it was): going back
    to it would replace nothing, or fail the same way (Nomad's `handleRollbackValidity` too)."""
    way = way_back(kept, failed)
    now = kept.get(failed)
    if way.target is not None and now is not None and way.target.spec_json == now.spec_json:
        return WayBack(failed, None, f"version {way.target.version}, where it would go, has the same spec",
                       same_spec=True)
    return way


def forgotten(kept: Mapping[int, VersionRecord], newest: int) -> list[int]:
    """Versions to drop once `newest` is written: all but the last KEPT_VERSIONS."""
    numbers = sorted({*kept, newest})
    return [n for n in numbers[:-KEPT_VERSIONS] if n in kept]
