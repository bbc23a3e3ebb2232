"""Regenerate the Python modules for the gRPC API: `python proto/generate.py`.

Output goes to packyard/v1/ (the shared package), and is committed so that `pip install .` needs no
protoc; tests/test_proto.py checks the committed files match what this script produces.
"""
import pathlib
import sys

import grpc_tools
from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"


def generate(out_dir: pathlib.Path = ROOT) -> None:
    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    files = sorted(str(p.relative_to(PROTO)) for p in (PROTO / "packyard" / "v1").glob("*.proto"))
    args = ["protoc", f"-I{PROTO}", f"-I{include}", f"--python_out={out_dir}",
            f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}", *files]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    (out_dir / "packyard" / "v1" / "__init__.py").write_text(
        '"""Generated gRPC API (packyard.v1); regenerate with `python proto/generate.py`."""\n')


if __name__ == "__main__":
    generate(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
