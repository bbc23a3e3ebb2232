"""The cost of one look at a big rolling job (issue 12), in process: no etcd, no agents.

    python bench/look.py [--instances 20000] [--looks 15]
    python bench/look.py --trees main=/path/to/main branch=. 1cab3bd=/path/to/1cab3bd [--rounds 3]

A look is what the controller does when a rolling job falls due (scheduler/rollout_timer.py):
the job's entries from the cache (`ClusterState.job_entries`), then `reconcile` of the whole job
with its deployment record. The cache is filled as the watch fills it (records applied as etcd
events), then each look is timed on its own (CPU, process_time; a full collection before each, so
that one look does not pay for another's garbage). Cases, each over `--instances` instances on
`--hosts` nodes:
- `first`: a job's first deployment, every instance placed and reported running, none yet past
  min_healthy_time (what bench/scale.py's big job is while it is looked at);
- `half`: the same, half of them past min_healthy_time (and so healthy; the deployment record's
  healthy list holds the first 4,096 it saw, as ids: the untimed first look rewrites it the way
  the tree keeps it, which since scheduler/healthy_set.py is every healthy slot);
- `update`: version 2 rolling out with max_parallel 500: half the slots replaced and healthy, 480
  new instances waiting, the rest old and running (so the look replaces 20);
- `done`: the rollout successful, the job looked at again (an event): no deployment work.
- `tick`: `first`, looked at whole (its deployment record written), then looked at again on time
  alone a tick (1 s) later, as the controller does (the instances started 9-9.5 s ago have served
  min_healthy_time then: about 1 in 18). Where the tree has narrow looks (scheduler/reconciler.py
  `look_again`, issue 12), that look judges only those, as scheduler/rollout_timer.py hands them
  over; before, it is a whole look like `first`'s.
A tree without deployments (before issue 14) reconciles the same instances without a deployment
record; its `update` case has no rollout (the old instances are stopped at once) and is left out.

With `--trees`, each tree's own venv (`<tree>/.venv/bin/python`) runs this file against that
tree's code, the trees alternated round by round, and the medians of all rounds are printed
side by side with their ratio to the first tree.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import inspect
import json
import random
import statistics
import time

import sidebyside

CASES = ("first", "half", "update", "done", "tick")
JOB = "big"
NOW = 1_000_000.0


def job_yaml(count: int, memory: str = "64Mi", update: bool = True) -> str:
    # changed resources are a changed group (a new ghash): version 2 replaces every instance
    return (f"name: {JOB}\ngroups:\n  - name: g\n    count: {count}\n    kind: container\n"
            f"    resources: {{cpu: 0.25, memory: {memory}}}\n"
            + ("    update: {max_parallel: 500, min_healthy_time: 10s}\n" if update else ""))


def value(cls, **fields) -> bytes:
    """A record as etcd holds it, with only the fields this tree's record has."""
    names = {f.name for f in dataclasses.fields(cls)}
    return json.dumps({k: v for k, v in fields.items() if k in names}).encode()


class Cluster:
    """A ClusterState filled through `apply`, as the scheduler's watch fills it."""

    def __init__(self, hosts: int):
        from packyard import keys
        from packyard.etcd import Event
        from packyard.records import NodeRecord
        from scheduler.state import ClusterState
        self.keys, self.Event = keys, Event
        self.state = ClusterState()
        self.revision = 0
        self.nodes = [f"n{i:05d}" for i in range(hosts)]
        for n in self.nodes:
            self.put(keys.node(n), value(NodeRecord, name=n, address="127.0.0.1:1",
                                         capacity={"cpu_milli": 10**6, "memory_bytes": 10**12}))

    def put(self, key: str, raw: bytes, kind: str = "put") -> None:
        self.revision += 1
        self.state.apply(self.Event(kind, key, raw, self.revision))


def reconcile_kwargs(reconcile) -> set[str]:
    return set(inspect.signature(reconcile).parameters)


def build(case: str, instances: int, hosts: int, seed: int):
    """A cluster holding the case's job (and its deployment record): (cluster, job record, spec)."""
    from packyard import records
    from packyard.records import InstanceRecord, JobRecord, StateRecord
    from packyard.spec import load_yaml
    from scheduler.reconciler import group_hash, instance_id, reconcile
    rng = random.Random(seed)
    c = Cluster(hosts)
    has_deployments = "deployment" in reconcile_kwargs(reconcile)
    ready = set(c.nodes)

    def job_record(version: int, spec) -> JobRecord:
        raw = value(JobRecord, name=JOB, spec_json=spec.to_json(), version=version, deploy=True,
                    submitted_at=NOW - 60, updated_at=NOW - 60)
        c.put(c.keys.job(JOB), raw)
        return c.state.jobs[JOB]

    def place(rec: InstanceRecord, created_at: float, started_at: float | None) -> None:
        node = c.nodes[rec.index % hosts]
        fields = {f.name: getattr(rec, f.name) for f in dataclasses.fields(rec)}
        fields = {k: v for k, v in fields.items() if v not in ((), [], {}, None, "")}
        fields.update(node=node, reserved={"cpu_milli": 250, "memory_bytes": 64 << 20},
                      placed_at=created_at + 1, created_at=created_at)
        c.put(c.keys.instance(JOB, rec.id), value(InstanceRecord, **fields))
        if started_at is not None:
            c.put(c.keys.state(node, rec.id), value(StateRecord, id=rec.id, state="running",
                                                    updated_at=started_at, started_at=started_at))

    def made(job: JobRecord, spec, deployment=None):
        kw = {"deployment": deployment} if has_deployments else {}
        return reconcile(job, spec, c.state.job_entries(JOB), ready, NOW - 30, **kw)

    spec1 = load_yaml(job_yaml(instances, update=has_deployments))
    job1 = job_record(1, spec1)
    first = made(job1, spec1).create
    served = {"first": 0.0, "half": 0.5, "update": 1.0, "done": 1.0, "tick": 0.0}[case]
    healthy_ids = []
    for rec in first:
        # started 0.5-9.5 s ago (not yet 10 s), or 10.5-25 s ago (past min_healthy_time)
        old_enough = rng.random() < served
        started = NOW - (rng.uniform(10.5, 25) if old_enough else rng.uniform(0.5, 9.5))
        place(rec, NOW - 30, started)
        if old_enough:
            healthy_ids.append(rec.id)
    dep = None
    DeploymentRecord = getattr(records, "DeploymentRecord", None)
    if DeploymentRecord is None:
        pass                   # before issue 14: no rollouts
    elif case in ("first", "half", "tick"):
        dep = DeploymentRecord(job=JOB, version=1, target=1, started_at=NOW - 30, progress_at=NOW - 30,
                               description="rolling out version 1", healthy=healthy_ids[:4096])
    elif case == "done":
        dep = DeploymentRecord(job=JOB, version=1, target=1, rolling=False, state="successful",
                               started_at=NOW - 30, progress_at=NOW - 5, description="version 1 rolled out",
                               groups={"g": {"desired": instances, "placed": instances,
                                             "healthy": instances, "unhealthy": 0}},
                               healthy=healthy_ids[-4096:])
    else:                      # update: version 2, half the slots replaced, 500 in flight
        spec2 = load_yaml(job_yaml(instances, memory="96Mi"))
        job2 = job_record(2, spec2)
        dep = DeploymentRecord(job=JOB, version=2, target=2, started_at=NOW - 600, progress_at=NOW - 2,
                               description="rolling out version 2")
        ghash = group_hash(spec2.groups[0])
        slots = sorted(rng.sample(range(instances), instances // 2 + 500))
        waiting = set(rng.sample(slots, 480))      # 20 of max_parallel's 500 free: 20 replaced
        done = []
        for index in slots:
            old = c.state.instances[instance_id(JOB, "g", index, 1)].record
            c.put(c.keys.instance(JOB, old.id), b"", "delete")     # the old one ended, purged
            rec = records.evolve(old, id=instance_id(JOB, "g", index, 2), version=2, ghash=ghash,
                                 replaces=old.id)
            in_flight = index in waiting
            place(rec, NOW - 20, NOW - rng.uniform(0.5, 9.5) if in_flight else NOW - rng.uniform(11, 500))
            if not in_flight:
                done.append(rec.id)
        dep = dataclasses.replace(dep, healthy=done[-4096:])
        job1, spec1 = job2, spec2
    if dep is not None and has_deployments:
        c.put(c.keys.deployment(JOB), records.dumps(dep))
    return c, job1, spec1


def look(c: Cluster, job, spec, at: float = NOW):
    """What the controller's `reconcile_job` does for a job that fell due."""
    from scheduler.reconciler import reconcile
    kw = {}
    if "deployment" in reconcile_kwargs(reconcile):
        kw["deployment"] = c.state.deployments.get(JOB)
    if "eligible" in reconcile_kwargs(reconcile):
        kw["eligible"] = None
    t0 = time.process_time()
    entries = c.state.job_entries(JOB)
    t1 = time.process_time()
    result = reconcile(job, spec, entries, set(c.nodes), at, **kw)
    t2 = time.process_time()
    return (t1 - t0) * 1000, (t2 - t1) * 1000, result


def look_on_time(c: Cluster, job, spec, last, at: float):
    """The look the controller makes at `at` on time alone after the look `last` (its result):
    narrow where the tree has them (`look_again`, fed by RolloutTimer as `Controller._look_again`
    feeds it; the timer is filled untimed), else whole."""
    import scheduler.reconciler as reconciler
    if not hasattr(reconciler, "look_again") or last.waiting is None:
        return look(c, job, spec, at)
    from scheduler.rollout_timer import RolloutTimer
    timer = RolloutTimer(1.0)
    dep = c.state.deployments.get(JOB)
    timer.looked(JOB, last.wake_at, dep, last.waiting)
    t0 = time.process_time()
    due, rest_at = timer.narrow(JOB, dep, at)
    instances = c.state.instances
    entries = [(instances[iid], placed) for iid, placed in due]
    t1 = time.process_time()
    result = reconciler.look_again(job, spec, entries, set(c.nodes), at, dep, rest_at)
    t2 = time.process_time()
    assert result is not None
    return (t1 - t0) * 1000, (t2 - t1) * 1000, result


def measure(instances: int, hosts: int, looks: int, seed: int) -> dict:
    from scheduler.reconciler import reconcile
    out = {}
    for case in CASES:
        if case == "update" and "deployment" not in reconcile_kwargs(reconcile):
            continue
        c, job, spec = build(case, instances, hosts, seed)
        # the deployment record as the look before left it (the first look writes its counts)
        result = last = look(c, job, spec)[2]
        if getattr(result, "deployment", None) is not None:
            from packyard import records
            c.put(c.keys.deployment(JOB), records.dumps(result.deployment))
        entries_ms, reconcile_ms = [], []
        for _ in range(looks):
            gc.collect()
            e, r, result = look_on_time(c, job, spec, last, NOW + 1) if case == "tick" else look(c, job, spec)
            entries_ms.append(e)
            reconcile_ms.append(r)
        out[case] = {"entries_ms": statistics.median(entries_ms),
                     "reconcile_ms": statistics.median(reconcile_ms),
                     "look_ms": statistics.median(a + b for a, b in zip(entries_ms, reconcile_ms, strict=True)),
                     "create": len(result.create), "stop": len(result.stop),
                     "deployment": getattr(result, "deployment", None) is not None}
        del c
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=int, default=20_000)
    ap.add_argument("--hosts", type=int, default=1_000)
    ap.add_argument("--looks", type=int, default=15)
    ap.add_argument("--seed", type=int, default=1)
    sidebyside.add_arguments(ap)
    args = ap.parse_args()
    if args.trees:
        sidebyside.compare(__file__, args, ["instances", "hosts", "looks", "seed"],
                           f"one look at a {args.instances:,}-instance job, CPU ms ({args.looks} looks a round; "
                           "[the entries' part])", "look_ms", extra="entries_ms")
        return
    sidebyside.import_from(args)
    out = measure(args.instances, args.hosts, args.looks, args.seed)
    if args.json:
        print(json.dumps(out))
        return
    print(f"one look at a {args.instances:,}-instance job on {args.hosts:,} hosts, CPU ms (median of {args.looks}):")
    for case, v in out.items():
        print(f"  {case:7s} look {v['look_ms']:6.1f}  (entries {v['entries_ms']:5.1f}, reconcile "
              f"{v['reconcile_ms']:6.1f}); creates {v['create']}, stops {v['stop']}, "
              f"deployment written: {v['deployment']}")


if __name__ == "__main__":
    main()
