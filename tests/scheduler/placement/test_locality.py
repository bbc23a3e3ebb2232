"""Image locality: a tie-break toward hosts holding the image (more of its bytes first), never a
change to the packing."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from packyard.records import ResourceAmounts
from scheduler.placement import locality, place
from tests.scheduler.placement.builders import ask, host, table


@pytest.mark.parametrize("used_h0, image_bytes, want", [
    (0, {}, ["h0", "h0"]),                          # equal hosts: the first, as before
    (0, {"h1": 5}, ["h1", "h1"]),                   # equal hosts: the one holding the image
    (1000, {"h1": 5}, ["h0", "h0"]),                # binpack prefers the fuller h0: locality does not outweigh it
    (0, {"gone": 5}, ["h0", "h0"]),                 # a host no longer in the table changes nothing
    (0, {"h1": 0}, ["h0", "h0"]),                   # holding nothing of it is not holding it
    (0, {"h0": 10, "h2": 40 << 20}, ["h2", "h2"]),  # more of the image's bytes wins the tie
], ids=["no-image-hosts", "tie-goes-to-the-image", "packing-wins", "unknown-host", "zero-bytes", "more-bytes"])
def test_locality_breaks_ties_only(used_h0, image_bytes, want):
    hs = [host("h0", used=ResourceAmounts(used_h0, 0, 0, 0)), host("h1"), host("h2")]
    [r] = place(table(*hs), [dataclasses.replace(ask(2), image_bytes=image_bytes)])
    assert r.hosts == want


def test_the_bonus_grows_with_the_bytes_held_and_stays_below_the_tie():
    t = table(host("a"), host("b"), host("c"))
    b = locality.bonus(t, {"a": 100, "b": 25})
    assert b[0] == pytest.approx(locality.TIE) and b[1] == pytest.approx(locality.TIE / 4) and b[2] == 0
    assert np.all(b <= locality.TIE)


def test_density_is_unchanged_on_a_mixed_fleet():
    """Whatever hosts hold the image, the same number of hosts is opened for the same asks."""
    def hosts_used(image_bytes):
        hs = [host(f"h{i}", used=ResourceAmounts(300 * (i % 3), 0, 0, 0)) for i in range(8)]
        [r] = place(table(*hs), [dataclasses.replace(ask(20, cpu=1000), image_bytes=image_bytes)])
        return sorted(set(r.hosts)), len(r.hosts)
    base = hosts_used({})
    assert 1 < len(base[0]) < 8 and base[1] == 20      # several hosts opened, not all
    for held in ({"h7": 1}, {"h1": 10, "h4": 20}, {f"h{i}": i + 1 for i in range(8)}):
        assert len(hosts_used(held)[0]) == len(base[0]) and hosts_used(held)[1] == base[1]
