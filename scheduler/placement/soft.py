"""Job-level soft preferences: spread over a host property and affinities (spec `spread:`,
`affinity:`). Scorers, never filters: they reorder the feasible hosts, they eliminate none.

They are the ask's own, not the policy's, so they are kept apart from the class's cached scores
(engine.py): the engine selects on `class score + bonus`, where the class score is the policy's
weighted mean in [0, 1] and `bonus = Σ weight x term / POLICY_WEIGHT`, each term in [0, 1]. That
orders hosts as the weighted mean (POLICY_WEIGHT x policy + Σ weight x term) / (POLICY_WEIGHT +
Σ |weight|) would: a spread of weight 50 counts half as much as the whole packing policy.

- affinity: 1 on a host that matches (constraint semantics, filters.constraint), 0 elsewhere;
  a negative weight scores the hosts that do *not* match instead, with |weight|.
- spread (Nomad's even spread, without targets): a host scores (most - here) / (most - fewest),
  where `here` counts the group's instances (running ones, `GroupAsk.existing_hosts`, and those
  placed so far in this ask) on hosts with the same value, and fewest/most are taken over the
  values of the hosts the class's static filters admit; 1 everywhere when all values are level,
  0 on a host that lacks the property. Unlike the policy's scorers this reads other hosts' rows
  (the count per value), so it is recomputed over all hosts after each placement: one gather.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scheduler.placement import filters, locality
from scheduler.placement.asks import GroupAsk
from scheduler.placement.table import MISSING, HostTable

POLICY_WEIGHT = 100.0   # what the policy's weighted mean weighs against a spread's or affinity's


@dataclass
class _Spread:
    weight: float
    codes: np.ndarray       # (N,) value code per host, MISSING where it lacks the property
    counts: np.ndarray      # (K,) instances of the group per value
    present: np.ndarray     # (K,) bool: a value some admitted host has

    def scores(self) -> np.ndarray:
        """(N,) in [0, 1]: fewer of the group's instances on the host's value scores higher."""
        k = len(self.counts)
        value = np.zeros(k + 1)        # the last entry is MISSING's (code -1): 0
        if self.present.any():
            counts = self.counts[self.present]
            fewest, most = int(counts.min()), int(counts.max())
            if most == fewest:
                value[:k] = 1.0
            else:
                value[:k] = np.clip((most - self.counts) / (most - fewest), 0.0, 1.0)
        return value[self.codes]


class SoftTerms:
    """The soft preferences of one ask, brought up to date as its instances are placed."""

    def __init__(self, table: HostTable, ask: GroupAsk, admitted: np.ndarray, existing: list[int]):
        n = len(table)
        self.static = np.zeros(n)       # the affinities' bonus: does not change during the ask
        for a in ask.affinity:
            mask, _ = filters.constraint(table, a)
            self.static += (a.weight * mask if a.weight > 0 else -a.weight * ~mask) / POLICY_WEIGHT
        self.static += locality.bonus(table, ask.image_bytes)
        self.spreads: list[_Spread] = []
        for s in ask.spread:
            col = table.column(s.attribute)
            k = len(col.vocab)
            on = col.codes[np.array(existing, dtype=np.intp)]
            counts = np.bincount(on[on != MISSING], minlength=k).astype(np.int64)
            present = np.zeros(k, dtype=bool)
            present[col.codes[admitted & (col.codes != MISSING)]] = True
            self.spreads.append(_Spread(s.weight / POLICY_WEIGHT, col.codes, counts, present))

    @classmethod
    def of(cls, table: HostTable, ask: GroupAsk, admitted: np.ndarray,
           existing: list[int]) -> SoftTerms | None:
        if not ask.spread and not ask.affinity and not ask.image_bytes:
            return None
        return cls(table, ask, admitted, existing)

    @property
    def changing(self) -> bool:
        """True when the bonus changes with every placement (a spread)."""
        return bool(self.spreads)

    def placed(self, host: int) -> None:
        for s in self.spreads:
            code = s.codes[host]
            if code != MISSING:
                s.counts[code] += 1

    def bonus(self) -> np.ndarray:
        out = self.static.copy()
        for s in self.spreads:
            out += s.weight * s.scores()
        return out
