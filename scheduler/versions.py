"""A job's versions (issue 14): which submissions change what instances run, which version a
rollback or an automatic revert goes back to, which are forgotten. Pure functions over the
records the scheduler keeps (`/packyard/versions/<job>/<n>`).
"""
from __future__ import annotations

from collections.abc import Mapping

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


def stable_before(kept: Mapping[int, VersionRecord], version: int) -> VersionRecord | None:
    """The newest stable version older than `version`: where a rollback goes by default, and an
    automatic revert always."""
    older = [v for n, v in kept.items() if n < version and v.stable]
    return max(older, key=lambda v: v.version) if older else None


def forgotten(kept: Mapping[int, VersionRecord], newest: int) -> list[int]:
    """Versions to drop once `newest` is written: all but the last KEPT_VERSIONS."""
    numbers = sorted({*kept, newest})
    return [n for n in numbers[:-KEPT_VERSIONS] if n in kept]
