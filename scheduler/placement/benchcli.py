"""`packyard-bench pack`: place a workload trace onto a host list with the scheduler's own engine.

    packyard-bench pack --nodes NODES.csv --workloads WORKLOADS.csv --out OUT.csv [--policy P]

NODES.csv: `name` (or `sn`), `cpu_milli`, `memory_mib`, optional `gpu` (whole GPUs) and `model`
(the GPU model, the node attribute `gpu.model`); other columns ignored. WORKLOADS.csv: `name`,
`cpu_milli`, `memory_mib`, optional `kind` (container or vm), `num_gpu`, `gpu_milli` (the Alibaba
trace's format: num_gpu x gpu_milli / 1000 GPUs), `gpu_spec` (allowed GPU models `A|B`, empty:
any; a constraint `gpu.model in (A, B)`, as a job spec would write it). Image locality (issue 16),
optional: NODES.csv `images`, the registry images a node holds, `NAME:BYTES` joined by `|`, and
WORKLOADS.csv `image`, the NAME a workload runs: its ask prefers, among equal hosts, those holding it.
Workloads are placed one by one in file order (an online arrival sequence), each a GroupAsk of
count 1 through the same `place()` the scheduler service calls, with the default profiles.
OUT.csv gets one row per workload with the amounts reserved on its host, overhead included (memory
in whole MiB rounded down, so that a node's rows never add up past its capacity; a request is whole
MiB, so a row never shows less than was asked), and
`gpus`: the devices it got there, `INDEX:MILLI` joined by `;` (`2:500`, `0:1000;1:1000`, empty for
none or under `--gpu-model pooled`, which has no devices); the last line printed is a JSON summary. `--gpu-model pooled` counts a host's GPUs as one amount
(gpumodel.py, EngineConfig.gpu_model) to compare with figures measured that way.
"""
from __future__ import annotations

import csv
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click
import numpy as np

from packyard.records import ResourceAmounts
from packyard.spec import Constraint
from scheduler.placement import gpumodel
from scheduler.placement.asks import GroupAsk
from scheduler.placement.config import DEFAULT_POLICY, POLICIES, EngineConfig
from scheduler.placement.engine import place
from scheduler.placement.plan import Plan
from scheduler.placement.table import CPU, GPU, MEMORY, Host, HostTable

MIB = 1 << 20
DRIVERS = {"driver.container": "ok", "driver.vm": "ok"}
GPU_MODEL = "gpu.model"   # the node attribute the CSV's `model` fills and `gpu_spec` constrains


def process_started() -> float:
    """Wall-clock time this process started (Linux /proc), so start-up counts in the rate."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.time()


def _rows(path: Path) -> Iterator[dict[str, str]]:
    with path.open(newline="") as f:
        yield from csv.DictReader(f)


def _int(row: dict[str, str], key: str, default: int = 0) -> int:
    value = (row.get(key) or "").strip()
    return int(float(value)) if value else default


def read_nodes(path: Path, gpu_model: str = gpumodel.DEVICES) -> HostTable:
    hosts = []
    for i, row in enumerate(_rows(path)):
        name = row.get("name") or row.get("sn") or f"node-{i}"
        capacity = ResourceAmounts(cpu_milli=_int(row, "cpu_milli"),
                                   memory_bytes=_int(row, "memory_mib") * MIB,
                                   gpu_milli=_int(row, "gpu") * 1000)
        model = (row.get("model") or "").strip()
        attributes = {**DRIVERS, GPU_MODEL: model} if model else DRIVERS
        hosts.append(Host(name, capacity, attributes=attributes))
    return HostTable.from_hosts(hosts, gpu_model=gpu_model)


def read_images(path: Path) -> dict[str, dict[str, int]]:
    """NODES.csv's `images` column: {image: {node: bytes of it the node holds}}."""
    out: dict[str, dict[str, int]] = {}
    for i, row in enumerate(_rows(path)):
        node = row.get("name") or row.get("sn") or f"node-{i}"
        for item in filter(None, (row.get("images") or "").split("|")):
            name, _, size = item.rpartition(":")
            out.setdefault(name, {})[node] = int(size)
    return out


def read_workloads(path: Path, images: dict[str, dict[str, int]] | None = None) -> list[GroupAsk]:
    """One GroupAsk of count 1 per row, in file order. A trace repeats a few shapes: rows alike
    in all but their name and image share one parsed request and constraint list (100,000 rows
    read in about half the time; whole-process throughput counts the reading)."""
    asks = []
    images = images or {}
    parsed: dict[tuple[str | None, ...], tuple[ResourceAmounts, str, tuple[Constraint, ...]]] = {}
    with path.open(newline="") as f:
        lines = csv.reader(f)
        header = {name: i for i, name in enumerate(next(lines, []))}
        columns = [header.get(k) for k in ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli", "kind",
                                           "gpu_spec", "image")]
        i = 0
        for line in lines:
            if not line:   # a blank line is no row (as csv.DictReader skips it)
                continue
            name, cpu, memory, num_gpu, gpu_milli, kind, spec, image = (
                line[c] if c is not None and c < len(line) else None for c in columns)
            shape = (cpu, memory, num_gpu, gpu_milli, kind, spec)
            known = parsed.get(shape)
            if known is None:
                row = dict(zip(("cpu_milli", "memory_mib", "num_gpu", "gpu_milli"), shape[:4], strict=True))
                gpus = _int(row, "num_gpu")
                request = ResourceAmounts(cpu_milli=_int(row, "cpu_milli"),
                                          memory_bytes=_int(row, "memory_mib") * MIB,
                                          gpu_milli=gpus * _int(row, "gpu_milli") if gpus else 0)
                known = parsed[shape] = (request, (kind or "container").strip(), tuple(gpu_spec(spec or "")))
            request, kind_of, constraints = known
            asks.append(GroupAsk(job="bench", group=name or f"w{i}", count=1, kind=kind_of, request=request,
                                 constraints=list(constraints), image_bytes=images.get(image or "", {})))
            i += 1
    return asks


def gpu_spec(spec: str) -> list[Constraint]:
    """`A|B` -> `gpu.model in (A, B)`; empty -> no constraint (any model, or no GPU at all)."""
    models = [m.strip() for m in spec.split("|") if m.strip()]
    return [Constraint(attribute=GPU_MODEL, operator="in", value=models)] if models else []


def lower_bound(table: HostTable, reserved: np.ndarray) -> int:
    """Fewest hosts whose capacities could hold the total reserved by every workload (placed or
    not), resource by resource, largest hosts first: no packing can use fewer. At most all hosts."""
    bound = 0
    for r in (CPU, MEMORY, GPU):
        total = int(reserved[:, r].sum())
        if total:
            cumulative = np.cumsum(np.sort(table.capacity[:, r])[::-1])
            bound = max(bound, int(np.searchsorted(cumulative, total)) + 1)
    return min(bound, len(table)) if len(table) else 0


def devices(gpu_milli: int, indices: tuple[int, ...], model: str) -> str:
    """The OUT `gpus` cell: a share is all on its one device, whole GPUs are 1000 each."""
    if model != gpumodel.DEVICES or not indices or not gpu_milli:
        return ""
    each = gpu_milli if len(indices) == 1 else gpu_milli // len(indices)
    return ";".join(f"{i}:{each}" for i in indices)


def write_out(path: Path, results, reserved: np.ndarray, gpu_model: str = gpumodel.DEVICES) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "node", "cpu_milli", "memory_mib", "gpu_milli", "gpus"])
        for r, amounts in zip(results, reserved.tolist(), strict=True):
            node = r.hosts[0] if r.hosts else ""
            gpus = devices(amounts[GPU], r.gpus[0], gpu_model) if r.hosts else ""
            w.writerow([r.ask.group, node, amounts[CPU], amounts[MEMORY] // MIB, amounts[GPU], gpus])


def pack(nodes: Path, workloads: Path, out: Path, policy: str, started: float,
         gpu_model: str = gpumodel.DEVICES) -> dict:
    table = read_nodes(nodes, gpu_model)
    asks = read_workloads(workloads, read_images(nodes))
    config = EngineConfig.for_policy(policy, gpu_model=gpu_model)
    plan = Plan(table, config)
    engine_start = time.perf_counter()
    results = place(table, asks, plan=plan)
    engine_s = time.perf_counter() - engine_start
    reserved = np.array([[r.reserved.cpu_milli, r.reserved.memory_bytes, r.reserved.disk_bytes,
                          r.reserved.gpu_milli] for r in results], dtype=np.int64).reshape(-1, 4)
    write_out(out, results, reserved, gpu_model)
    placed = sum(len(r.hosts) for r in results)
    errors = [r for r in results if r.error]
    used = np.any(plan.allocated != table.allocated, axis=1)
    total_s = time.time() - started
    summary = {
        "policy": policy,
        "gpu_model": gpu_model,
        "workloads": len(asks),
        "with_image_held_somewhere": sum(1 for a in asks if a.image_bytes),
        "placed": placed,
        "unplaced": len(asks) - placed,
        "unplaced_gpus": round(sum(int(g) for r, g in zip(results, reserved[:, GPU], strict=True)
                                   if not r.hosts) / 1000, 2),
        "errors": len(errors),
        "hosts": len(table),
        "hosts_used": int(used.sum()),
        "lower_bound": lower_bound(table, reserved),
        "gpu_stranded_on_used_hosts": _stranded(plan, used),
        "seconds": round(total_s, 3),
        "engine_seconds": round(engine_s, 3),
        "placements_per_s": round(len(asks) / total_s) if total_s else 0,
        "engine_placements_per_s": round(len(asks) / engine_s) if engine_s else 0,
    }
    # after `seconds` is taken: the LP (and importing scipy, ~0.4 s) is not part of the rates
    summary.update(lp_bound(table, plan, asks, results, reserved))
    return summary


def lp_bound(table: HostTable, plan: Plan, asks: list[GroupAsk], results, reserved: np.ndarray) -> dict:
    """The summary's `lower_bound_lp*` keys (bound.py). With every workload placeable, the LP
    and the capacity bound bound the same thing (the hosts a placement of all of them needs), so
    the larger is reported; otherwise the LP's alone, on the placeable ones: the capacity bound
    counts the rest too, and may exceed what any placement of those uses."""
    from scheduler.placement.bound import lp_lower_bound  # scipy: imported only once it is needed

    refused = np.array([bool(r.error) for r in results], dtype=bool)
    room = np.maximum(plan.capacity - table.allocated, 0)
    lp = lp_lower_bound(table, room, asks, reserved, refused)
    hosts = max(lp.hosts, lower_bound(table, reserved)) if not lp.excluded else lp.hosts
    return {
        "lower_bound_lp": hosts,
        "lower_bound_lp_fractional": None if lp.optimum is None else round(lp.optimum, 3),
        "lower_bound_lp_excluded": lp.excluded,
        "lower_bound_lp_unplaced": lp.unplaced,
        "lower_bound_lp_unplaced_gpus": lp.unplaced_gpus,
        "lower_bound_lp_seconds": round(lp.seconds, 3),
    }


def _stranded(plan: Plan, used: np.ndarray) -> float:
    """GPUs left free on hosts whose cpu or memory is (nearly) exhausted, in whole GPUs."""
    free = plan.capacity - plan.allocated
    starved = used & ((free[:, CPU] < 1000) | (free[:, MEMORY] < 2048 * MIB))
    return round(float(plan.gpu_free[starved].sum()) / 1000, 2)


@click.group()
def main() -> None:
    """packyard benchmarks."""


@main.command("pack")
@click.option("--nodes", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--workloads", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--policy", type=click.Choice(list(POLICIES)), default=DEFAULT_POLICY, show_default=True)
@click.option("--gpu-model", type=click.Choice(gpumodel.MODELS), default=gpumodel.DEVICES, show_default=True,
              help="devices: a share fits on one GPU, whole GPUs take whole devices (what hosts run); "
                   "pooled: a host's GPUs as one amount (how the peers' published figures count them).")
def pack_command(nodes: Path, workloads: Path, out: Path, policy: str, gpu_model: str) -> None:
    """Place WORKLOADS onto NODES in file order; write OUT; print a JSON summary last."""
    summary = pack(nodes, workloads, out, policy, STARTED, gpu_model)
    click.echo(json.dumps(summary))
    sys.stdout.flush()


STARTED = process_started()
