"""Measuring what runs here: every few seconds, each instance's cpu, memory, OOM kills, disk (a
container's writable layer and logs) and a VM's real overhead from its driver, plus the machine's
cpu, memory and load. An instance whose disk is over its resources.disk is evicted (agent/eviction.py)
by the InstanceManager, its end then handled as any other failure. The latest sample goes to
etcd under the agent's lease (one key per node, no history) for the scheduler — `ctl nodes` usage
and the learned overhead profiles — and to Prometheus through a collector reading the same sample.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from agent import eviction, memory
from agent.manager import InstanceManager
from packyard import keys, records
from packyard.etcd import Etcd, Outage
from packyard.records import InstanceUsage, UsageRecord

log = logging.getLogger(__name__)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float:
    """Busy cpu seconds of the whole machine since boot (all cpus, from /proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


def machine_memory_used() -> int:
    info = {}
    with open("/proc/meminfo") as f:
        for line in f:
            name, value = line.split(":", 1)
            info[name] = int(value.split()[0]) * 1024
    return info["MemTotal"] - info.get("MemAvailable", info.get("MemFree", 0))


def load1() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


class UsageCollector:
    def __init__(self, etcd: Etcd, node: str, manager: InstanceManager, interval: float = 5.0):
        self.etcd = etcd
        self.node = node
        self.manager = manager
        self.interval = interval
        self.latest: UsageRecord | None = None
        self.cpu_seconds: dict[str, float] = {}     # instance -> cumulative, for Prometheus
        self._prev: dict[str, tuple[float, float]] = {}   # instance -> (cpu seconds, at)
        self._machine_prev: tuple[float, float] | None = None

    async def sample(self) -> UsageRecord:
        """Measure every instance (and the machine); an instance over its resources.disk is handed
        to the manager to evict as it is measured, so that its kill waits for no publication."""
        now = time.monotonic()
        instances: dict[str, dict] = {}
        for iid, t in list(self.manager.instances.items()):
            if t.handle is None:
                continue
            run = t.run           # the run measured: a kill must not reach the next one
            try:
                stats = await self.manager.drivers[t.spec.kind].stats(t.handle)
            except Exception as e:   # it may have just ended: the next sample will not have it
                log.debug("stats of %s failed: %s", iid, e)
                continue
            prev = self._prev.get(iid)
            rate = 0
            if prev and now > prev[1]:
                rate = int(max(0.0, stats.cpu_seconds - prev[0]) / (now - prev[1]) * 1000)
            self._prev[iid] = (stats.cpu_seconds, now)
            self.cpu_seconds[iid] = stats.cpu_seconds
            spec = t.spec
            instances[iid] = dataclasses.asdict(InstanceUsage(
                kind=spec.kind, cpu_milli=rate, memory_bytes=stats.memory_bytes, oom_kills=stats.oom_kills,
                request_cpu_milli=spec.request_cpu_milli or spec.cpu_milli,
                request_memory_bytes=spec.request_memory_bytes or spec.memory_bytes,
                overhead_memory_bytes=stats.overhead_memory_bytes, job=spec.job, group=spec.group,
                disk_bytes=stats.disk_bytes, request_disk_bytes=spec.disk_bytes))
            reason = eviction.over_disk(spec.disk_bytes, stats.disk_bytes)
            if reason:
                await self.manager.evict(iid, run, reason)
        for gone in set(self._prev) - set(instances):
            self._prev.pop(gone, None)
            self.cpu_seconds.pop(gone, None)
        busy = machine_cpu_seconds()
        machine_cpu = 0
        if self._machine_prev and now > self._machine_prev[1]:
            machine_cpu = int((busy - self._machine_prev[0]) / (now - self._machine_prev[1]) * 1000)
        self._machine_prev = (busy, now)
        host = {"cpu_milli": sum(u["cpu_milli"] for u in instances.values()),
                "memory_bytes": sum(u["memory_bytes"] for u in instances.values()),
                "machine_cpu_milli": machine_cpu, "machine_memory_bytes": machine_memory_used(),
                "load1": load1()}
        self.latest = UsageRecord(node=self.node, at=time.time(), host=host, instances=instances)
        return self.latest

    async def publish(self, lease_id: int | None) -> None:
        record = await self.sample()
        await self.etcd.put(keys.usage(self.node), records.dumps(record), lease=lease_id)

    async def run(self, lease) -> None:
        """`lease` returns the registration's current lease id (it changes if re-registered)."""
        outage = Outage(log, f"publishing the usage of node {self.node}")
        while True:
            try:
                await self.publish(lease())
            except Exception as e:   # etcd away, or a lease just replaced: the next sample goes
                outage.failed(e)
            else:
                outage.ok()
            memory.release_free_heap()      # what the sample and the work since the last one freed
            await asyncio.sleep(self.interval)

    # --- Prometheus: a collector over the latest sample ----------------------------------------
    def describe(self):
        return []

    def collect(self):
        u = self.latest
        # not "job" and "instance": Prometheus sets those on every target; ours would be renamed
        labels = ["node", "packyard_job", "packyard_group", "packyard_instance", "kind"]
        cpu = CounterMetricFamily("packyard_instance_cpu_seconds", "CPU time used by an instance.", labels=labels)
        mem = GaugeMetricFamily("packyard_instance_memory_bytes", "Memory used by an instance.", labels=labels)
        oom = CounterMetricFamily("packyard_instance_oom_kills", "OOM kills inside an instance.", labels=labels)
        disk = GaugeMetricFamily("packyard_instance_disk_bytes",
                                 "Disk an instance uses on its host: a container's writable layer and logs.",
                                 labels=labels)
        over = GaugeMetricFamily("packyard_instance_overhead_memory_bytes",
                                 "Measured memory an instance costs beyond its request (VMs).", labels=labels)
        host = GaugeMetricFamily("packyard_host_usage", "Measured usage of this host.", labels=["node", "resource"])
        # from the manager, not the sample: an instance waiting to be restarted has no usage
        restarts = CounterMetricFamily("packyard_instance_restarts",
                                       "Times an instance was restarted in place by its agent.", labels=labels)
        checks = CounterMetricFamily("packyard_instance_check_failures",
                                     "Failed probes of an instance's health check.", labels=labels)
        for iid, t in list(self.manager.instances.items()):
            values = [self.node, t.spec.job, t.spec.group, iid, t.spec.kind]
            restarts.add_metric(values, t.restarts)
            if t.spec.check is not None:
                checks.add_metric(values, t.check_failures)
        if u is not None:
            for iid, i in u.instances.items():
                values = [self.node, i["job"], i["group"], iid, i["kind"]]
                cpu.add_metric(values, self.cpu_seconds.get(iid, 0.0))
                mem.add_metric(values, i["memory_bytes"])
                oom.add_metric(values, i["oom_kills"])
                if i.get("disk_bytes") is not None:
                    disk.add_metric(values, i["disk_bytes"])
                if i.get("overhead_memory_bytes") is not None:
                    over.add_metric(values, i["overhead_memory_bytes"])
            for name, value in u.host.items():
                host.add_metric([self.node, name], value)
        return [cpu, mem, oom, disk, over, host, restarts, checks]
