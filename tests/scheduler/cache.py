"""Builders of a scheduler cache (`ClusterState`) from the events etcd would send, for unit tests
of what reads it (placing, dispatch) without etcd, agents or a clock."""
from __future__ import annotations

from itertools import count

from packyard import keys, records
from packyard.etcd import Event
from packyard.records import InstanceRecord, JobRecord, NodeRecord, StateRecord
from packyard.spec import validate
from scheduler.placing import Placer
from scheduler.reconciler import reconcile
from scheduler.specs import SpecCache
from scheduler.state import ClusterState

GiB = 1 << 30


class CacheBuilder:
    def __init__(self) -> None:
        self.state = ClusterState()
        self._revision = count(1)

    def _put(self, key: str, value: bytes) -> None:
        self.state.apply(Event("put", key, value, next(self._revision)))

    def node(self, name: str, cpu: int = 4000, memory: int = 8 * GiB, gpu: int = 0,
             labels: dict | None = None, attributes: dict | None = None,
             images: list[dict] | None = None) -> CacheBuilder:
        self._put(keys.node(name), records.dumps(NodeRecord(
            name=name, address=f"127.0.0.1:{1000 + len(self.state.nodes)}",
            capacity={"cpu_milli": cpu, "memory_bytes": memory, "gpu_milli": gpu * 1000},
            labels=labels or {}, epoch=7,
            attributes={"driver.container": "ok", "driver.vm": "ok"} if attributes is None else attributes,
            images=images or [])))
        return self

    def job(self, name: str, count: int = 1, cpu: str = "500m", memory: str = "256Mi",
            priority: int = 50, gpu: float | None = None, job_type: str = "service",
            disk: str | None = None, **group) -> list[InstanceRecord]:
        """A submitted job: its record and its new (pending) instances, as `submit` writes them."""
        resources = {"cpu": cpu, "memory": memory} | ({"gpu": gpu} if gpu is not None else {}) \
            | ({"disk": disk} if disk is not None else {})
        spec = validate({"name": name, "priority": priority, "type": job_type, "groups": [
            {"name": "g", "resources": resources, **group} | ({} if job_type == "system" else {"count": count})]})
        job = JobRecord(name=name, spec_json=spec.to_json(), submitted_at=len(self.state.jobs))
        self._put(keys.job(name), records.dumps(job))
        eligible = Placer(self.state, SpecCache()).eligible(spec)
        result = reconcile(job, spec, [], set(self.state.nodes), 0.0, eligible=eligible)
        for r in result.create:
            self.instance(r)
        return list(result.create)

    def instance(self, r: InstanceRecord) -> InstanceRecord:
        self._put(keys.instance(r.job, r.id), records.dumps(r))
        return r

    def report(self, node: str, iid: str, state: str) -> None:
        self._put(keys.state(node, iid), records.dumps(StateRecord(id=iid, state=state)))
