"""Dispatch against a fake agent client: what is sent, to whom, when it is said again."""
from packyard.records import evolve
from scheduler.dispatch import DispatchConfig, Dispatcher
from scheduler.specs import SpecCache
from tests.scheduler.cache import CacheBuilder
from tests.scheduler.fake_agents import FakeAgentClients


class Clock:
    def __init__(self, now: float = 100.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def placed(cache: CacheBuilder, job: str, nodes: list[str], gpus=None, **kw):
    out = []
    for r, node in zip(cache.job(job, count=len(nodes), **kw), nodes, strict=True):
        out.append(cache.instance(evolve(r, node=node, placed_at=100.0, gpus=list(gpus or []),
                                         reserved={"cpu_milli": 500, "memory_bytes": 256 << 20})))
    return out


def dispatcher(cache, agents, clock, **config) -> Dispatcher:
    return Dispatcher(agents, cache.state, SpecCache(), DispatchConfig(**config), clock)


async def test_starts_are_batched_per_node_with_the_specs_epoch_and_gpus():
    cache = CacheBuilder().node("a", gpu=2).node("b")
    recs = placed(cache, "web", ["a", "a", "b"], gpus=[1])
    agents, clock = FakeAgentClients(), Clock()
    d = dispatcher(cache, agents, clock)
    d.start(recs)
    await agents.settle()
    calls = {node: (sorted(s.id for s in specs), epoch) for node, specs, epoch in agents.starts}
    assert calls == {"a": (sorted(r.id for r in recs[:2]), 7), "b": ([recs[2].id], 7)}
    spec = agents.starts[0][1][0]
    assert list(spec.gpus) == [1] and spec.limit.cpu_milli == 500 and spec.job == "web"
    assert set(d.accepted) == {(r.id, r.node) for r in recs}


async def test_resources_disk_reaches_the_agent_as_the_requests_disk_bytes():
    """The agent holds a container to it (issue 15: evicted over it); unset is 0, unlimited."""
    cache = CacheBuilder().node("a")
    (limited,) = placed(cache, "web", ["a"], disk="8Mi")
    (free,) = placed(cache, "api", ["a"])
    d = dispatcher(cache, FakeAgentClients(), Clock())
    assert d.instance_spec(limited).request.disk_bytes == 8 << 20
    assert d.instance_spec(free).request.disk_bytes == 0


async def test_an_unanswered_start_is_said_again_later_and_later_while_the_node_stays_silent():
    cache = CacheBuilder().node("a")
    (rec,) = placed(cache, "web", ["a"])
    agents, clock = FakeAgentClients(down={"a"}), Clock()
    d = dispatcher(cache, agents, clock, resend_after=2.0)
    d.start([rec])
    await agents.settle()
    waits = []
    for _ in range(4):
        t0 = clock.now
        while not d.scan(clock.now, confirm_timeout=1e9).starts:
            clock.now += 0.5
        waits.append(clock.now - t0)
        d.resend(clock.now, d.scan(clock.now, confirm_timeout=1e9))
        await agents.settle()
    assert waits == sorted(waits) and waits[-1] >= 4 * waits[0]      # backoff doubles
    agents.down.clear()
    while not d.scan(clock.now, confirm_timeout=1e9).starts:
        clock.now += 0.5
    d.resend(clock.now, d.scan(clock.now, confirm_timeout=1e9))
    await agents.settle()
    assert [node for node, _, _ in agents.starts] == ["a"]


async def test_a_report_settles_an_instance_and_nothing_is_said_again():
    cache = CacheBuilder().node("a")
    (rec,) = placed(cache, "web", ["a"])
    agents, clock = FakeAgentClients(), Clock()
    d = dispatcher(cache, agents, clock)
    d.start([rec])
    await agents.settle()
    cache.report("a", rec.id, "running")
    clock.now += 60
    scanned = d.scan(clock.now, confirm_timeout=15)
    assert not scanned.starts and not scanned.overdue_jobs


async def test_an_unconfirmed_instance_past_the_timeout_marks_its_job_overdue():
    cache = CacheBuilder().node("a")
    (rec,) = placed(cache, "web", ["a"])
    d = dispatcher(cache, FakeAgentClients(), Clock())
    assert d.scan(110.0, confirm_timeout=15).overdue_jobs == frozenset()
    assert d.scan(116.0, confirm_timeout=15).overdue_jobs == {"web"}


async def test_strays_and_what_the_inventory_shows_unplaced_are_stopped():
    cache = CacheBuilder().node("a").node("b")
    (rec,) = placed(cache, "web", ["a"])
    cache.report("a", rec.id, "running")
    cache.report("b", rec.id, "running")             # a copy on b: a stray
    agents, clock = FakeAgentClients(running={"a": [rec.id, "ghost.g.0-1"], "b": [rec.id]}), Clock()
    d = dispatcher(cache, agents, clock, audit_every=1.0, tick=1.0)
    d.leading_from(0.0)
    d.resend(clock.now, d.scan(clock.now, confirm_timeout=15))
    await agents.settle()
    stopped = {(node, i) for node, ids in agents.stops for i in ids}
    assert ("b", rec.id) in stopped and ("a", "ghost.g.0-1") in stopped
    assert ("a", rec.id) not in stopped


async def test_no_audit_in_the_first_seconds_of_a_leadership():
    cache = CacheBuilder().node("a")
    agents, clock = FakeAgentClients(running={"a": ["ghost.g.0-1"]}), Clock()
    d = dispatcher(cache, agents, clock, audit_every=1.0)
    d.leading_from(clock.now - 1.0)
    d.audit(clock.now)
    await agents.settle()
    assert not agents.stops


async def test_the_agent_is_told_the_policies_in_force_defaults_filled_in():
    cache = CacheBuilder().node("a")
    (plain,) = placed(cache, "plain", ["a"])
    (web,) = placed(cache, "web", ["a"], restart={"attempts": 5, "delay": "2s"},
                    check={"type": "http", "port": 8080, "path": "/healthz"})
    agents = FakeAgentClients()
    d = dispatcher(cache, agents, Clock())
    d.start([plain, web])
    await agents.settle()
    specs = {s.job: s for _, sent, _ in agents.starts for s in sent}
    p, w = specs["plain"], specs["web"]
    assert p.job_type == "service" and not p.HasField("check")
    assert (p.restart.attempts, p.restart.interval_seconds, p.restart.delay_seconds, p.restart.mode) == (
        2, 1800.0, 15.0, "fail")                                    # the service defaults
    assert (w.restart.attempts, w.restart.interval_seconds, w.restart.delay_seconds) == (5, 1800.0, 2.0)
    assert (w.check.type, w.check.port, w.check.path, w.check.interval_seconds, w.check.failures) == (
        "http", 8080, "/healthz", 10.0, 3)


async def test_accepted_instances_are_kept_by_the_records_own_ids():
    """An accepted pair holds the id string of the record told, not the reply's copy of it (one
    string an instance in flight, not two: README, issue 12)."""
    cache = CacheBuilder().node("a").node("b")
    recs = placed(cache, "web", ["a", "b", "a", "b"])
    agents = FakeAgentClients()
    d = dispatcher(cache, agents, Clock())
    d.start(recs)
    await agents.settle()
    ids = {i for i, _ in d.accepted}
    assert ids == {r.id for r in recs}
    assert all(any(i is r.id for r in recs) for i in ids)


async def test_times_told_long_ago_go_and_those_instances_are_said_again_the_recent_ones_not():
    """The dispatcher forgets when it told an instance once that is resend_after old (such an
    instance is said again as one never told); one told since is not said again early."""
    cache = CacheBuilder().node("a").node("b")
    nodes = ["a", "b"] * 800
    early, late = placed(cache, "web", nodes), placed(cache, "api", nodes)
    agents, clock = FakeAgentClients(), Clock(100.0)
    d = dispatcher(cache, agents, clock, resend_after=2.0, resend_after_accepted=8.0)
    d.start(early)
    await agents.settle()
    clock.now = 120.0
    d.start(late)
    await agents.settle()
    clock.now = 121.0
    d.stop_strays(clock.now)            # where the times are pruned
    again = {r.id for r in d.scan(clock.now, confirm_timeout=1e9).starts}
    assert again == {r.id for r in early}
    clock.now = 130.5                  # the accepted ones: resend_after_accepted + resend_after
    assert {r.id for r in d.scan(clock.now, confirm_timeout=1e9).starts} == {r.id for r in early + late}
