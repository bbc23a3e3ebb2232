"""Where an automatic revert, or `ctl rollback` with no --version, goes (scheduler/versions.py
`way_back`, `revert_target`): pure, over the version records as etcd keeps them. Histories are
generated as the controller writes them: each version's deployment ends stable, failed, or is
superseded while rolling; a count-only change inherits the outcome of the version it scales."""
from hypothesis import given, settings
from hypothesis import strategies as st

from packyard.records import KEPT_VERSIONS, VersionRecord
from scheduler.versions import forgotten, revert_target, way_back

STABLE, FAILED, SUPERSEDED, COUNT_ONLY = "stable", "failed", "superseded", "count-only"


def history(steps: list[tuple[str, int]]) -> dict[int, VersionRecord]:
    """Version records for `steps`: (how its deployment ended, or COUNT_ONLY; which of a few
    specs it runs), the oldest forgotten as the controller forgets them."""
    kept: dict[int, VersionRecord] = {}
    for n, (outcome, spec) in enumerate(steps, 1):
        before = kept.get(n - 1)
        if outcome == COUNT_ONLY and before is not None:
            stable, failed = before.stable, before.failed
            spec_json = before.spec_json + f" count {n}"
        else:
            stable, failed = outcome == STABLE, outcome == FAILED
            spec_json = f"spec {spec}"
        kept[n] = VersionRecord(job="shop", version=n, spec_json=spec_json, stable=stable, failed=failed)
        for old in forgotten(kept, n):
            del kept[old]
    return kept


steps = st.lists(st.tuples(st.sampled_from([STABLE, FAILED, SUPERSEDED, COUNT_ONLY]), st.integers(0, 3)),
                 min_size=1, max_size=14)


@settings(max_examples=400, deadline=None)
@given(steps)
def test_the_target_is_the_newest_stable_version_else_the_replaced_one_unless_it_failed(steps):
    kept = history(steps)
    current = len(steps)
    way = way_back(kept, current)
    stable = [n for n, v in kept.items() if n < current and v.stable]
    replaced = kept.get(current - 1)
    if stable:
        assert way.target is kept[max(stable)], way
    elif replaced is not None and not replaced.failed:
        assert way.target is replaced, way
    else:
        assert way.target is None, way
        assert way.nowhere.startswith(f"no stable version before version {current}, and "), way.nowhere
    if way.target is not None:
        assert way.target.version < current and not way.target.failed


@settings(max_examples=300, deadline=None)
@given(steps)
def test_a_revert_never_goes_to_the_spec_that_failed(steps):
    kept = history(steps)
    current = len(steps)
    way, revert = way_back(kept, current), revert_target(kept, current)
    same = way.target is not None and current in kept and way.target.spec_json == kept[current].spec_json
    assert revert.target is (None if same else way.target)
    assert revert.same_spec == same
    if same:
        assert revert.nowhere == f"version {way.target.version}, where it would go, has the same spec"


def target(*outcomes: str) -> int | None:
    """The revert target after `outcomes` (each version a different spec), the last failing."""
    kept = history([(o, n) for n, o in enumerate(outcomes)])
    way = revert_target(kept, len(outcomes))
    return way.target.version if way.target is not None else None


def test_chains():
    # the sequence users run: v1 submitted --wait (running, not yet stable), v2 fails
    assert target(SUPERSEDED, FAILED) == 1
    # v1 superseded by v2 superseded by v3 failing: one version back, to v2
    assert target(SUPERSEDED, SUPERSEDED, FAILED) == 2
    # a stable version anywhere before wins over the replaced one
    assert target(STABLE, SUPERSEDED, SUPERSEDED, FAILED) == 1
    assert target(STABLE, FAILED, FAILED) == 1
    # a version whose deployment failed is never a target, not even to step past it
    assert target(SUPERSEDED, FAILED, FAILED) is None
    # ... nor a count-only change of one
    assert target(SUPERSEDED, FAILED, COUNT_ONLY, FAILED) is None
    # a count-only change of a version superseded while rolling is as good as that version
    assert target(SUPERSEDED, COUNT_ONLY, FAILED) == 2
    # a job's first version failing has nothing to go back to
    assert target(FAILED) is None
    # v2 failed and was reverted as v3 (v1's spec); v3, superseded by v4 while rolling back, is
    # v4's way back; had v3's rollback failed, there would be none
    assert target(SUPERSEDED, FAILED, SUPERSEDED, FAILED) == 3
    assert target(SUPERSEDED, FAILED, FAILED, FAILED) is None


def test_what_a_refusal_and_a_description_say():
    kept = history([(SUPERSEDED, 0), (FAILED, 1), (FAILED, 2)])
    assert way_back(kept, 3).nowhere == ("no stable version before version 3, and the deployment of "
                                         "version 2, which it replaced, failed")
    assert way_back(history([(FAILED, 0)]), 1).nowhere == (
        "no stable version before version 1, and it is the job's first version")
    # a job stopped and submitted again as it was: the same spec is no way back
    same = history([(SUPERSEDED, 0), (FAILED, 0)])
    assert way_back(same, 2).target is same[1]
    assert revert_target(same, 2).target is None


def test_only_the_last_versions_are_kept_and_a_forgotten_one_is_no_target():
    kept = history([(SUPERSEDED, n % 4) for n in range(KEPT_VERSIONS + 3)] + [(FAILED, 9)])
    current = KEPT_VERSIONS + 4
    assert way_back(kept, current).target is kept[current - 1]
    assert way_back(kept, min(kept)).nowhere.endswith(f"version {min(kept) - 1} is not kept")
