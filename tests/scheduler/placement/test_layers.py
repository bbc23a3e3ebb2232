"""scheduler/placement imports one way: each module only from those below it (README.md's module
map), none behind `if TYPE_CHECKING:`, where a circle would hide until someone imports a module
first that nobody imported first before."""
from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import scheduler.placement

PACKAGE = "scheduler.placement"
SOURCES = {p.stem: p for p in Path(scheduler.placement.__file__).parent.glob("*.py") if p.stem != "__init__"}


def imported(path: Path) -> set[str]:
    """The package's modules that `path` imports, wherever the import statement is (a function
    body or an `if TYPE_CHECKING:` block counts the same)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:   # relative: from . import x, from .x import y
                base = ".".join([PACKAGE, *filter(None, [base])])
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for name in names:
            if name.startswith(PACKAGE + "."):
                module = name[len(PACKAGE) + 1:].split(".")[0]
                if module in SOURCES:
                    out.add(module)
    return out


def graph() -> dict[str, set[str]]:
    return {module: imported(path) - {module} for module, path in SOURCES.items()}


def test_the_modules_import_one_way():
    order = list(graphlib.TopologicalSorter(graph()).static_order())   # CycleError names a circle
    assert set(order) == set(SOURCES)


def test_the_layers_are_the_readmes():
    g = graph()
    below_plan = {"gpumodel", "table", "asks", "mix", "measures", "overlay", "view", "filters", "fused", "aot",
                  "fragmentation", "scarcity", "scorers", "kernel", "config"}
    for module in below_plan:
        assert not g[module] - below_plan, f"{module} imports {g[module] - below_plan}, above the plan"
    assert g["measures"] == set() and g["gpumodel"] == set()
    # setup.py builds the kernel ahead of time with numpy and numba alone, not the package's needs
    assert g["kernel"] == set() and g["aot"] == {"kernel"}
    assert "plan" not in g["scorers"] | g["fragmentation"] | g["filters"] | g["view"]


def test_nothing_is_hidden_behind_type_checking():
    assert [m for m, p in SOURCES.items() if "TYPE_CHECKING" in p.read_text()] == []
