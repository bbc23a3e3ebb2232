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
their generation's key); 100,000 slots in a row are `"web:2:0,100000"`. Where many short runs
make that longer than a bitmap of the slots (a first deployment's instances turn healthy in no
order), it is the bitmap, base64, slot 0 the lowest bit: `"web:2:bits:BQ=="` is slots 0 and 2.
So no set is longer than about a sixth of a byte a slot: 17 kB at 100,000 slots.

A record written before kept the ids themselves (`"shop.web.17-2"`, no `:`); they are read as
well, and written back in this form.
"""
from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from itertools import accumulate, compress, count, repeat
from operator import is_not


class HealthySet:
    """Read from a record's `healthy`, added to during one `step`, written back by `stored()`.
    Private to that step."""

    def __init__(self, stored: Sequence[str]):
        self._stored = stored
        # group -> [("-generation", its slots as read: `_parse`)]; the suffix, so that a step
        # tells an instance's generation by `id.endswith`, not by parsing its id
        self._groups: dict[str, list[tuple[str, list[int] | bytes]]] = {}
        self._added: dict[tuple[str, str], list[int]] = {}
        old: dict[tuple[str, str], list[int]] = {}
        for entry in stored:
            if ":" in entry:
                group, generation, runs = entry.split(":", 2)
                self._groups.setdefault(group, []).append(("-" + generation, _parse(runs)))
            else:                      # an id (a record of an earlier version)
                _job, group, slot = entry.split(".", 2)
                index, _, generation = slot.rpartition("-")
                old.setdefault((group, "-" + generation), []).append(int(index))
        for (group, suffix), indexes in old.items():
            self._groups.setdefault(group, []).append((suffix, _bounds(sorted(set(indexes)))))
            self._added[group, suffix] = []    # written back in the new form

    def of_group(self, group: str) -> list[tuple[str, ...] | None]:
        """The group's healthy slots: by slot index (up to the highest in the set), the suffixes
        ("-generation") of its instances seen healthy, None for a slot with none. An instance `r`
        is in the set if `r.index < len(slots)` and `r.id.endswith(slots[r.index])` (the `-`
        keeps generation 2 from matching 12): a look at 20,000 instances tests each by one
        subscript, not by parsing its id. A list, the same tuple in every slot of a generation:
        0.8 MB at 100,000 slots, where a dict of them and its int keys were ~8 MiB of the
        scheduler's heap at its peak (README, issue 12). Not those `add`ed in this step."""
        slots: list[tuple[str, ...] | None] = []
        for suffix, read in self._groups.get(group, ()):
            these = _by_slot(read, (suffix,))
            if not slots:
                slots = these
                continue
            slots.extend([None] * (len(these) - len(slots)))
            # a slot in two generations' sets (made anew): both suffixes
            for i in compress(count(), map(is_not, these, repeat(None))):
                held = slots[i]
                slots[i] = these[i] if held is None else held + (suffix,)
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
            read = next((b for s, b in self._groups.get(group, ()) if s == suffix), [])
            slots = _slots(read)
            added = self._added.get((group, suffix), ())
            top = max(added, default=-1) + 1
            if top > len(slots):
                slots.extend(bytes(top - len(slots)))
            for i in added:
                slots[i] = 1
            out.append(f"{group}:{suffix[1:]}:{_encode(slots)}")
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


def _encode(slots: bytearray) -> str:
    """The stored form of a set of slots (a byte a slot, 1: in the set): the numbers of its runs,
    or a bitmap where that is shorter (many short runs: half of 100,000 slots at random is 100 kB
    of numbers, 17 kB of bitmap), so that no set is longer than a bitmap of its slots. Made at C
    speed (count, finditer, translate, int): a look at a big first deployment writes it, and
    merging its runs one by one in Python was most of a look that judged a few thousand."""
    end = len(slots.rstrip(b"\0"))                  # past the last slot in the set
    size = (end + 7) // 8                           # bytes of the bitmap
    limit = len(_BITS) + 4 * ((size + 2) // 3)      # ... base64, tagged
    runs = slots.count(b"\0\1", 0, end) + (slots[:1] == b"\1")
    if 4 * runs - 1 <= limit:                       # a run is 4 characters at the least ("g,n,")
        numbers, prev = [], 0
        for m in re.finditer(b"\x01+", slots):
            start, stop = m.span()
            numbers += (start - prev, stop - start)
            prev = stop
        text = ",".join(map(str, numbers))
        if len(text) <= limit:
            return text
    bits = slots[:end].translate(_BIT_CHARS)
    bits.reverse()                                  # slot 0 the lowest bit
    return _BITS + base64.b64encode(int(bits, 2).to_bytes(size, "little")).decode()


def _parse(runs: str) -> list[int] | bytes:
    """A stored set as read: the bounds of its runs, [start, end, start, end...] (end
    exclusive), or from a bitmap, a byte a slot (1: in the set)."""
    if runs.startswith(_BITS):
        bits = int.from_bytes(base64.b64decode(runs[len(_BITS):]), "little")
        return format(bits, "b")[::-1].encode().translate(_ONE_BYTE_A_BIT)
    return list(accumulate(map(int, runs.split(","))))


def _by_slot(read: list[int] | bytes, value: tuple[str, ...]) -> list[tuple[str, ...] | None]:
    """A `_parse`d set as a list by slot: `value` for a slot in it, else None (built in C: map
    over a bitmap, a slice assigned a run)."""
    if isinstance(read, bytes):
        return list(map((None, value).__getitem__, read))
    out: list[tuple[str, ...] | None] = [None] * (read[-1] if read else 0)
    for start, end in zip(read[::2], read[1::2], strict=True):
        out[start:end] = repeat(value, end - start)
    return out


def _slots(read: list[int] | bytes) -> bytearray:
    """A `_parse`d set as a byte a slot (1: in the set)."""
    if isinstance(read, bytes):
        return bytearray(read)
    slots = bytearray(read[-1] if read else 0)
    for start, end in zip(read[::2], read[1::2], strict=True):
        slots[start:end] = b"\1" * (end - start)
    return slots


_BITS = "bits:"
_ONE_BYTE_A_BIT = bytes.maketrans(b"01", b"\0\1")
_BIT_CHARS = bytes.maketrans(b"\0\1", b"01")
