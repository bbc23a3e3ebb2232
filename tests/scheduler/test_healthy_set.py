"""scheduler/healthy_set.py: the stored form holds exactly the instances put in, whatever their
slots and generations, read from either form and added to over steps."""
from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.healthy_set import HealthySet
from scheduler.reconciler import instance_id

GROUPS = ("web", "api")
slots = st.sets(st.tuples(st.sampled_from(GROUPS), st.integers(0, 300), st.sampled_from([1, 2, 3, 12, 21])),
                max_size=200)


def members(h: HealthySet, candidates) -> set[tuple[str, int, int]]:
    """Of `candidates` (group, index, generation), those the set says were seen healthy."""
    out = set()
    for group, index, generation in candidates:
        slots = h.of_group(group)
        suffixes = slots[index] if index < len(slots) else None
        if suffixes is not None and instance_id("shop", group, index, generation).endswith(suffixes):
            out.add((group, index, generation))
    return out


@settings(max_examples=60, deadline=None)   # ~0.1 s each: 150 took 15 s of the default suite
@given(before=slots, added=slots, old_form=st.booleans())
def test_the_stored_form_holds_exactly_what_was_seen(before, added, old_form):
    everything = {(g, i, gen) for g in GROUPS for i in range(302) for gen in (1, 2, 3, 12, 21)}
    if old_form:                       # a record of the earlier version: the ids themselves
        h = HealthySet([instance_id("shop", g, i, gen) for g, i, gen in sorted(before)])
    else:
        first = HealthySet([])
        for g, i, gen in before:
            first.add(g, i, instance_id("shop", g, i, gen))
        h = HealthySet(first.stored())
    assert members(h, everything) == before
    for g, i, gen in added - before:
        h.add(g, i, instance_id("shop", g, i, gen))
    stored = h.stored()
    assert all(":" in entry for entry in stored)
    again = HealthySet(stored)
    assert members(again, everything) == before | added
    assert again.stored() == stored    # nothing added: the same list, the record unchanged


@given(start=st.integers(0, 10**6), n=st.integers(1, 10**5))
def test_slots_in_a_row_are_one_short_string(start, n):
    h = HealthySet([])
    for i in range(start, start + n):
        h.add("web", i, instance_id("shop", "web", i, 2))
    assert h.stored() == [f"web:2:{start},{n}"]


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 100_000), share=st.floats(0.01, 1.0), seed=st.integers(0, 2**32))
def test_no_set_is_longer_than_a_bitmap_of_its_slots(n, share, seed):
    """Slots healthy at random (a first deployment's instances turn healthy in no order): the
    stored form is at most a base64 bitmap's size, and holds every one."""
    rng = random.Random(seed)
    healthy = [i for i in range(n) if rng.random() < share] or [n - 1]
    h = HealthySet([])
    for i in healthy:
        h.add("web", i, instance_id("shop", "web", i, 2))
    [stored] = h.stored()
    assert len(stored) <= len("web:2:bits:") + 4 * ((n + 7) // 8 + 2) // 3
    assert [i for i, s in enumerate(HealthySet([stored]).of_group("web")) if s is not None] == healthy


def encoded_run_by_run(indexes: list[int]) -> str:
    """The stored form as healthy_set.py wrote it before it was made at C speed (issue 12): runs
    merged one by one, their numbers, or the bitmap where that is shorter."""
    import base64
    merged: list[list[int]] = []
    for i in sorted(indexes):
        if merged and i <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], i + 1)
        else:
            merged.append([i, i + 1])
    numbers, prev = [], 0
    for start, end in merged:
        numbers += (start - prev, end - start)
        prev = end
    text = ",".join(map(str, numbers))
    size = (prev + 7) // 8
    if len(text) <= len("bits:") + 4 * ((size + 2) // 3):
        return text
    bits = bytearray(b"0") * prev
    for start, end in merged:
        bits[start:end] = b"1" * (end - start)
    bits.reverse()
    return "bits:" + base64.b64encode(int(bits, 2).to_bytes(size, "little")).decode()


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 3000), share=st.floats(0.0, 1.0), run=st.integers(1, 60), seed=st.integers(0, 2**32),
       split=st.floats(0.0, 1.0))
def test_the_stored_form_is_the_one_it_always_was(n, share, run, seed, split):
    """Made anew, the form is the same string as before (a record read and written back with
    nothing added stays as it is; one with some added is the same set, not another spelling)."""
    rng = random.Random(seed)
    healthy = sorted({i for start in range(0, n, run) if rng.random() < share
                      for i in range(start, min(n, start + rng.randint(1, run)))}) or [rng.randrange(n)]
    first = HealthySet([])
    cut = int(len(healthy) * split)
    for i in healthy[:cut]:
        first.add("web", i, instance_id("shop", "web", i, 2))
    h = HealthySet(first.stored()) if cut else first
    for i in healthy[cut:]:
        h.add("web", i, instance_id("shop", "web", i, 2))
    assert h.stored() == [f"web:2:{encoded_run_by_run(healthy)}"]
