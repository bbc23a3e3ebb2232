"""Which node took each instance's Start: (instance id, node) pairs, kept small.

The dispatcher adds a pair when a node accepts a Start; the reconciler asks whether an
instance's pair is there (an accepted instance is in its node's hands, and a slow report does
not move it elsewhere); pairs of settled instances are dropped now and then. Until its report
arrives every instance of a big job has one: as a set of (id, node) tuples, with the id a new
string read from the agent's reply, that was ~15 MiB of the scheduler's heap at its peak with
100,000 instances (README, issue 12). Here an id maps to its node, the id being the string
the caller's record already holds (`add`'s `iid`), so a pair costs a dict entry.

An instance's Start accepted by a second node (placed again after the first did not confirm in
time, then the first's reply came late) keeps both pairs: the second in a set beside the dict,
as rare as that is.
"""
from __future__ import annotations

from collections.abc import Callable


class Accepted:
    def __init__(self) -> None:
        self._node: dict[str, str] = {}                 # id -> the (first) node that took it
        self._more: set[tuple[str, str]] = set()        # (id, node): other nodes that took it

    def add(self, iid: str, node: str) -> None:
        first = self._node.setdefault(iid, node)
        if first != node:
            self._more.add((iid, node))

    def __contains__(self, pair: object) -> bool:
        iid, node = pair     # type: ignore[misc]
        return self._node.get(iid) == node or (bool(self._more) and pair in self._more)

    def __len__(self) -> int:
        return len(self._node) + len(self._more)

    def __iter__(self):
        yield from self._node.items()
        yield from self._more

    def keep(self, wanted: Callable[[str], bool]) -> None:
        """Drop the pairs of every instance `wanted(id)` is false for."""
        self._node = {i: n for i, n in self._node.items() if wanted(i)}
        self._more = {p for p in self._more if wanted(p[0])}
