"""Turning API replies into the JSON shapes of the CLI contract and into tables."""
from __future__ import annotations

import time

from packyard.quantity import format_bytes, format_cpu
from packyard.v1 import common_pb2, scheduler_pb2


def resources_json(r: common_pb2.Resources) -> dict:
    out = {"cpu": r.cpu_milli / 1000, "memory": r.memory_bytes}
    if r.disk_bytes:
        out["disk"] = r.disk_bytes
    if r.gpu_milli:
        out["gpu"] = r.gpu_milli / 1000
    return out


def instance_json(i: scheduler_pb2.Instance) -> dict:
    out = {"id": i.id, "group": i.group, "node": i.node, "state": i.state, "reason": i.reason,
           "kind": i.kind, "desired": i.desired, "address": i.address, "version": i.version,
           "reserved": resources_json(i.reserved)}
    out["exit_code"] = i.exit_code if i.has_exit_code else None
    out["restarts"] = i.restarts
    out["image_digest"] = i.image_digest or None
    out["health"] = i.health or "unknown"
    # "time": the word for it ("events with time and message"), beside "at", which came first
    out["events"] = [{"at": e.at, "time": e.at, "message": e.message} for e in i.events]
    return out


def status_json(s: scheduler_pb2.JobStatus) -> dict:
    return {"name": s.name, "state": s.state, "priority": s.priority, "version": s.version,
            "submitted_at": s.submitted_at, "instances": [instance_json(i) for i in s.instances],
            "deployment": deployment_json(s.deployment) if s.HasField("deployment") else None}


def deployment_json(d: scheduler_pb2.Deployment) -> dict:
    # target: the job version it rolls out (a revert's: the new one; 0 from an older scheduler:
    # its own); reverted_to: the version auto_revert goes back to, whose spec that is (None: none)
    return {"version": d.version, "state": d.state, "description": d.description, "started_at": d.started_at,
            "groups": {name: {"desired": g.desired, "placed": g.placed, "healthy": g.healthy,
                              "unhealthy": g.unhealthy} for name, g in sorted(d.groups.items())},
            "target": d.target or d.version, "reverted_to": d.reverted_to or None}


def deployment_line(d: scheduler_pb2.Deployment) -> str:
    """`deployment of version 3: running (rolling out version 3); web 1/3 healthy, 2 placed, 0 unhealthy`"""
    groups = "; ".join(f"{name} {g.healthy}/{g.desired} healthy, {g.placed} placed, {g.unhealthy} unhealthy"
                       for name, g in sorted(d.groups.items()))
    return f"deployment of version {d.version}: {d.state} ({d.description})" + (f"; {groups}" if groups else "")


def node_json(n: scheduler_pb2.Node) -> dict:
    return {"name": n.name, "state": n.state, "address": n.address, "labels": dict(n.labels),
            "capacity": resources_json(n.capacity), "allocated": resources_json(n.allocated),
            "usage": resources_json(n.usage), "instances": n.instances,
            "attributes": dict(n.attributes), "drivers": drivers_json(n.attributes),
            "images": [{"digest": i.digest, "references": list(i.references), "bytes": i.bytes} for i in n.images]}


def drivers_json(attributes) -> dict:
    """Each driver's health from the agent's fingerprint (`driver.<kind>`: "ok" or "unavailable: why")."""
    out = {}
    for name, value in sorted(attributes.items()):
        if name.startswith("driver.") and name.count(".") == 1:
            kind = name.split(".", 1)[1]
            out[kind] = {"healthy": True} if value == "ok" else \
                {"healthy": False, "reason": value.removeprefix("unavailable: ")}
    return out


def nodes_json(r: scheduler_pb2.NodesResponse) -> list[dict]:
    return [node_json(n) for n in r.nodes]


def jobs_json(r: scheduler_pb2.ListResponse) -> list[dict]:
    return [{"name": j.name, "state": j.state, "priority": j.priority, "version": j.version,
             "instances": dict(j.instances_by_state)} for j in r.jobs]


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def status_table(s: scheduler_pb2.JobStatus, wide: bool = False) -> str:
    counts: dict[str, int] = {}
    for i in s.instances:
        counts[i.state] = counts.get(i.state, 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    head = f"job {s.name} ({s.state}, version {s.version}, priority {s.priority}): {summary or 'no instances'}"
    if s.HasField("deployment"):
        head += "\n" + deployment_line(s.deployment)
    rows = []
    for i in s.instances:
        if i.desired == "stop" and i.state in ("stopped", "lost") and s.state == "running":
            continue  # replaced or scaled away: history, shown with -o json
        reason = i.reason
        if i.has_exit_code and i.state in ("exited", "failed"):
            reason = f"exit {i.exit_code}" + (f": {reason}" if reason and "exit status" not in reason else "")
        if i.events and i.state != "running" and i.events[-1].message not in reason:
            reason = f"{reason}; {i.events[-1].message}" if reason else i.events[-1].message
        # the image digest it runs (issue 16: a tag resolved once, at its pull), registry images only
        extra = [i.kind or "-", str(i.version), _cpu_mem(i.reserved), i.image_digest or "-"] if wide else []
        rows.append([i.id, i.group, i.node or "-", i.state, str(i.restarts), i.health or "unknown",
                     i.address or "-", *extra, reason])
    headers = ["ID", "GROUP", "NODE", "STATE", "RESTARTS", "HEALTH", "ADDRESS"]
    headers += ["KIND", "VERSION", "RESERVED", "IMAGE"] if wide else []
    return head + "\n" + table([*headers, "REASON"], rows)


def _cpu_mem(r: common_pb2.Resources) -> str:
    return f"{format_cpu(r.cpu_milli)}/{format_bytes(r.memory_bytes)}"


SUMMARY_OVER = 50   # instances: beyond this `ctl status` summarises unless --all


def status_text(s: scheduler_pb2.JobStatus, list_all: bool = False, wide: bool = False) -> str:
    """The instance table, or for a big job (100,000 instances) a summary by group and state."""
    return status_table(s, wide) if list_all or len(s.instances) <= SUMMARY_OVER else status_summary(s)


def status_summary(s: scheduler_pb2.JobStatus) -> str:
    counts: dict[tuple[str, str], int] = {}
    by_state: dict[str, int] = {}
    reasons: dict[tuple[str, str], int] = {}
    for i in s.instances:
        counts[(i.group, i.state)] = counts.get((i.group, i.state), 0) + 1
        by_state[i.state] = by_state.get(i.state, 0) + 1
        if i.reason and i.state not in ("running", "stopped"):
            reasons[(i.state, i.reason)] = reasons.get((i.state, i.reason), 0) + 1
    head = (f"job {s.name} ({s.state}, version {s.version}, priority {s.priority}): "
            + ", ".join(f"{n} {state}" for state, n in sorted(by_state.items())))
    if s.HasField("deployment"):
        head += "\n" + deployment_line(s.deployment)
    rows = [[group, state, str(n)] for (group, state), n in sorted(counts.items())]
    out = [head, table(["GROUP", "STATE", "INSTANCES"], rows)]
    if reasons:
        top = sorted(reasons.items(), key=lambda kv: -kv[1])[:5]
        out.append(table(["STATE", "INSTANCES", "REASON"], [[st, str(n), why] for (st, why), n in top]))
    out.append(f"{len(s.instances)} instances; `ctl status {s.name} --all` lists them, -o json gives every field")
    return "\n".join(out)


def nodes_table(nodes: list[scheduler_pb2.Node], wide: bool = False) -> str:
    """Usage (what the hosts measure in use) beside allocated and capacity, as issue 5 asks;
    wide: also the hosts' attributes."""
    rows = []
    for n in nodes:
        labels = ",".join(f"{k}={v}" for k, v in sorted(n.labels.items()))
        attributes = ",".join(f"{k}={v}" for k, v in sorted(n.attributes.items())) or "-"
        rows.append([n.name, n.state, n.address,
                     f"{format_cpu(n.allocated.cpu_milli)}/{format_cpu(n.capacity.cpu_milli)}",
                     f"{format_bytes(n.allocated.memory_bytes)}/{format_bytes(n.capacity.memory_bytes)}",
                     _cpu_mem(n.usage), str(n.instances), labels or "-", *([attributes] if wide else [])])
    headers = ["NAME", "STATE", "ADDRESS", "CPU (alloc/cap)", "MEMORY (alloc/cap)", "USAGE (cpu/mem)",
               "INSTANCES", "LABELS"]
    return table(headers + (["ATTRIBUTES"] if wide else []), rows)


def jobs_table(jobs: list[scheduler_pb2.JobSummary]) -> str:
    rows = []
    for j in jobs:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(j.instances_by_state.items()))
        rows.append([j.name, j.state, str(j.priority), str(j.version), counts or "-"])
    return table(["NAME", "STATE", "PRIORITY", "VERSION", "INSTANCES"], rows)


def profile_json(p: scheduler_pb2.ProfileInfo) -> dict:
    return {"kind": p.kind,
            "default": {"fixed_memory": p.fixed_memory_bytes, "per_vcpu_memory": p.per_vcpu_memory_bytes,
                        "memory_fraction": p.memory_fraction, "fixed_cpu": p.fixed_cpu_milli / 1000},
            "learned": [{"size_class": c.size_class_bytes, "samples": c.samples, "p50": c.p50_bytes,
                         "p95": c.p95_bytes, "overhead": c.overhead_bytes} for c in p.learned]}


def profiles_table(profiles: list[scheduler_pb2.ProfileInfo]) -> str:
    rows = []
    for p in profiles:
        formula = (f"{format_bytes(p.fixed_memory_bytes)} + {format_bytes(p.per_vcpu_memory_bytes)}/vCPU"
                   f" + {p.memory_fraction:.1%} of memory, {format_cpu(p.fixed_cpu_milli)} cpu")
        rows.append([p.kind, "default", "any", formula, "-", "-", "-"])
        for c in p.learned:
            rows.append([p.kind, "learned", f"<= {format_bytes(c.size_class_bytes)}",
                         format_bytes(c.overhead_bytes), str(c.samples), format_bytes(c.p50_bytes),
                         format_bytes(c.p95_bytes)])
    return table(["KIND", "SOURCE", "MEMORY CLASS", "OVERHEAD", "SAMPLES", "P50", "P95"], rows)


def plan_table(p: scheduler_pb2.PlanResponse) -> str:
    counts: dict[str, int] = {}
    for i in p.instances:
        key = "unplaceable" if i.action == "place" and not i.node else i.action
        counts[key] = counts.get(key, 0) + 1
    head = (f"job {p.name}: " + ("no change" if not p.changed else f"version {p.version}") + " — "
            + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    if p.replaces:
        head += f"\nreplaces {p.replaces} running instance(s), rolled out as each group's update block says"
    if p.changed and list(p.changes) != ["(new job)"]:
        head += "\n" + "\n".join(f"  {c}" for c in p.changes)
    rows = [[i.id, i.group, i.action, i.node or "-",
             f"{format_cpu(i.reserved.cpu_milli)} cpu, {format_bytes(i.reserved.memory_bytes)}", i.reason]
            for i in p.instances]
    return head + "\n" + table(["ID", "GROUP", "ACTION", "NODE", "RESERVES", "REASON"], rows)


def history_json(h: scheduler_pb2.HistoryResponse) -> list[dict]:
    # "time" too: the word ("versions with time, stable flag and what changed")
    return [{"version": v.version, "submitted_at": v.submitted_at, "time": v.submitted_at, "stable": v.stable,
             "current": v.current, "note": v.note, "changes": list(v.changes), "failed": v.failed,
             "same_as": v.same_as or None} for v in h.versions]


def history_table(h: scheduler_pb2.HistoryResponse) -> str:
    rows = []
    for v in h.versions:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(v.submitted_at))
        what = "; ".join(v.changes) if len(v.changes) <= 3 else "; ".join(v.changes[:3]) + f"; (+{len(v.changes) - 3} more)"
        same = f" (the spec of version {v.same_as})" if v.same_as else ""
        rows.append([str(v.version) + (" *" if v.current else ""), when,
                     "yes" if v.stable else "no (failed)" if v.failed else "no",
                     (f"{v.note}{same}: " if v.note or same else "") + (what or "no change")])
    return table(["VERSION", "SUBMITTED", "STABLE", "CHANGES"], rows)
