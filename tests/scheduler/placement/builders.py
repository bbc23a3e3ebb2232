"""Builders for placement tests: hosts and asks in a line each, with readable defaults."""
from __future__ import annotations

from packyard.records import ResourceAmounts
from packyard.spec import Affinity, Constraint, Spread
from scheduler.placement import GroupAsk, Host, HostTable

GIB = 1 << 30
MIB = 1 << 20


def res(cpu: int = 0, mem_gib: float = 0, disk_gib: float = 0, gpu: int = 0) -> ResourceAmounts:
    """cpu in milli-cores, memory and disk in GiB, gpu in milli-GPUs."""
    return ResourceAmounts(cpu, int(mem_gib * GIB), int(disk_gib * GIB), gpu)


def host(name: str, cpu: int = 4000, mem_gib: float = 16, disk_gib: float = 100, gpu: int = 0, *,
         used: ResourceAmounts | None = None, ready: bool = True, drivers: str = "container vm",
         labels: dict[str, str] | None = None, **attributes: str) -> Host:
    attrs = {f"driver.{d}": "ok" for d in drivers.split()}
    attrs.update({k.replace("_", "."): v for k, v in attributes.items()})
    return Host(name, res(cpu, mem_gib, disk_gib, gpu), used or ResourceAmounts(), ready,
                labels or {}, attrs)


def table(*hosts: Host) -> HostTable:
    return HostTable.from_hosts(hosts)


def ask(count: int = 1, cpu: int = 100, mem_mib: int = 64, *, gpu: int = 0, disk_gib: float = 0,
        kind: str = "container", group: str = "web", constraints: list[Constraint] | None = None,
        distinct: bool = False, existing: tuple[str, ...] = (), spread: list[Spread] | None = None,
        affinity: list[Affinity] | None = None, priority: int = 50, job: str = "shop") -> GroupAsk:
    return GroupAsk(job=job, group=group, count=count, kind=kind, priority=priority,
                    request=ResourceAmounts(cpu, mem_mib * MIB, int(disk_gib * GIB), gpu),
                    constraints=constraints or [], distinct_hosts=distinct, existing_hosts=existing,
                    spread=spread or [], affinity=affinity or [])


def con(attribute: str, operator: str = "=", value: str | list[str] | None = None) -> Constraint:
    return Constraint(attribute=attribute, operator=operator, value=value)


def spread(attribute: str = "label.zone", weight: int = 50) -> Spread:
    return Spread(attribute=attribute, weight=weight)


def aff(attribute: str, operator: str = "=", value: str | list[str] | None = None, *,
        weight: int) -> Affinity:
    return Affinity(attribute=attribute, operator=operator, value=value, weight=weight)
