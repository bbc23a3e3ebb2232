"""packyard.records: a list field left empty is one shared immutable value, never state shared
between records, and the bytes stored are what they were with a fresh [] per record; a value that
is its field's default 0 or False is not stored, and reads back as that default."""
from __future__ import annotations

import copy
import dataclasses
import pickle
import sys
import tracemalloc

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from packyard import records
from packyard.records import NO_ITEMS, InstanceRecord, StateRecord, evolve

LIST_FIELDS = {InstanceRecord: ("gpus", "avoid", "rescheduled_at", "events"), StateRecord: ("events",)}

texts = st.text(max_size=12)
names = st.text(min_size=1, max_size=12)      # required fields: never empty (dumps leaves "" out)
numbers = st.one_of(st.integers(-5, 5), st.floats(allow_nan=False, allow_infinity=False), st.booleans())
items = {"gpus": st.lists(st.integers(0, 64), max_size=4), "avoid": st.lists(texts, max_size=4),
         "rescheduled_at": st.lists(st.floats(0, 1e9), max_size=4),
         "events": st.lists(st.fixed_dictionaries({"at": st.floats(0, 1e9), "message": texts}), max_size=3)}


@st.composite
def instance_records(draw) -> InstanceRecord:
    r = InstanceRecord(id=draw(names), job=draw(names), group=draw(names), index=draw(st.integers(0, 99)),
                       kind=draw(st.sampled_from(["container", "vm"])), version=draw(st.integers(0, 9)),
                       node=draw(texts), reason=draw(texts), lost=draw(st.booleans()),
                       placed_at=draw(numbers), attempts=draw(st.integers(0, 3)),
                       reserved=draw(st.dictionaries(st.sampled_from(["cpu_milli", "memory_bytes"]),
                                                     st.integers(0, 1 << 40))))
    for name in LIST_FIELDS[InstanceRecord]:
        if draw(st.booleans()):
            r = evolve(r, **{name: draw(items[name])})
    return r


@st.composite
def state_records(draw) -> StateRecord:
    return StateRecord(id=draw(names), state=draw(st.sampled_from(records.STATES)), reason=draw(texts),
                       exit_code=draw(st.one_of(st.none(), st.integers(-1, 255))), restarts=draw(st.integers(0, 3)),
                       events=draw(st.one_of(st.just(NO_ITEMS), items["events"])), health=draw(texts))


def old_dumps(record) -> bytes:
    """records.dumps as it was before NO_ITEMS (every list field a list of its own), and with
    what equals a field's default 0, 0.0 or False left out."""
    defaults = {f.name: f.default for f in dataclasses.fields(record)}
    data = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    data = {k: v for k, v in data.items() if v not in (None, "", {}, [])
            and not (defaults[k] in (0, False) and defaults[k] is not None and v == defaults[k])}
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


def with_fresh_lists(record):
    return evolve(record, **{n: list(getattr(record, n)) for n in LIST_FIELDS[type(record)]})


@given(st.one_of(instance_records(), state_records()))
def test_the_stored_bytes_are_those_of_a_record_with_lists_of_its_own(record):
    assert records.dumps(record) == old_dumps(with_fresh_lists(record))
    back = records.loads(type(record), records.dumps(record))
    assert records.dumps(back) == records.dumps(record)
    for name in LIST_FIELDS[type(record)]:
        assert list(getattr(back, name)) == list(getattr(record, name))
        # empty when read back is the shared value; filled, a list as it always was
        assert getattr(back, name) is NO_ITEMS if not getattr(record, name) else type(getattr(back, name)) is list


@given(st.one_of(instance_records(), state_records()))
def test_a_record_reads_back_as_written(record):
    back = records.loads(type(record), records.dumps(record))
    assert with_fresh_lists(back) == with_fresh_lists(record)      # (an empty list reads back as NO_ITEMS)


def test_a_default_0_or_false_is_not_stored_and_other_0s_and_falses_are():
    pending = InstanceRecord(id="j.g.0-1", job="j", group="g", index=0, kind="container", version=0)
    assert orjson.loads(records.dumps(pending)) == {"id": "j.g.0-1", "job": "j", "group": "g", "index": 0,
                                                    "kind": "container", "version": 0, "desired": "run"}
    report = StateRecord(id="j.g.0-1", state="exited", exit_code=0, restarts=0, started_at=0.0)
    assert orjson.loads(records.dumps(report)) == {"id": "j.g.0-1", "state": "exited", "exit_code": 0}
    ended = records.DeploymentRecord(job="j", version=1, rolling=False, promoted=False, target=0)
    assert orjson.loads(records.dumps(ended)) == {"job": "j", "version": 1, "rolling": False, "state": "running"}
    assert records.loads(records.DeploymentRecord, records.dumps(ended)) == ended


@given(st.sampled_from([(cls, name) for cls, names in LIST_FIELDS.items() for name in names]),
       st.lists(st.integers(), min_size=1, max_size=3))
def test_filling_one_records_list_leaves_every_other_record_empty(field, values):
    cls, name = field
    make = (lambda i: InstanceRecord(id=f"j.g.{i}-1", job="j", group="g", index=i, kind="container", version=1)) \
        if cls is InstanceRecord else (lambda i: StateRecord(id=f"j.g.{i}-1", state="running"))
    a, b = make(0), make(1)
    changed = evolve(a, **{name: values})
    assert getattr(changed, name) == values
    assert getattr(a, name) == () and getattr(b, name) == ()
    # the shared empty value cannot be filled in place: there is no append to reach another record
    assert not hasattr(getattr(b, name), "append")
    # and a record given its own list owns it: changing that list changes no other record
    own = dataclasses.replace(b, **{name: []})
    getattr(own, name).append(values[0])
    assert getattr(make(2), name) == () and getattr(b, name) == ()


@given(instance_records())
def test_records_still_copy_and_pickle(record):
    assert copy.deepcopy(record) == record
    assert pickle.loads(pickle.dumps(record)) == record


@given(st.lists(st.one_of(instance_records(), state_records()), min_size=1, max_size=8))
def test_stored_bytes_hold_no_more_memory_than_their_length(recs):
    # orjson's own result keeps its whole write buffer (1,024 bytes at least, 4-8 KiB for a
    # ~300-byte record); the scheduler holds thousands in flight, so dumps returns a copy of the
    # content's size. What a bytes object of that length takes is sys.getsizeof's figure;
    # tracemalloc counts the blocks held: the same, give or take a tuple or two the interpreter
    # keeps on its free lists, far less than one buffer of orjson's.
    kept: list[bytes | None] = [None] * len(recs)     # made first: only the bytes are counted
    for r in recs:              # and the interpreter's one-off caches of a first call made before
        records.dumps(r)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i, r in enumerate(recs):
            kept[i] = records.dumps(r)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < sum(map(sys.getsizeof, kept)) + 1024


def has_slots_only(cls: type) -> bool:
    """Instances of `cls` hold their fields in slots, one per field, and no __dict__."""
    return ("__slots__" in vars(cls)
            and tuple(cls.__slots__) == tuple(f.name for f in dataclasses.fields(cls))
            and not any("__dict__" in getattr(c, "__slots__", ("__dict__",)) for c in cls.__mro__[:-1])
            and not hasattr(cls(*[None] * len(dataclasses.fields(cls))), "__dict__"))


@pytest.mark.parametrize("cls", [InstanceRecord, StateRecord])
def test_a_record_made_once_per_instance_keeps_its_slots(cls):
    # one of each per instance in the scheduler's cache and the simulated fleet: with a __dict__
    # each would take ~100-130 bytes more (README, issue 12)
    assert has_slots_only(cls)
    assert not has_slots_only(dataclasses.make_dataclass("Plain", ["a", "b"]))    # the check can fail


@given(instance_records(), st.data())
def test_evolve_is_replace(record, data):
    names = [f.name for f in dataclasses.fields(record)]
    changes = {n: data.draw(st.one_of(texts, numbers)) for n in data.draw(st.lists(st.sampled_from(names), unique=True))}
    new = evolve(record, **changes)
    assert new == dataclasses.replace(record, **changes) and type(new) is type(record)
    assert all(getattr(new, n) is getattr(record, n) for n in names if n not in changes)     # shallow


@given(st.lists(st.one_of(instance_records(), state_records()), min_size=2, max_size=6))
def test_repeated_strings_are_read_as_one_copy(recs):
    # each record read from its own bytes, as the watch brings them: a field of REPEATED with the
    # same value in two records is the same string object (the cache holds one, not one a record)
    for cls in (InstanceRecord, StateRecord):
        read = [records.loads(cls, records.dumps(r)) for r in recs if type(r) is cls]
        for name in records.REPEATED[cls]:
            by_value: dict[str, str] = {}
            for r in read:
                value = getattr(r, name)
                assert by_value.setdefault(value, value) is value
    fresh = [records.loads(InstanceRecord, records.dumps(evolve(recs[0], id=f"{recs[0].id}{i}", job=f"job-{i % 2}")))
             for i in range(4)] if type(recs[0]) is InstanceRecord else []
    assert all(r.job is fresh[i % 2].job for i, r in enumerate(fresh))
