"""Placing decides on the cache and returns a value: nothing is written, nothing called back."""
import copy

from packyard.records import evolve
from packyard.spec import validate
from scheduler import placement
from scheduler.placing import Placer
from scheduler.specs import SpecCache
from tests.scheduler.cache import CacheBuilder, GiB


def placer_of(cache: CacheBuilder, batch: int = 5000) -> Placer:
    return Placer(cache.state, SpecCache(), batch=batch)


def test_pending_instances_are_placed_as_updated_records_and_the_cache_is_left_alone():
    cache = CacheBuilder().node("a").node("b")
    pending = cache.job("web", count=3)
    before = {i: copy.deepcopy(e.record) for i, e in cache.state.instances.items()}
    decision = placer_of(cache).decide(placement.EngineConfig(), now=42.0)
    assert sorted(r.id for r in decision.placed) == sorted(r.id for r in pending)
    assert all(r.node in ("a", "b") and r.placed_at == 42.0 and r.attempts == 1 for r in decision.placed)
    assert all(r.reserved["cpu_milli"] == 500 for r in decision.placed)
    assert not decision.unplaced and not decision.evicted and not decision.more
    assert {i: e.record for i, e in cache.state.instances.items()} == before
    assert cache.state.pending_count() == 3


def test_what_fits_nowhere_stays_pending_with_the_reason_once():
    cache = CacheBuilder().node("a", memory=1 * GiB)
    cache.job("big", count=2, memory="2Gi")
    placer = placer_of(cache)
    decision = placer.decide(placement.EngineConfig(), now=1.0)
    assert not decision.placed and len(decision.unplaced) == 2
    assert all(r.reason.startswith("no host fits: 1 not enough memory") for r in decision.unplaced)
    for r in decision.unplaced:            # as if committed: the reason is not written again
        cache.instance(r)
    again = placer.decide(placement.EngineConfig(), now=2.0)
    assert not again.unplaced and again.results and again.results[0].unplaced == 2


def test_a_batch_bounds_one_decision_and_says_more_is_left():
    cache = CacheBuilder().node("a", cpu=64000, memory=64 * GiB)
    cache.job("many", count=10, cpu="100m", memory="64Mi")
    decision = placer_of(cache, batch=4).decide(placement.EngineConfig(), now=0.0)
    assert [r.index for r in decision.placed] == [0, 1, 2, 3] and decision.more


def test_higher_priority_is_placed_first_and_may_evict_lower_priority():
    cache = CacheBuilder().node("a", cpu=1000)
    (low,) = cache.job("low", cpu="1", priority=10)
    cache.instance(evolve(low, node="a", reserved={"cpu_milli": 1000, "memory_bytes": 256 << 20}))
    cache.report("a", low.id, "running")
    cache.job("high", cpu="1", priority=80)
    decision = placer_of(cache).decide(placement.EngineConfig(), now=0.0)
    (victim,) = decision.evicted
    assert victim.id == low.id and victim.desired == "stop" and "preempted by high" in victim.reason
    (placed,) = decision.placed
    assert placed.job == "high" and decision.evicted_for[placed.id] == (low.id,)


def test_gpu_devices_are_chosen_per_instance():
    cache = CacheBuilder().node("g", gpu=2)
    cache.job("halves", count=3, cpu="100m", memory="64Mi", gpu=0.5)
    decision = placer_of(cache).decide(placement.EngineConfig(), now=0.0)
    devices = sorted(d for r in decision.placed for d in r.gpus)
    assert len(decision.placed) == 3 and all(len(r.gpus) == 1 for r in decision.placed)
    assert sorted(devices.count(i) for i in (0, 1)) == [1, 2]


def test_plan_shows_what_a_submit_would_do_without_changing_anything():
    cache = CacheBuilder().node("a", cpu=2000)
    for r in cache.job("web", count=2, cpu="500m"):
        cache.instance(evolve(r, node="a", reserved={"cpu_milli": 500, "memory_bytes": 256 << 20}))
    placer = placer_of(cache)
    spec = placer.specs.of(cache.state.jobs["web"])
    bigger = spec.model_copy(update={"groups": [spec.groups[0].model_copy(update={"count": 5})]})
    from scheduler.reconciler import Config
    planned = placer.plan(bigger, 2, placement.EngineConfig(), 0.0, Config())
    actions = sorted((p.action, p.node) for p in planned)
    assert actions == [("keep", "a")] * 2 + [("place", "")] + [("place", "a")] * 2
    assert [p.reason for p in planned if p.action == "place" and not p.node][0].startswith("no host fits")
    assert cache.state.pending_count() == 0


def test_a_system_job_is_eligible_where_placement_would_allow_it_and_its_instances_are_pinned():
    cache = (CacheBuilder().node("a", labels={"os": "linux"}).node("b", labels={"os": "linux"})
             .node("c", labels={"os": "linux"}, attributes={"driver.container": "ok"}).node("d"))
    every = cache.job("agents", job_type="system", constraints=[{"attribute": "label.os", "value": "linux"}])
    assert [(r.index, r.pinned) for r in every] == [(0, "a"), (1, "b"), (2, "c")]    # not d: constraint
    vms = cache.job("guests", job_type="system", kind="vm", vm={"kernel": "/srv/vm/vmlinuz"})
    assert sorted(r.pinned for r in vms) == ["a", "b", "d"]                           # not c: no vm driver
    decision = placer_of(cache).decide(placement.EngineConfig(), now=0.0)
    assert sorted((r.job, r.node) for r in decision.placed) == sorted(
        [("agents", n) for n in "abc"] + [("guests", n) for n in "abd"])
    assert all(r.node == r.pinned for r in decision.placed)


def test_a_pinned_instance_is_placed_on_its_node_only_and_waits_there_when_it_is_full():
    cache = CacheBuilder().node("a", cpu=4000).node("small", cpu=500).node("b", cpu=4000)
    (_, _, on_small) = cache.job("agents", job_type="system", cpu="1")
    assert on_small.pinned == "small"
    decision = placer_of(cache).decide(placement.EngineConfig(), now=0.0)
    assert sorted((r.pinned, r.node) for r in decision.placed) == [("a", "a"), ("b", "b")]
    (waiting,) = decision.unplaced
    assert waiting.id == on_small.id and waiting.node == ""
    assert waiting.reason.startswith("no host fits: 2 constraint node.name = small, 1 not enough cpu")


def test_plan_of_a_system_job_shows_one_instance_per_eligible_node():
    from scheduler.reconciler import Config
    cache = CacheBuilder().node("a", labels={"zone": "x"}).node("b", labels={"zone": "x"}).node("c")
    placer = placer_of(cache)
    spec = validate({"name": "agents", "type": "system", "groups": [
        {"name": "g", "resources": {"cpu": "100m", "memory": "32Mi"},
         "constraints": [{"attribute": "label.zone", "value": "x"}]}]})
    planned = placer.plan(spec, 1, placement.EngineConfig(), 0.0, Config())
    assert sorted((p.action, p.record.pinned, p.node) for p in planned) == [("place", "a", "a"), ("place", "b", "b")]


def test_a_rollouts_replacement_waits_for_its_old_instance_then_goes_back_to_its_node():
    cache = CacheBuilder().node("a").node("b")
    old, other = cache.job("web", count=2)
    placed_old = cache.instance(evolve(old, node="b", reserved={"cpu_milli": 500, "memory_bytes": 256 << 20}))
    cache.instance(evolve(other, node="a", reserved={"cpu_milli": 500, "memory_bytes": 256 << 20}))
    cache.report("b", old.id, "running")
    cache.report("a", other.id, "running")
    cache.instance(evolve(placed_old, desired="stop"))
    new = cache.instance(evolve(old, id="web.g.0-2", replaces=old.id))
    filler = cache.instance(evolve(old, id="web.g.5-1", index=5))     # an ordinary one: packing picks a
    placer = placer_of(cache)
    decision = placer.decide(placement.EngineConfig(), now=1.0)
    assert [r.id for r in decision.placed] == [filler.id]             # the old one still holds its room
    assert next(r for r in decision.placed).node == "a"
    cache.report("b", old.id, "stopped")
    decision = placer.decide(placement.EngineConfig(), now=2.0)
    placed = {r.id: r.node for r in decision.placed}
    assert placed[new.id] == "b"                                       # back home, though packing prefers a


def test_a_registry_image_goes_where_the_job_already_pulled_it_among_equal_nodes():
    image = {"container": {"image": "127.0.0.1:5000/team/app:1"}}
    for with_image, want in [(True, "b"), (False, "a")]:
        cache = CacheBuilder().node("a").node("b")
        [other] = cache.job("other", count=1)
        cache.instance(evolve(other, node="a"))                       # a and b equally full
        first, second = cache.job("app", count=2, **(image if with_image else {}))
        cache.instance(evolve(first, node="b"))                        # b has pulled app's image
        decision = placer_of(cache).decide(placement.EngineConfig(), now=1.0)
        assert [(r.id, r.node) for r in decision.placed] == [(second.id, want)], with_image


def test_a_registry_image_goes_to_the_equal_node_whose_agent_reports_more_of_it():
    ref, digest = "127.0.0.1:5000/team/app:1", "sha256:" + "a" * 64
    small = [{"digest": "sha256:" + "b" * 64, "references": [ref], "bytes": 10 << 20}]   # an older app:1
    big = [{"digest": digest, "references": [ref], "bytes": 80 << 20}]
    for nodes, image, want in [
            ({"a": [], "b": [], "c": []}, ref, "a"),                 # no report: the packing's own first
            ({"a": [], "b": small, "c": big}, ref, "c"),             # both hold app:1; c more of it
            ({"a": [], "b": small, "c": big}, f"127.0.0.1:5000/team/app@{digest}", "c"),   # the pinned digest
            ({"a": [], "b": big, "c": []}, "127.0.0.1:5000/team/other:1", "a")]:        # not this image
        cache = CacheBuilder()
        for name, held in nodes.items():
            cache.node(name, images=held)
        [pending] = cache.job("app", count=1, container={"image": image})
        decision = placer_of(cache).decide(placement.EngineConfig(), now=1.0)
        assert [(r.id, r.node) for r in decision.placed] == [(pending.id, want)], (nodes, image)


def test_the_running_mix_says_which_gpu_work_is_restricted_to_which_hosts():
    """The scheduler gives the engine the mix of what runs (Placer.workload_mix): with the share
    of each shape's instances that their group's constraints restrict, so that the engine keeps
    those hosts' GPUs for them (placement/scarcity.reserved) as `packyard-bench pack` does."""
    attrs = {"driver.container": "ok", "driver.vm": "ok"}
    cache = CacheBuilder().node("t4", cpu=104000, memory=256 * GiB, gpu=4, attributes={**attrs, "gpu.model": "T4"})
    cache.node("g2", cpu=64000, memory=256 * GiB, gpu=8, attributes={**attrs, "gpu.model": "G2"})
    t4 = [{"attribute": "gpu.model", "value": "T4"}]
    for name, constraints, node in (("any", None, "g2"), ("mine", t4, "t4"), ("cpu", t4, "t4")):
        gpu = 0 if name == "cpu" else 1000
        for i, r in enumerate(cache.job(name, count=2, cpu="1", memory="1Gi", gpu=gpu / 1000 if gpu else None,
                                        **({"constraints": constraints} if constraints else {}))):
            cache.instance(evolve(r, node=node, reserved={"cpu_milli": 1000, "memory_bytes": GiB, "gpu_milli": gpu},
                                  gpus=[i] if gpu else []))
            cache.report(node, r.id, "running")
    placer = placer_of(cache)
    mix = placer.workload_mix()
    by_shape = {(int(c), int(g)): w for c, g, w in zip(mix.cpu, mix.gpu, mix.where, strict=True)}
    # the GPU shape: half its instances restricted to T4; the cpu-only group is not walked
    assert by_shape[(1000, 1000)] == {None: 0.5, (("gpu.model", "=", "T4"),): 0.5}
    assert by_shape[(1000, 0)] == {None: 1.0}
    # the engine keeps the T4's free GPUs for that work: all of them (half the GPU work, a third of
    # the free GPUs), none of G2's (what that does to decisions: placement/test_scarcity.py)
    table = placement.HostTable.from_hosts(placer.hosts())
    plan = placement.Plan(table, placement.EngineConfig(workload_mix=mix))
    assert dict(zip(table.names, plan.overlay.gpu_reserved.tolist(), strict=True)) == {"t4": 1.0, "g2": 0.0}
