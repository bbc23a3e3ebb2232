"""The new instances of a rollout seen healthy (`DeploymentRecord.healthy`), kept whole and small.

Healthy once is healthy for good, so the set must hold every such instance for as long as the
rollout runs: a capped list of ids (the last 4,096) forgot the rest of a bigger rollout, which
then found them healthy "again" at every look (progress_at moved, the record was written each
time, progress_deadline could never fail it) and failed it when one of them restarted.

An instance id is `job.group.index-generation` (scheduler/reconciler.py `instance_id`), so the
set is stored as the runs of slot indexes per (group, generation), one string each:
`"web:2:0,4096,4,1,1,2"` is generation 2 of group web at slots 0-4095, 4100 and 4102-4103: the
first run's start, then its length, then each next run's gap after the one before and its
length. Numbers only, so a look reads it at C speed (split, int, accumulate), and small ones.
Its size grows with the runs, not with the slots: a rollout's holes are its instances in flight
(max_parallel) and the slots of another generation (rescheduled ones, runs of their own under
their generation's key); 100,000 slots in a row are `"web:2:0,100000"`.

A record written before kept the ids themselves (`"shop.web.17-2"`, no `:`); they are read as
well, and written back in this form.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import accumulate, chain


class HealthySet:
    """Read from a record's `healthy`, added to during one `step`, written back by `stored()`.
    Private to that step."""

    def __init__(self, stored: Sequence[str]):
        self._stored = stored
        # group -> [("-generation", bounds)]: bounds are [start, end, start, end...] of the runs
        # (end exclusive); the suffix, so that a step tells an instance's generation by
        # `id.endswith`, not by parsing its id
        self._groups: dict[str, list[tuple[str, list[int]]]] = {}
        self._added: dict[tuple[str, str], list[int]] = {}
        old: dict[tuple[str, str], list[int]] = {}
        for entry in stored:
            if ":" in entry:
                group, generation, runs = entry.split(":", 2)
                self._groups.setdefault(group, []).append(
                    ("-" + generation, list(accumulate(map(int, runs.split(","))))))
            else:                      # an id (a record of an earlier version)
                _job, group, slot = entry.split(".", 2)
                index, _, generation = slot.rpartition("-")
                old.setdefault((group, "-" + generation), []).append(int(index))
        for (group, suffix), indexes in old.items():
            self._groups.setdefault(group, []).append((suffix, _bounds(sorted(set(indexes)))))
            self._added[group, suffix] = []    # written back in the new form

    def of_group(self, group: str) -> dict[int, tuple[str, ...]]:
        """The group's healthy slots: index -> the suffixes ("-generation") of its instances seen
        healthy. An instance `r` is in the set if `r.id.endswith(slots[r.index])` (the `-` keeps
        generation 2 from matching 12); a dict, so that a look at 20,000 instances tests each
        with one lookup, not by parsing its id. Not those `add`ed in this step."""
        slots: dict[int, tuple[str, ...]] = {}
        for suffix, bounds in self._groups.get(group, ()):
            # built in C (map, range, fromkeys): a fragmented set is thousands of runs
            these = dict.fromkeys(chain.from_iterable(map(range, bounds[::2], bounds[1::2])), (suffix,))
            both = {i: slots[i] + (suffix,) for i in these.keys() & slots.keys()}   # a slot made anew
            slots.update(these)
            slots.update(both)
        return slots

    def add(self, group: str, index: int, iid: str) -> None:
        self._added.setdefault((group, "-" + iid.rpartition("-")[2]), []).append(index)

    def stored(self) -> list[str]:
        """What the record keeps: the same list as read when nothing was added."""
        if not self._added:
            return list(self._stored)
        keys = {(group, suffix) for group, pairs in self._groups.items() for suffix, _ in pairs} | self._added.keys()
        out = []
        for group, suffix in sorted(keys, key=lambda k: (k[0], int(k[1][1:]))):
            bounds = next((b for s, b in self._groups.get(group, ()) if s == suffix), [])
            runs = [(bounds[i], bounds[i + 1]) for i in range(0, len(bounds), 2)]
            runs += ((i, i + 1) for i in self._added.get((group, suffix), ()))
            out.append(f"{group}:{suffix[1:]}:{_encode(runs)}")
        return out


def _bounds(indexes: Sequence[int]) -> list[int]:
    """[start, end, ...] (end exclusive) of the runs of sorted, distinct `indexes`."""
    out: list[int] = []
    for i in indexes:
        if out and out[-1] == i:       # the run goes on: the next index is its end
            out[-1] = i + 1
        else:
            out += (i, i + 1)
    return out


def _encode(runs: Iterable[tuple[int, int]]) -> str:
    """The stored numbers of (start, end) runs, merged where they touch or overlap."""
    merged: list[list[int]] = []
    for start, end in sorted(runs):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    numbers, prev = [], 0
    for start, end in merged:
        numbers += (start - prev, end - start)
        prev = end
    return ",".join(map(str, numbers))
