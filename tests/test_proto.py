"""The generated gRPC modules committed in packyard/v1 are exactly what proto/generate.py makes."""
import importlib.util
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.skipif(importlib.util.find_spec("grpc_tools") is None, reason="grpcio-tools not installed")
def test_generated_modules_are_up_to_date(tmp_path):
    spec = importlib.util.spec_from_file_location("generate", ROOT / "proto" / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    generate.generate(tmp_path)
    fresh = sorted(p.name for p in (tmp_path / "packyard" / "v1").iterdir())
    committed = sorted(p.name for p in (ROOT / "packyard" / "v1").iterdir() if p.suffix in (".py", ".pyi"))
    assert fresh == committed
    for name in fresh:
        assert (tmp_path / "packyard" / "v1" / name).read_text() == \
            (ROOT / "packyard" / "v1" / name).read_text(), f"{name} is stale: run python proto/generate.py"


def test_agent_and_scheduler_do_not_import_each_other():
    for pkg, other in (("agent", "scheduler"), ("scheduler", "agent")):
        for path in (ROOT / pkg).rglob("*.py"):
            bad = re.findall(rf"^\s*(?:from|import) {other}(?:\.|\s|$)", path.read_text(), re.M)
            assert not bad, f"{path} imports {other}"
