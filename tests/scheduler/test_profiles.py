import pytest

from packyard import records
from packyard.profiles import DEFAULTS, size_class
from packyard.records import ResourceAmounts, UsageRecord
from scheduler.profiles import LearnerConfig, ProfileLearner, percentile

MIB = 1 << 20


def usage(samples):
    """samples: [(instance id, guest MiB, overhead MiB)]"""
    return UsageRecord(node="n", at=0, instances={
        iid: {"kind": "vm", "request_memory_bytes": guest * MIB, "request_cpu_milli": 1000,
              "overhead_memory_bytes": int(over * MIB)} for iid, guest, over in samples})


@pytest.mark.parametrize("mib, cls", [(1, 64), (64, 64), (65, 128), (256, 256), (257, 512), (1024, 1024)])
def test_size_classes_are_powers_of_two(mib, cls):
    assert size_class(mib * MIB) == cls * MIB


def test_percentile_nearest_rank():
    assert percentile(list(range(1, 101)), 95) == 95 and percentile([7], 95) == 7


def test_no_samples_means_the_formula():
    learner = ProfileLearner()
    req = ResourceAmounts(cpu_milli=1000, memory_bytes=256 * MIB)
    assert learner.profiles()["vm"].overhead(req) == DEFAULTS["vm"].overhead(req)


def test_a_class_is_learned_from_p95_plus_margin_and_used_for_that_class_only():
    learner = ProfileLearner(config=LearnerConfig(min_samples=3, margin=0.1))
    learner.observe(usage([(f"v{i}", 256, 40 + i) for i in range(20)]))
    (cls,) = learner.classes("vm")
    assert (cls.size_class, cls.samples, cls.p50, cls.p95) == (256 * MIB, 20, 49 * MIB, 58 * MIB)
    assert cls.overhead_memory == -(-58 * MIB * 11 // 10)
    vm = learner.profiles()["vm"]
    assert vm.overhead(ResourceAmounts(1000, 200 * MIB)).memory_bytes == cls.overhead_memory
    other = ResourceAmounts(1000, 1024 * MIB)
    assert vm.overhead(other) == DEFAULTS["vm"].overhead(other)


def test_an_instance_counts_once_with_its_largest_overhead():
    learner = ProfileLearner(config=LearnerConfig(min_samples=1))
    for over in (30, 50, 45):
        learner.observe(usage([("v1", 256, over)]))
    (cls,) = learner.classes("vm")
    assert cls.samples == 1 and cls.p95 == 50 * MIB


def test_too_few_samples_are_not_trusted():
    learner = ProfileLearner(config=LearnerConfig(min_samples=3))
    learner.observe(usage([("a", 256, 40), ("b", 256, 41)]))
    assert learner.classes("vm") == ()


def test_samples_survive_a_round_trip_through_etcd_records():
    learner = ProfileLearner(config=LearnerConfig(min_samples=2))
    learner.observe(usage([("a", 256, 40), ("b", 256, 44), ("c", 512, 60), ("d", 512, 61)]))
    again = ProfileLearner(config=LearnerConfig(min_samples=2))
    again.load(records.dumps(learner.record("vm")))
    assert again.classes("vm") == learner.classes("vm")


def test_the_window_keeps_the_most_recent_instances():
    learner = ProfileLearner(config=LearnerConfig(min_samples=1, window=5))
    learner.observe(usage([(f"old{i}", 256, 100) for i in range(5)]))
    learner.observe(usage([(f"new{i}", 256, 40) for i in range(5)]))
    assert learner.classes("vm")[0].p95 == 40 * MIB
