"""Imports flow one way. Between packages: packyard (shared) imports none of the others; the agent
and the scheduler never import each other; ctl talks to both over gRPC (its `local` command starts
them as processes). Inside the scheduler: each module imports only modules of a lower layer, so
that data flows cache → decision → commit → dispatch → loop → API. An import inside a function
counts the same as one at the top: a circle hidden there is still a circle."""
from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# scheduler/<module>.py by layer; a module may import from its own layer's lower entries only
# through this order, never from a later layer
SCHEDULER_LAYERS = [
    {"metrics", "unavailable", "embedded_etcd", "placement", "changes", "healthy_set", "slots", "accepted"},
    {"state", "specs", "convert", "agents", "leader", "profiles", "caps", "rollout_timer"},
    {"deployments", "images"},
    {"reconciler"},
    {"placing", "commit", "dispatch", "versions"},
    {"controller"},
    {"service", "http"},
    {"main"},
]


def imports_of(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def sources(package: str) -> list[Path]:
    return [p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts]


@pytest.mark.parametrize("package, forbidden", [
    ("packyard", ("scheduler", "agent", "ctl")),
    ("agent", ("scheduler", "ctl")),
    ("scheduler", ("agent", "ctl")),
], ids=["packyard-imports-no-other", "agent-never-scheduler", "scheduler-never-agent"])
def test_packages_do_not_import_up_or_across(package, forbidden):
    bad = sorted(f"{p.relative_to(ROOT)}: {name}" for p in sources(package) for name in imports_of(p)
                 if name.split(".")[0] in forbidden)
    assert bad == []


def scheduler_graph() -> dict[str, set[str]]:
    modules = {p.stem for p in (ROOT / "scheduler").glob("*.py") if p.stem != "__init__"} | {"placement"}
    graph: dict[str, set[str]] = {}
    for p in (ROOT / "scheduler").glob("*.py"):
        if p.stem == "__init__":
            continue
        graph[p.stem] = {name.split(".")[1] for name in imports_of(p)
                         if name.startswith("scheduler.") and name.split(".")[1] in modules} - {p.stem}
    return graph


def test_every_scheduler_module_has_a_layer():
    layered = set().union(*SCHEDULER_LAYERS)
    assert set(scheduler_graph()) - layered == set()


def test_scheduler_modules_import_only_from_lower_layers():
    layer = {m: i for i, mods in enumerate(SCHEDULER_LAYERS) for m in mods}
    graph = scheduler_graph()
    list(graphlib.TopologicalSorter(graph).static_order())          # CycleError names a circle
    upward = sorted(f"{m} imports {d}" for m, deps in graph.items() for d in deps
                    if layer.get(d, -1) > layer.get(m, -1))
    assert upward == []
