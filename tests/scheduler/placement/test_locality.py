"""Image locality: a tie-break toward hosts holding the image, never a change to the packing."""
from __future__ import annotations

import dataclasses

import pytest

from packyard.records import ResourceAmounts
from scheduler.placement import place
from tests.scheduler.placement.builders import ask, host, table


@pytest.mark.parametrize("used_h0, image_hosts, want", [
    (0, (), ["h0", "h0"]),               # equal hosts: the first, as before
    (0, ("h1",), ["h1", "h1"]),          # equal hosts: the one holding the image
    (1000, ("h1",), ["h0", "h0"]),       # binpack prefers the fuller h0: locality does not outweigh it
    (0, ("gone",), ["h0", "h0"]),        # a host no longer in the table changes nothing
], ids=["no-image-hosts", "tie-goes-to-the-image", "packing-wins", "unknown-host"])
def test_locality_breaks_ties_only(used_h0, image_hosts, want):
    hs = [host("h0", used=ResourceAmounts(used_h0, 0, 0, 0)), host("h1")]
    [r] = place(table(*hs), [dataclasses.replace(ask(2), image_hosts=image_hosts)])
    assert r.hosts == want
