"""`packyard-bench pack`: CSV loaders (on the real Alibaba trace), OUT.csv and the JSON summary."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bench.pack_check import check
from scheduler.placement.benchcli import lower_bound, main, read_nodes, read_workloads
from scheduler.placement.table import CPU, GPU, MEMORY

TRACE = Path(__file__).resolve().parents[4] / "shared" / "traces" / "alibaba-gpu-v2023"
needs_trace = pytest.mark.skipif(not TRACE.is_dir(), reason=f"no trace at {TRACE}")
MIB = 1 << 20


@needs_trace
def test_reads_the_alibaba_trace_as_its_readme_describes():
    hosts = read_nodes(TRACE / "openb_node_list_all_node.csv")
    assert len(hosts) == 1523 and hosts.names[0] == "openb-node-0000"
    assert hosts.capacity[:, CPU].sum() // 1000 == 125_514
    assert hosts.capacity[:, MEMORY].sum() >> 30 == 597_684
    assert hosts.capacity[:, GPU].sum() // 1000 == 6_212
    asks = read_workloads(TRACE / "openb_pod_list_default.csv")
    assert len(asks) == 8152 and asks[0].group == "openb-pod-0000"
    assert round(sum(a.request.cpu_milli for a in asks) / 1000) == 85_436
    shares = [a for a in asks if 0 < a.request.gpu_milli < 1000]
    assert shares and all(a.kind == "container" for a in asks)


def write(path: Path, header: list[str], rows: list[list]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture
def small(tmp_path):
    nodes = write(tmp_path / "nodes.csv", ["sn", "cpu_milli", "memory_mib", "gpu", "model"],
                  [["n1", 4000, 8192, 2, "T4"], ["n2", 4000, 8192, "", ""]])
    workloads = write(tmp_path / "w.csv", ["name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli", "kind"],
                      [["a", 1000, 1024, 1, 500, ""], ["b", 1000, 1024, 0, 0, "vm"],
                       ["huge", 9000, 1024, 0, 0, "container"], ["c", 500, 512, 1, 1000, "container"]])
    return nodes, workloads, tmp_path / "out.csv"


@pytest.mark.parametrize("policy", ["packyard", "nomad-binpack", "k8s-default", "k8s-mostallocated"])
def test_pack_writes_one_row_per_workload_and_a_summary(small, policy):
    nodes, workloads, out = small
    result = CliRunner().invoke(main, ["pack", "--nodes", str(nodes), "--workloads", str(workloads),
                                       "--out", str(out), "--policy", policy])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["policy"] == policy
    assert (summary["placed"], summary["unplaced"], summary["workloads"]) == (3, 1, 4)
    # in-process, "the whole process" began with pytest: only the engine rate is meaningful here
    assert summary["engine_placements_per_s"] > 0 and summary["placements_per_s"] >= 0
    assert summary["lower_bound"] == 2     # counts every workload, placed or not
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["a", "b", "huge", "c"]
    assert rows[2]["node"] == ""
    a, b, c = rows[0], rows[1], rows[3]
    assert a["node"] == "n1" and a["gpu_milli"] == "500" and a["memory_mib"] == "1025"   # + 1 MiB
    assert c["node"] == "n1" and c["gpu_milli"] == "1000"
    assert int(b["cpu_milli"]) == 1050 and int(b["memory_mib"]) > 1024 + 80               # VM overhead


def test_lower_bound_takes_the_largest_hosts_first(tmp_path):
    nodes = read_nodes(write(tmp_path / "n.csv", ["name", "cpu_milli", "memory_mib"],
                             [["small", 1000, 1024], ["big", 8000, 1024], ["mid", 4000, 1024]]))
    reserved = np.array([[9000, MIB, 0, 0]])
    assert lower_bound(nodes, reserved) == 2
    assert lower_bound(nodes, np.array([[0, 2048 * MIB, 0, 0]])) == 2
    assert lower_bound(nodes, np.zeros((0, 4), dtype=np.int64)) == 0


def test_unknown_policy_is_refused(small):
    nodes, workloads, out = small
    result = CliRunner().invoke(main, ["pack", "--nodes", str(nodes), "--workloads", str(workloads),
                                       "--out", str(out), "--policy", "random"])
    assert result.exit_code != 0 and "random" in result.output


def test_pooled_gpus_let_shares_span_devices_and_leave_nothing_behind(tmp_path):
    """Three 0.6 shares on a 2-GPU host: as devices only two fit (each leaves 0.4 on its GPU);
    pooled (how the peers' published figures count GPUs) all three do, in 1.8 of the 2 GPUs. The
    model is the run's own: devices, then pooled, then devices again decide as each alone."""
    nodes = write(tmp_path / "n.csv", ["sn", "cpu_milli", "memory_mib", "gpu"], [["g", 64000, 65536, 2]])
    workloads = write(tmp_path / "w.csv", ["name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli"],
                      [[f"s{i}", 1000, 1024, 1, 600] for i in range(3)])
    placed = {}
    for model in ("devices", "pooled", "devices"):
        result = CliRunner().invoke(main, ["pack", "--nodes", str(nodes), "--workloads", str(workloads),
                                           "--out", str(tmp_path / "out.csv"), "--gpu-model", model])
        assert result.exit_code == 0, result.output
        summary = json.loads(result.output.strip().splitlines()[-1])
        assert summary["gpu_model"] == model
        assert placed.setdefault(model, summary["placed"]) == summary["placed"]
    assert placed == {"devices": 2, "pooled": 3}
    assert read_nodes(nodes).gpu_capacity.tolist() == [[1000, 1000]]


def pack_out(nodes: Path, workloads: Path, out: Path, *args: str) -> tuple[dict, list[dict]]:
    result = CliRunner().invoke(main, ["pack", "--nodes", str(nodes), "--workloads", str(workloads),
                                       "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    with out.open(newline="") as f:
        return json.loads(result.output.strip().splitlines()[-1]), list(csv.DictReader(f))


def test_out_names_the_devices_each_workload_got(tmp_path):
    """Two shares that fit one GPU together go on one device (best fit); whole GPUs take whole free
    devices; a GPU-less workload has an empty cell. The independent checker agrees with every row."""
    nodes = write(tmp_path / "n.csv", ["sn", "cpu_milli", "memory_mib", "gpu", "model"], [["g", 64000, 65536, 4, "T4"]])
    workloads = write(tmp_path / "w.csv", ["name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli"],
                      [["s1", 1000, 1024, 1, 500], ["s2", 1000, 1024, 1, 300], ["two", 1000, 1024, 2, 1000],
                       ["cpu", 1000, 1024, 0, 0], ["three", 1000, 1024, 3, 1000]])
    summary, rows = pack_out(nodes, workloads, tmp_path / "out.csv")
    cells = {r["name"]: r["gpus"] for r in rows}
    share = cells["s1"].split(":")[0]
    assert cells["s1"] == f"{share}:500" and cells["s2"] == f"{share}:300"
    two = [c.split(":") for c in cells["two"].split(";")]
    assert len(two) == 2 and all(m == "1000" and i != share for i, m in two)
    assert cells["cpu"] == "" and cells["three"] == "" and summary["unplaced"] == 1   # one GPU left
    assert check(nodes, workloads, tmp_path / "out.csv") == []
    _, pooled = pack_out(nodes, workloads, tmp_path / "pooled.csv", "--gpu-model", "pooled")
    assert all(r["gpus"] == "" for r in pooled)                   # pooled has no devices


def test_gpu_spec_constrains_the_node_model(tmp_path):
    """`gpu_spec` A|B admits only nodes whose `model` is A or B; empty admits any node; a spec no
    node has leaves the workload unplaced with the constraint as its reason."""
    nodes = write(tmp_path / "n.csv", ["sn", "cpu_milli", "memory_mib", "gpu", "model"],
                  [["t4", 64000, 65536, 2, "T4"], ["v100", 64000, 65536, 2, "V100M16"], ["cpu", 64000, 65536, 0, ""]])
    workloads = write(tmp_path / "w.csv", ["name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli", "gpu_spec"],
                      [["v", 1000, 1024, 1, 500, "V100M16|V100M32"], ["t", 1000, 1024, 1, 1000, "T4"],
                       ["any", 1000, 1024, 1, 1000, ""], ["none", 1000, 1024, 1, 1000, "A100"]])
    asks = read_workloads(workloads)
    assert asks[0].constraints[0].value == ["V100M16", "V100M32"] and asks[2].constraints == []
    _, rows = pack_out(nodes, workloads, tmp_path / "out.csv")
    node = {r["name"]: r["node"] for r in rows}
    assert (node["v"], node["t"], node["none"]) == ("v100", "t4", "")
    assert node["any"] in ("t4", "v100")
    assert check(nodes, workloads, tmp_path / "out.csv") == []


def test_the_checker_finds_what_is_wrong(tmp_path):
    nodes = write(tmp_path / "n.csv", ["sn", "cpu_milli", "memory_mib", "gpu", "model"], [["g", 4000, 4096, 2, "T4"]])
    workloads = write(tmp_path / "w.csv", ["name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli", "gpu_spec"],
                      [["a", 3000, 1024, 1, 600, "V100M16"], ["b", 3000, 1024, 1, 600, ""], ["c", 10, 10, 2, 1000, ""]])
    out = write(tmp_path / "o.csv", ["name", "node", "cpu_milli", "memory_mib", "gpu_milli", "gpus"],
                [["a", "g", 3000, 1025, 600, "0:600"], ["b", "g", 3000, 1025, 600, "0:600"],
                 ["c", "g", 10, 11, 2000, "1:1000;2:1000"]])
    faults = "\n".join(check(nodes, workloads, out))
    for fault in ("gpu_spec V100M16", "device 2 not on g", "g: over capacity", "g GPU 0: 1200 milli"):
        assert fault in faults


def test_rows_of_a_full_node_never_add_up_past_its_capacity(tmp_path):
    """A VM's overhead is not whole MiB: OUT rounds its memory down, so a node packed to the byte
    still checks, and a row never shows less than the workload asked."""
    nodes = write(tmp_path / "n.csv", ["sn", "cpu_milli", "memory_mib"], [["h", 64000, 8 * 1024]])
    workloads = write(tmp_path / "w.csv", ["name", "cpu_milli", "memory_mib", "kind"],
                      [[f"vm{i}", 1000, 1000, "vm"] for i in range(9)])
    summary, rows = pack_out(nodes, workloads, tmp_path / "out.csv")
    assert summary["placed"] >= 7 and all(int(r["memory_mib"]) > 1000 for r in rows if r["node"])
    assert check(nodes, workloads, tmp_path / "out.csv") == []


def test_image_columns_break_ties_toward_the_nodes_holding_the_image(tmp_path):
    nodes = write(tmp_path / "n.csv", ["name", "cpu_milli", "memory_mib", "images"],
                  [["a", 4000, 8192, ""], ["b", 4000, 8192, "web:100|db:5"], ["c", 4000, 8192, "db:900"]])
    work = write(tmp_path / "w.csv", ["name", "cpu_milli", "memory_mib", "image"],
                 [["w0", 1000, 1024, "db"], ["w1", 1000, 1024, "none"]])
    r = CliRunner().invoke(main, ["pack", "--nodes", str(nodes), "--workloads", str(work), "--out", str(tmp_path / "o.csv")])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output.strip().splitlines()[-1])
    assert summary["with_image_held_somewhere"] == 1 and summary["hosts_used"] == 1
    with (tmp_path / "o.csv").open(newline="") as f:
        # db: c holds more of it than b; then binpack keeps w1 on the host it opened
        assert [row["node"] for row in csv.DictReader(f)] == ["c", "c"]
