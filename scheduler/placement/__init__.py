"""packyard's placement engine: which host each instance of a group goes to, and why not.

    from scheduler.placement import Host, HostTable, GroupAsk, EngineConfig, Plan, place
    table = HostTable.from_hosts(hosts)
    results = place(table, asks, EngineConfig())         # list[GroupPlacement], table untouched
    plan = Plan(table, config); place(table, asks, plan=plan); plan.to_table()   # keep the reservations
    place(table, asks, config, running=[Running(...)])  # may evict lower priority: result.preemptions

README.md in this folder draws the pipeline.
"""
from scheduler.placement.asks import GroupAsk, GroupPlacement, Preemption, Running, Status
from scheduler.placement.config import POLICIES, EngineConfig
from scheduler.placement.engine import place, place_group
from scheduler.placement.filters import eligible
from scheduler.placement.mix import WorkloadMix, where_of
from scheduler.placement.plan import Plan
from scheduler.placement.table import Host, HostTable

__all__ = ["EngineConfig", "GroupAsk", "GroupPlacement", "Host", "HostTable", "POLICIES", "Plan",
           "Preemption", "Running", "Status", "WorkloadMix", "eligible", "place", "place_group", "where_of"]
