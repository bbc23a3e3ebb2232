"""The compiled refresh (kernel.py), built ahead of time (aot.py) and compiled by numba's JIT,
against the numpy path it replaces: the same scores bit for bit on random hosts (with and
without GPUs, partly used devices, overfull hosts, hosts without capacity), random instances and
mixes, both GPU models, and the same decisions; which of them a process runs."""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from packyard.records import ResourceAmounts
from scheduler.placement import EngineConfig, Host, HostTable, Plan, aot, engine, kernel, place, table
from scheduler.placement.mix import WorkloadMix
from scheduler.placement.table import amounts
from tests.scheduler.placement.builders import GIB, ask, con

pytestmark = pytest.mark.skipif(kernel.jit_refresh() is None, reason="numba is not installed")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> str:
    """The kernel built ahead of time from this kernel.py, apart from the tree's own (which a
    checkout may not have built)."""
    path = str(tmp_path_factory.mktemp("aot") / ("_kernel_aot" + sysconfig.get_config_var("EXT_SUFFIX")))
    aot.build(path)
    return path


@pytest.fixture(params=["aot", "jit"])
def compiled(request, monkeypatch):
    """Every Plan of the test refreshes with this compiled kernel."""
    refresh = kernel.aot_refresh(request.getfixturevalue("built")) if request.param == "aot" else kernel.jit_refresh()
    assert refresh is not None
    monkeypatch.setattr(kernel, "REFRESH", refresh)
    return request.param


def random_hosts(rng: np.random.Generator, n: int, device_milli: int) -> list[Host]:
    hosts = []
    for i in range(n):
        cpu = int(rng.choice([0, 8000, 32000, 64000, 104000]))
        mem = int(rng.choice([0, 32, 128, 256, 512])) * GIB
        gpus = int(rng.choice([0, 0, 1, 2, 4, 8]))
        used_cpu = int(rng.integers(0, cpu * 1.2 + 1))      # some hosts start overfull
        used_mem = int(rng.integers(0, mem * 1.2 + 1))
        split = None
        used_gpu = 0
        if gpus and rng.random() < 0.6:
            if device_milli == 1000:
                split = tuple(int(rng.choice([0, 0, 250, 500, 700, 1000])) for _ in range(gpus))
                used_gpu = sum(split)
            else:
                used_gpu = int(rng.integers(0, gpus * 1000 + 1))
        hosts.append(Host(f"h{i}", ResourceAmounts(cpu, mem, 100 * GIB, gpus * 1000),
                          ResourceAmounts(used_cpu, used_mem, 0, used_gpu),
                          ready=bool(rng.random() < 0.95), attributes={"driver.container": "ok"},
                          gpu_allocated=split))
    return hosts


def random_mix(rng: np.random.Generator, device_milli: int) -> WorkloadMix | None:
    kind = rng.integers(0, 4)
    if kind == 0:
        return None   # learned from the asks
    shapes = int(rng.integers(1, 70))   # past 8 and 64: numpy's pairwise blocks
    classes = []
    for _ in range(shapes):
        gpu = int(rng.choice([0, 0, 0, 100, 250, 500, 700, 1000, 2000, 8000])) if kind != 3 else 0
        classes.append((int(rng.integers(0, 16000)), int(rng.integers(0, 64)) * GIB, gpu,
                        float(rng.random() + 0.01)))
    return WorkloadMix(classes, device_milli=device_milli)


def random_need(rng: np.random.Generator) -> np.ndarray:
    gpu = int(rng.choice([0, 0, 0, 100, 300, 500, 1000, 2000, 4000]))
    return np.array([int(rng.integers(0, 9000)), int(rng.integers(0, 40)) * GIB,
                     int(rng.choice([0, 1 << 30])), gpu], dtype=np.int64)


def bits(a: np.ndarray) -> bytes:
    return a.tobytes()   # -inf and every ulp compared as the bytes they are


POLICIES = ["packyard", "k8s-default", "k8s-mostallocated"]


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("gpu_model", ["devices", "pooled"])
def test_same_scores_bit_for_bit_as_numpy(seed, gpu_model, compiled):
    rng = np.random.default_rng(seed)
    device_milli = 1000 if gpu_model == "devices" else 10**9
    hosts = random_hosts(rng, 60, device_milli)
    table = HostTable.from_hosts(hosts, gpu_model=gpu_model)
    mix = random_mix(rng, device_milli)
    if mix is None:   # a learned mix of a few shapes
        mix = WorkloadMix([(2000, 8 * GIB, 0, 3.0), (4000, 16 * GIB, 500, 1.0), (8000, 32 * GIB, 1000, 1.0)],
                          device_milli=device_milli)
    config = EngineConfig.for_policy(POLICIES[seed % 3])
    config = EngineConfig(scorers=config.scorers, workload_mix=mix, gpu_model=gpu_model)
    fused, reference = Plan(table, config), Plan(table, config)
    assert fused.fused is not None
    reference.fused = None
    # work without GPUs kept off hosts with free GPUs: not, in part, wholly (scarcity.keep_off)
    keep_off = (0.0, float(rng.random()), 1.0)[seed % 3]
    # GPUs reserved for constrained work (scarcity.reserved) on some hosts, in steps or not
    reserve = None
    if seed % 4 in (1, 2):
        reserve = np.where(rng.random(len(table)) < 0.5, 0.0, rng.random(len(table)))
        reserve = np.floor(reserve * 32) / 32 if seed % 4 == 1 else reserve
    if seed % 2 or keep_off or reserve is not None:   # GPUs lost for lack of cpu or memory, FGD's 1 for some
        misfit = (np.where(rng.random(len(mix.weight)) < 0.3, 1.0, rng.random(len(mix.weight)))
                  if seed % 2 else mix.misfit)
        for plan in (fused, reference):
            plan.overlay.use_mix(mix.with_misfit(misfit, keep_off), reserve)
    for step in range(40):
        need = random_need(rng)
        a, b = engine._new_class(fused, ask(), need), engine._new_class(reference, ask(), need)
        rows = np.array(sorted(set(rng.integers(0, len(table), size=int(rng.integers(1, 8))).tolist())))
        if step % 3 == 2:   # every host (a new class, a changed mix)
            engine._refresh(fused, a, slice(None))
            engine._refresh(reference, b, slice(None))
            assert bits(a.score) == bits(b.score), step
        if step % 5 == 4:   # numpy stores "before" measures that the kernel reads next
            fused.fused, kept = None, fused.fused
            engine._refresh(fused, a, np.arange(len(table)))
            fused.fused = kept
        engine._refresh(fused, a, rows)
        engine._refresh(reference, b, rows)
        assert bits(a.score[rows]) == bits(b.score[rows]), (step, rows, a.score[rows], b.score[rows])
        # reserve an instance that fits on the best row, in both plans
        best = rows[int(np.argmax(a.score[rows]))]
        if a.score[best] != -np.inf:
            fused.reserve(int(best), need)
            reference.reserve(int(best), need)


def test_gpu_terms_are_a_constant_where_no_scored_row_has_a_free_gpu(compiled):
    """fragmentation.gradients is None (0.5 for all rows, added apart) when none of the scored
    hosts has a free GPU: the kernel adds it where numpy does, so a host scores the same."""
    rng = np.random.default_rng(5)
    hosts = [Host(f"h{i}", ResourceAmounts(64000, 256 * GIB, 0, 8000 if i % 2 else 0),
                  ResourceAmounts(int(rng.integers(0, 60000)), 0, 0, 8000 if i % 4 == 1 else 0),
                  attributes={"driver.container": "ok"}) for i in range(16)]
    table = HostTable.from_hosts(hosts)
    config = EngineConfig(workload_mix=WorkloadMix([(4000, 16 * GIB, 1000, 1.0), (2000, 8 * GIB, 0, 2.0)]))
    fused, reference = Plan(table, config), Plan(table, config)
    reference.fused = None
    need = amounts(ResourceAmounts(1000, GIB, 0, 0))
    for rows in ([0], [1], [0, 2], [1, 3], [0, 1, 2, 3], list(range(16))):
        a, b = engine._new_class(fused, ask(), need), engine._new_class(reference, ask(), need)
        engine._refresh(fused, a, np.array(rows))
        engine._refresh(reference, b, np.array(rows))
        assert bits(a.score[rows]) == bits(b.score[rows]), rows


@pytest.mark.parametrize("gpu_model", ["devices", "pooled"])
@pytest.mark.parametrize("gpu_hosts", [0.0, 0.3])
@pytest.mark.parametrize("models", [False, True])
def test_same_decisions_as_numpy(gpu_model, gpu_hosts, models, compiled):
    """`models`: hosts of three GPU models, a third of the GPU asks restricted to one or two of
    them (the GPUs they need reserved: scarcity.reserved)."""
    if models and not gpu_hosts:
        pytest.skip("no GPU to restrict")
    rng = np.random.default_rng(11)
    hosts = [Host(f"h{i}", ResourceAmounts(32000, 128 * GIB, 100 * GIB, 8000 if rng.random() < gpu_hosts else 0),
                  attributes={"driver.container": "ok", "driver.vm": "ok",
                              **({"gpu.model": "ABC"[i % 3]} if models else {})}) for i in range(80)]
    table = HostTable.from_hosts(hosts, gpu_model=gpu_model)
    asks = []
    for i in range(400):
        gpu = int(rng.choice([0, 0, 0, 250, 500, 1000, 2000])) if gpu_hosts else 0
        constraints = ([con("gpu.model", "in", sorted(rng.choice(list("ABC"), int(rng.integers(1, 3)), replace=False)))]
                       if models and gpu and rng.random() < 0.33 else None)
        asks.append(ask(int(rng.integers(1, 4)), int(rng.integers(100, 6000)), int(rng.integers(64, 20000)),
                        gpu=gpu, kind=str(rng.choice(["container", "vm"])), group=f"g{i}", constraints=constraints))
    config = EngineConfig(gpu_model=gpu_model)
    fused, reference = Plan(table, config), Plan(table, config)
    reference.fused = None
    a = place(table, asks, plan=fused)
    b = place(table, asks, plan=reference)
    assert [(r.hosts, r.gpus, r.reasons) for r in a] == [(r.hosts, r.gpus, r.reasons) for r in b]
    assert sum(len(r.hosts) for r in a) > 300
    if models and gpu_model == "devices":   # the reserve was in play, not only computed
        assert len(fused.overlay.gpu_reserved) and fused.overlay.gpu_reserved.any()


def test_numpy_where_the_kernel_does_not_fuse(monkeypatch):
    table = HostTable.from_hosts([Host("h", ResourceAmounts(1000, GIB))])
    assert Plan(table, EngineConfig.for_policy("nomad-binpack")).fused is None   # np.power: not fused
    assert Plan(table, EngineConfig(incremental=False)).fused is None   # the reference pipeline
    assert Plan(table, EngineConfig()).fused is not None
    monkeypatch.setattr(kernel, "REFRESH", None)   # numba not installed, no module built ahead of time
    assert Plan(table, EngineConfig()).fused is None


def test_a_kernel_that_fails_to_compile_leaves_the_plan_to_numpy(monkeypatch, caplog):
    def broken(*args):
        raise TypeError("cannot compile here")
    monkeypatch.setattr(kernel, "REFRESH", broken)
    table = HostTable.from_hosts([Host("h", ResourceAmounts(1000, GIB), attributes={"driver.container": "ok"})])
    plan = Plan(table, EngineConfig())
    assert plan.fused is None and "not available" in caplog.text
    assert place(table, [ask(2)], plan=plan)[0].hosts == ["h", "h"]


def test_a_mix_of_more_shapes_than_one_pairwise_block_is_left_to_numpy(compiled):
    shapes = [(1000 + i, GIB, 0, 1.0) for i in range(kernel.PAIRWISE_MAX + 1)]
    table = HostTable.from_hosts([Host(f"h{i}", ResourceAmounts(8000, 32 * GIB, 0, 2000)) for i in range(4)])
    config = EngineConfig(workload_mix=WorkloadMix(shapes))
    fused, reference = Plan(table, config), Plan(table, config)
    reference.fused = None
    need = amounts(ResourceAmounts(500, GIB, 0, 0))
    a, b = engine._new_class(fused, ask(), need), engine._new_class(reference, ask(), need)
    assert not fused.fused.refresh(np.array([1, 2]), need, a.static_ok, a.floor, a.score)
    engine._refresh(fused, a, np.array([1, 2]))
    engine._refresh(reference, b, np.array([1, 2]))
    assert bits(a.score) == bits(b.score)


def test_one_compiled_signature_for_every_plan(monkeypatch):
    """Every call has the argument types of the Plan's first (a refresh of no rows compiles it
    then, not in a placement): a call of other types would compile again, for seconds. And they
    are kernel.ARGUMENTS, the types the module built ahead of time reads its arguments as."""
    from numba.core import sigutils
    jit = kernel.jit_refresh()
    monkeypatch.setattr(kernel, "REFRESH", jit)
    hosts = [Host("a", ResourceAmounts(8000, 32 * GIB, 0, 2000)), Host("b", ResourceAmounts(8000, 32 * GIB))]
    for config in (EngineConfig(), EngineConfig(workload_mix=WorkloadMix([(1000, GIB, 500, 1.0)])),
                   EngineConfig.for_policy("k8s-default"), EngineConfig(gpu_model="pooled")):
        table = HostTable.from_hosts(hosts, gpu_model=config.gpu_model)
        place(table, [ask(3, gpu=500), ask(2)], plan=Plan(table, config))
    assert len(jit.signatures) == 1
    assert tuple(jit.signatures[0]) == sigutils.normalize_signature(aot.signature())[0]


def test_the_temporary_cache_directory_is_the_users_alone(tmp_path, monkeypatch):
    """The last place the compiled code is cached (package and home not writable): numba's cache
    files are pickles, so a directory another user could write is not used."""
    import os
    import tempfile
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    mine = kernel.private_cache_dir()
    assert mine is not None and os.stat(mine).st_mode & 0o777 == 0o700
    os.chmod(mine, 0o777)
    assert kernel.private_cache_dir() is None
    os.rmdir(mine)
    os.symlink(tmp_path / "elsewhere", mine)
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    assert kernel.private_cache_dir() is None


def test_the_kernels_gpu_column_is_the_tables():
    assert kernel.GPU == table.GPU


def test_a_stale_or_missing_module_is_not_used(built, tmp_path, monkeypatch, caplog):
    """A module built from another kernel.py (its digest differs) falls back to the JIT, said in
    the log; so do a missing one and one that does not load."""
    assert kernel.aot_refresh(built) is not None
    assert kernel.aot_refresh(str(tmp_path / os.path.basename(built))) is None   # none there
    monkeypatch.setattr(kernel, "source_digest", lambda: 12345)   # kernel.py changed since the build
    assert kernel.aot_refresh(built) is None and "stale" in caplog.text
    garbage = tmp_path / "garbage" / os.path.basename(built)
    garbage.parent.mkdir()
    garbage.write_bytes(b"not an ELF file")
    assert kernel.aot_refresh(str(garbage)) is None and "does not load" in caplog.text


def test_the_digest_is_of_kernel_py(tmp_path, monkeypatch):
    """Any change to kernel.py's text changes the digest the module is checked against."""
    copy = tmp_path / "kernel.py"
    text = Path(kernel.__file__).read_text()
    digests = set()
    for edit in (text, text.replace("return res", "return res + 0.0", 1), text + "\n", text.replace("GPU = 3", "GPU = 2")):
        copy.write_text(edit)
        monkeypatch.setattr(kernel, "__file__", str(copy))
        digests.add(kernel.source_digest())
    assert len(digests) == 4


def test_if_stale_rebuilds_only_a_stale_module(built, capsys):
    assert aot.main(["--out", built, "--if-stale"]) == 0
    assert "up to date" in capsys.readouterr().out
    assert aot.built_digest(built) == kernel.source_digest()


@pytest.mark.parametrize("where", ["per call", "kept"])
def test_arguments_the_compiled_code_would_misread_are_refused(where):
    """The module built ahead of time does not check its arguments' types (it reads the memory as
    ARGUMENTS say): Fused does, for what changes per call and for what it keeps."""
    hosts = [Host(f"h{i}", ResourceAmounts(8000, 32 * GIB, 0, 2000), attributes={"driver.container": "ok"})
             for i in range(4)]
    plan = Plan(HostTable.from_hosts(hosts), EngineConfig())
    need = amounts(ResourceAmounts(500, GIB, 0, 0))
    cls = engine._new_class(plan, ask(), need)
    rows = np.array([0, 2])
    assert plan.fused.refresh(rows, need, cls.static_ok, cls.floor, cls.score)
    if where == "per call":
        bad = [(rows.astype(np.int32), need), (rows, need.astype(np.float64)), (np.arange(6)[::2], need)]
        for bad_rows, bad_need in bad:
            with pytest.raises(TypeError, match="C-contiguous"):
                plan.fused.refresh(bad_rows, bad_need, cls.static_ok, cls.floor, cls.score)
    else:
        plan.overlay.free = plan.overlay.free.astype(np.int32)   # (never so: the overlay keeps int64)
        plan.fused = type(plan.fused)(plan.overlay, *plan.fused.hosts[-2:])
        with pytest.raises(TypeError, match="free"):
            plan.fused.refresh(rows, need, cls.static_ok, cls.floor, cls.score)


def test_the_scheduler_runs_the_module_built_ahead_of_time_without_numba(built):
    """With a current module, importing the scheduler imports no numba nor llvmlite (their ~110-120
    MiB of resident memory: README.md, issue 12) and Plans refresh with the module."""
    code = f"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("scheduler.placement._kernel_aot", {built!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
sys.modules[spec.name] = module   # as if built beside kernel.py
import scheduler.main
from scheduler.placement import Host, HostTable, EngineConfig, Plan, kernel
from packyard.records import ResourceAmounts
plan = Plan(HostTable.from_hosts([Host("h", ResourceAmounts(1000, 1 << 30))]), EngineConfig())
print(kernel.KERNEL, plan.fused is not None, sorted(m for m in sys.modules if m.split(".")[0] in ("numba", "llvmlite")))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["aot", "True", "[]"], done.stderr
