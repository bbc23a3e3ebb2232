"""Each scorer on its own: known values from the published formulas, range [0, 1], and the order
it puts hosts in."""
from __future__ import annotations

import numpy as np
import pytest

from scheduler.placement import Plan, scorers
from scheduler.placement.table import amounts
from tests.scheduler.placement.builders import host, res, table

# cpu 4 cores, 16 GiB; used fractions before placing: empty, a quarter, three quarters
HOSTS = table(host("empty", 4000, 16), host("quarter", 4000, 16, used=res(1000, 4)),
              host("most", 4000, 16, used=res(3000, 12)))
NEED = res(1000, 4)   # a quarter of a host: afterwards 0.25, 0.5, 1.0 used


def score(name: str, need=NEED, t=HOSTS) -> np.ndarray:
    return scorers.REGISTRY[name](Plan(t).view(amounts(need)))


@pytest.mark.parametrize("name, expected", [
    ("binpack", [0.25, 0.5, 1.0]),
    ("most_allocated", [0.25, 0.5, 1.0]),
    ("least_allocated", [0.75, 0.5, 0.0]),
    ("balanced_allocation", [1.0, 1.0, 1.0]),
    # (20 - 2 x 10^free) / 18
    ("nomad_binpack", [(20 - 2 * 10 ** 0.75) / 18, (20 - 2 * 10 ** 0.5) / 18, 1.0]),
], ids=lambda v: v if isinstance(v, str) else None)
def test_known_values(name, expected):
    assert score(name) == pytest.approx(expected)


@pytest.mark.parametrize("name, best", [
    ("binpack", "most"), ("most_allocated", "most"), ("nomad_binpack", "most"),
    ("least_allocated", "empty"),
], ids=lambda v: v)
def test_preferred_host(name, best):
    assert HOSTS.names[int(np.argmax(score(name)))] == best


@pytest.mark.parametrize("cpu_used, mem_used, expected", [
    (1000, 4, 1.0), (4000, 0, 0.5), (2000, 4, 0.875),
], ids=["even", "cpu full memory empty", "quarter apart"])
def test_balanced_allocation_penalises_skew(cpu_used, mem_used, expected):
    t = table(host("h", 4000, 16, used=res(cpu_used, mem_used)))
    assert score("balanced_allocation", res(), t) == pytest.approx([expected])


@pytest.mark.parametrize("name", sorted(scorers.REGISTRY))
def test_range_even_when_overfull_or_without_capacity(name):
    t = table(host("over", 1000, 1, used=res(3000, 3)), host("zero", 0, 0), host("fine"))
    s = score(name, res(500, 1), t)
    assert np.all((s >= 0) & (s <= 1)), s
