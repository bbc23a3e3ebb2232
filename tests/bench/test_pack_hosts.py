"""bench/pack_hosts.py: hosts used and fill per host type, from a node CSV and OUT CSVs."""
from __future__ import annotations

from pathlib import Path

from bench.pack_hosts import fill, main, read_types
from tests.scheduler.placement.test_benchcli import write as _write


def _nodes(tmp: Path) -> Path:
    return _write(tmp / "nodes.csv", ["name", "cpu_milli", "memory_mib", "gpu", "model"],
                  [["g0", 8000, 1024, 2, "T4"], ["g1", 8000, 1024, 2, "T4"], ["c0", 4000, 2048, 0, ""]])


def _out(tmp: Path, name: str, rows: list[list]) -> Path:
    return _write(tmp / name, ["name", "node", "cpu_milli", "memory_mib", "gpu_milli", "gpus"], rows)


def test_fill_is_per_type_over_the_used_hosts_only(tmp_path):
    types = read_types(_nodes(tmp_path))
    out = _out(tmp_path, "a.csv", [["w0", "g0", 4000, 512, 1000, "0:1000"], ["w1", "g0", 2000, 0, 500, "1:500"],
                                   ["w2", "c0", 1000, 1024, 0, ""], ["w3", "", 0, 0, 0, ""]])
    by_type = fill(types, out)
    # g1 is unused, so the T4 type's mean is g0's alone
    assert by_type[(8000, 1024, 2, "T4")] == (1, 0.75, 0.5, 0.75)
    assert by_type[(4000, 2048, 0, "")] == (1, 0.25, 0.5, 0.0)


def test_main_prints_one_row_per_type_and_the_totals(tmp_path, capsys):
    nodes = _nodes(tmp_path)
    a = _out(tmp_path, "a.csv", [["w0", "g0", 8000, 1024, 2000, "0:1000;1:1000"]])
    b = _out(tmp_path, "b.csv", [["w0", "g0", 4000, 512, 1000, "0:1000"], ["w1", "g1", 4000, 512, 1000, "0:1000"]])
    assert main([str(nodes), f"a={a}", f"b={b}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "| 8, 1, 2 T4 | 2 | 1, 100% / 100% / 100% | 2, 50% / 50% / 50% |"
    assert lines[-1] == "| all | 3 | 1 | 2 |"


def test_main_refuses_an_argument_without_a_label(tmp_path):
    assert main([str(_nodes(tmp_path)), str(tmp_path / "a.csv")]) == 2
