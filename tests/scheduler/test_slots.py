"""scheduler/slots.py against a set of (group, index) pairs: the same members, the same free
slots, whatever the indexes (in order, scattered, beyond the span, negative)."""
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.slots import Slots

GROUPS = ["web", "api", "db"]
index = st.one_of(st.integers(0, 70), st.integers(-3, 10_000))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 80), st.lists(st.tuples(st.sampled_from(GROUPS), index), max_size=200),
       st.dictionaries(st.sampled_from(GROUPS), st.integers(0, 120)))
def test_slots_are_the_set_of_pairs_added(span, added, counts):
    slots, truth = Slots(span), set()
    for group, i in added:
        slots.add(group, i)
        truth.add((group, i))
    for group in GROUPS:
        for i in range(-3, 130):
            assert ((group, i) in slots) == ((group, i) in truth)
        for i in {i for g, i in added if g == group}:
            assert (group, i) in slots
        count = counts.get(group, 0)
        assert list(slots.free(group, count)) == [i for i in range(count) if (group, i) not in truth]


def test_a_big_job_in_order_fills_its_span_and_leaves_the_holes():
    n = 100_000
    slots = Slots(n)
    holes = set(range(7, n, 997))
    for i in range(n):
        if i not in holes:
            slots.add("g", i)
    assert list(slots.free("g", n)) == sorted(holes)
    assert list(slots.free("g", n + 3)) == [*sorted(holes), n, n + 1, n + 2]
    assert list(slots.free("other", 4)) == [0, 1, 2, 3]
