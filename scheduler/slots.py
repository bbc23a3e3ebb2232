"""A set of a job's slots, (group, index) pairs, a byte a slot: what a reconcile finds taken.

A reconcile of a big job marks every live instance's slot, then looks for the empty ones below
each group's count. As a set of (group, index) tuples that was a tuple and a set entry a slot,
~9 MiB of the scheduler's heap at its peak with 100,000 instances (README, issue 12); as a
bytearray per group it is 100 kB, and the empty slots are found at C speed (`free`).

Indexes come from records; one far above the group's size (a system group's slots follow its
nodes, not its count) is kept in a set beside the bytes, so a stray large index costs a set
entry, not a bytearray up to it.
"""
from __future__ import annotations

from collections.abc import Iterator
from itertools import compress


class Slots:
    def __init__(self, span: int):
        """`span`: indexes below it are kept a byte each (the job's largest count, or its
        instance count if larger, covers all but strays)."""
        self._span = max(span, 0)
        self._bytes: dict[str, bytearray] = {}
        self._beyond: set[tuple[str, int]] = set()

    def add(self, group: str, index: int) -> None:
        if not 0 <= index < self._span:
            self._beyond.add((group, index))
            return
        taken = self._bytes.get(group)
        if taken is None:
            taken = self._bytes[group] = bytearray()
        if index >= len(taken):
            # grown by doubling (capped at the span): adding slots in order stays linear
            taken.extend(bytes(min(max(index + 1, 2 * len(taken)), self._span) - len(taken)))
        taken[index] = 1

    def __contains__(self, slot: tuple[str, int]) -> bool:
        group, index = slot
        if not 0 <= index < self._span:
            return slot in self._beyond
        taken = self._bytes.get(group)
        return taken is not None and index < len(taken) and taken[index] == 1

    def free(self, group: str, count: int) -> Iterator[int]:
        """The indexes below `count` not taken, in order."""
        taken = self._bytes.get(group, b"")
        low = min(count, self._span)
        empty = taken[:low].translate(_EMPTY).ljust(low, b"\1")
        yield from compress(range(low), empty)
        yield from (i for i in range(low, count) if (group, i) not in self._beyond)


_EMPTY = bytes.maketrans(b"\0\1", b"\1\0")
