"""When a rolling job is looked at again on time alone (scheduler/rollout_timer.py): only once
its last look said something falls due, or something was heard about it since, and never more
often than its size allows."""
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from packyard.records import DeploymentRecord
from scheduler.rollout_timer import RolloutTimer, Waiting

DEP = DeploymentRecord(job="big", version=1, target=1, started_at=0.0, progress_at=0.0, rolling=True)


def ticks(timer, rolling, start, end, size=lambda job: 10):
    """The times, one tick apart in [start, end), at which each job was due."""
    seen: dict[str, list[float]] = {}
    t = start
    while t < end:
        for job in timer.due(t, rolling, size):
            seen.setdefault(job, []).append(t)
        t += timer.tick
    return seen


def test_a_rollout_with_nothing_due_is_not_looked_at_every_tick():
    timer = RolloutTimer(tick=1.0)
    timer.looked("big", 30.0, DEP)          # its next instance serves its min_healthy_time at 30 s
    assert ticks(timer, {"big": DEP}, 1.0, 30.0) == {}
    assert ticks(timer, {"big": DEP}, 30.0, 31.0) == {"big": [30.0]}


def test_one_never_looked_at_or_heard_about_since_is_looked_at_as_before():
    timer = RolloutTimer(tick=1.0)
    assert ticks(timer, {"big": DEP}, 1.0, 4.0) == {"big": [1.0, 2.0, 3.0]}
    timer.looked("big", 100.0, DEP)
    timer.heard("big")                      # a report: an instance may run now
    assert ticks(timer, {"big": DEP}, 4.0, 5.0) == {"big": [4.0]}


def test_a_deployment_record_other_than_the_one_looked_at_makes_it_due():
    timer = RolloutTimer(tick=1.0)
    timer.looked("big", None, DEP)          # only an event moves it on
    assert ticks(timer, {"big": DEP}, 1.0, 5.0) == {}
    promoted = replace(DEP, promoted=True)  # ctl promote through another replica
    assert ticks(timer, {"big": promoted}, 5.0, 6.0) == {"big": [5.0]}


def test_a_big_job_is_still_looked_at_no_more_often_than_its_size_allows():
    timer = RolloutTimer(tick=1.0)
    seen = ticks(timer, {"big": DEP}, 1.0, 21.0, size=lambda job: 50_000)
    assert seen == {"big": [5.0, 10.0, 15.0, 20.0]}


def test_a_report_that_matters_later_moves_the_wake_no_further_than_then():
    timer = RolloutTimer(tick=1.0)
    timer.looked("big", 30.0, DEP)
    timer.heard("big", 12.0)                # an instance running since 2 s, min_healthy_time 10 s
    timer.heard("big", 40.0)                # one that matters later changes nothing
    assert ticks(timer, {"big": DEP}, 1.0, 13.0) == {"big": [12.0]}


def test_between_ticks_only_a_rollout_whose_look_may_be_narrow_is_due_and_more_often():
    """A narrow look judges only what came due (tests/scheduler/test_look_again.py): it is asked
    for at any evaluation, a quarter of a second apart at most; a whole one only once a tick, and
    no more often than the job's size allows, as before."""
    timer = RolloutTimer(tick=1.0)
    other = replace(DEP, job="other")
    timer.looked("big", 10.0, DEP, {"big.g.0-1": (10.0, True)})     # may be narrow
    timer.looked("other", 10.0, other)                              # must be whole
    rolling = {"big": DEP, "other": other}
    assert timer.due(10.1, rolling, lambda job: 50_000, whole=False) == {"big"}
    assert timer.due(10.2, rolling, lambda job: 50_000, whole=False) == set()
    assert timer.due(10.4, rolling, lambda job: 50_000, whole=False) == {"big"}
    assert timer.due(11.0, rolling, lambda job: 50_000) == {"big", "other"}
    assert timer.due(12.0, rolling, lambda job: 50_000) == {"big"}   # 50,000: every 5 s
    assert timer.due(16.0, rolling, lambda job: 50_000) == {"big", "other"}


IDS = [f"big.g.{i}-1" for i in range(40)]
times = st.floats(0.0, 20.0, allow_nan=False)
put = st.tuples(st.just("put"), st.dictionaries(st.sampled_from(IDS), st.tuples(times, st.booleans()), max_size=40))
lower = st.tuples(st.just("lower"), st.sampled_from(IDS), times)
take = st.tuples(st.just("take"), times)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(put, lower, take, take), max_size=30))
def test_waiting_hands_over_exactly_those_whose_time_came(ops):
    """Waiting against a plain dict id -> (time, placed): through any puts, lowerings and takes
    (down to a few of many, where it makes its dict anew), a take hands over every instance
    whose time came by then, each with whether it was placed, and the earliest time of the rest."""
    waiting, truth = Waiting({}), {}
    for op in ops:
        if op[0] == "put":
            waiting.put(op[1])
            truth.update(op[1])
        elif op[0] == "lower":
            waiting.lower(op[1], op[2])
            if op[1] in truth and op[2] < truth[op[1]][0]:
                truth[op[1]] = (op[2], truth[op[1]][1])
        else:
            due, rest_at = waiting.take(op[1])
            assert sorted(due) == sorted((i, placed) for i, (at, placed) in truth.items() if at <= op[1])
            truth = {i: v for i, v in truth.items() if v[0] > op[1]}
            assert rest_at == min((at for at, _ in truth.values()), default=None)
        assert {i for i in IDS if i in waiting} == truth.keys()
