"""scheduler/accepted.py against a set of (instance, node) pairs: the same members through any
sequence of adds (an instance taken by one node, or by several) and prunes."""
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.accepted import Accepted

IDS = [f"job.web.{i}-1" for i in range(6)]
NODES = ["a", "b", "c"]
add = st.tuples(st.just("add"), st.sampled_from(IDS), st.sampled_from(NODES))
keep = st.tuples(st.just("keep"), st.frozensets(st.sampled_from(IDS)))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(add, add, add, keep), max_size=40))
def test_accepted_is_the_set_of_pairs(ops):
    accepted, truth = Accepted(), set()
    for op in ops:
        if op[0] == "add":
            accepted.add(op[1], op[2])
            truth.add((op[1], op[2]))
        else:
            accepted.keep(op[1].__contains__)
            truth = {p for p in truth if p[0] in op[1]}
        assert set(accepted) == truth and len(accepted) == len(truth)
        assert {(i, n) for i in IDS for n in NODES if (i, n) in accepted} == truth
