"""Issue 14's spec: the `update` block, its defaults, and the errors that name the field."""
import pytest

from packyard import spec, update
from packyard.policies import UpdatePolicy
from tests.packyard.test_lifecycle_spec import PLAIN, errors_of, with_group_lines

ISSUE_EXAMPLE = with_group_lines(
    "update: {max_parallel: 1, min_healthy_time: 5s, healthy_deadline: 60s, progress_deadline: 5m, "
    "auto_revert: true, canary: 0, auto_promote: false}")


def policy_of(text: str) -> UpdatePolicy:
    return update.update_policy(spec.load_yaml(text).groups[0].update)


def test_the_issue_example_and_the_defaults():
    assert policy_of(ISSUE_EXAMPLE) == UpdatePolicy(1, 5.0, 60.0, 300.0, True, 0, False)
    # a group without the block is rolled one at a time too
    assert policy_of(PLAIN) == UpdatePolicy(1, 10.0, 300.0, 600.0, False, 0, False)
    assert policy_of(with_group_lines("update: {canary: 2}")).max_parallel == 1


@pytest.mark.parametrize("written", ["0s", "0", "0ms"])
def test_min_healthy_time_may_be_0_as_in_nomad(written):
    """Not a deadline: 0 means healthy once running (its check passing), as Nomad and Kubernetes'
    minReadySeconds allow."""
    assert policy_of(with_group_lines(f"update: {{min_healthy_time: {written}}}")).min_healthy_time == 0.0


def test_the_block_is_stored_as_written_and_left_out_when_absent():
    assert '"update"' not in spec.load_yaml(PLAIN).to_json()
    stored = spec.load_yaml(with_group_lines("update: {max_parallel: 3}")).to_json()
    assert '"update":{"max_parallel":3}' in stored
    assert spec.load_json(stored).to_json() == stored


@pytest.mark.parametrize("block, error", [
    ("{max_parallel: 0}", "groups[0].update.max_parallel: input should be greater than or equal to 1"),
    ("{canary: -1}", "groups[0].update.canary: input should be greater than or equal to 0"),
    ("{min_healthy_time: -1s}", "groups[0].update.min_healthy_time: '-1s' is negative"),
    ("{healthy_deadline: -5s}", "groups[0].update.healthy_deadline: "),
    ("{progress_deadline: 1m, healthy_deadline: 2m}",
     "groups[0].update.healthy_deadline: 2m is longer than progress_deadline (1m)"),
    ("{healthy_deadline: 20m}", "groups[0].update.healthy_deadline: 20m is longer than progress_deadline (10m)"),
    ("{min_healthy_time: 1m, healthy_deadline: 1m}",
     "groups[0].update.min_healthy_time: 1m is not shorter than healthy_deadline (1m)"),
    ("{auto_promote: true}", "groups[0].update.auto_promote: promotes canaries, and canary is 0"),
    ("{max_paralel: 2}", "groups[0].update.max_paralel: unknown field"),
    ("{max_parallel: two}", "groups[0].update.max_parallel: "),
])
def test_bad_update_blocks_name_the_field(block, error):
    errors = errors_of(with_group_lines(f"update: {block}"))
    assert len(errors) == 1 and errors[0].startswith(error), errors


def test_a_batch_job_is_not_rolled():
    assert errors_of(with_group_lines("update: {max_parallel: 2}", job_type="batch")) == [
        "groups[0].update: batch instances run to completion and are not rolled; leave update out"]


def test_changing_only_the_update_block_replaces_nothing():
    from scheduler.reconciler import group_hash
    plain = spec.load_yaml(PLAIN).groups[0]
    rolled = spec.load_yaml(with_group_lines("update: {max_parallel: 3, canary: 1}")).groups[0]
    assert group_hash(plain) == group_hash(rolled)
