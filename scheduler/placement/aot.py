"""kernel.py's refresh compiled ahead of time (numba's pycc) into an extension module, so that the
scheduler runs the compiled kernel without importing numba and llvmlite (~110-120 MiB of its
resident memory, README.md's issue-12 section).

    python -m scheduler.placement.aot                  # builds kernel.AOT_MODULE beside kernel.py
    python -m scheduler.placement.aot --if-stale --cpu host

The module holds `refresh` (kernel._refresh for kernel.ARGUMENTS' types) and `digest()`, the
kernel.source_digest() it was built from: kernel.aot_refresh uses it only while kernel.py is
unchanged, and numba's JIT otherwise. Builds: setup.py's build_ext (pip install, pip wheel for the
Ansible deploy, the editable install of deploy/local/setup.sh), and setup.sh again when it is
stale. The code is the JIT's: same LLVM, same float operations in the same order (no fast-math),
so the same scores bit for bit; only for a generic CPU unless `cpu` says otherwise (a wheel runs
on other hosts).

numba.pycc is "pending deprecation" since numba 0.57 ("replacement technology is being
developed") and still in 0.68. Should a numba drop it, the build fails, setup.py goes on without
the module (it is optional) and the scheduler compiles with the JIT as before: more memory, the
same scores.
"""
from __future__ import annotations

import argparse
import os
import sys
import sysconfig
import tempfile
import warnings

from scheduler.placement import kernel

NUMBA_TYPES = {"i8": "int64", "f8": "float64", "b1": "boolean"}


def signature() -> str:
    """kernel.ARGUMENTS as a numba signature: void(int64[::1], ..., float64, ...)."""
    parts = []
    for _, kind, ndim in kernel.ARGUMENTS:
        name = NUMBA_TYPES[kind]
        parts.append(name if ndim == 0 else f"{name}[{', '.join([':'] * (ndim - 1) + ['::1'])}]")
    return f"void({', '.join(parts)})"


def default_path() -> str:
    """Where kernel.aot_refresh looks: beside kernel.py, with this Python's extension suffix."""
    name = kernel.AOT_MODULE.rsplit(".", 1)[1]
    return os.path.join(os.path.dirname(kernel.__file__), name + sysconfig.get_config_var("EXT_SUFFIX"))


def build(path: str, cpu: str = "", digest: int | None = None) -> None:
    """Compiles the module into `path` (its file name gives the module's name): for `cpu` (LLVM's
    name; "" generic, "host" this machine's), baking in `digest` (default kernel.source_digest()).
    Written beside and renamed over `path`, so a scheduler that has the old one loaded keeps it."""
    from numba import njit
    from numba.core.errors import NumbaPendingDeprecationWarning
    with warnings.catch_warnings():   # pycc's, since numba 0.57 (see the module's docstring)
        warnings.simplefilter("ignore", NumbaPendingDeprecationWarning)
        from numba.pycc import CC

    digest = kernel.source_digest() if digest is None else digest
    directory, file = os.path.split(os.path.abspath(path))
    name = file.split(".", 1)[0]
    cc = CC(name)
    cc.target_cpu = cpu
    space = kernel.namespace(njit)
    cc.export("refresh", signature())(space["_refresh"])
    cc.export("digest", "int64()")(_constant(digest))
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".aot-") as temporary:
        cc.output_dir = temporary
        cc.output_file = file
        cc.compile()
        os.replace(os.path.join(temporary, file), path)


def _constant(value: int):
    def digest():
        return value   # a closure's constant: numba compiles it in
    return digest


def built_digest(path: str) -> int | None:
    """The digest of the module at `path`, None if there is none or it does not load (in a child:
    a module once loaded stays loaded in this process)."""
    import subprocess
    if not os.path.exists(path):
        return None
    code = ("import importlib.util, sys; s = importlib.util.spec_from_file_location(sys.argv[1], sys.argv[2]); "
            "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); print(m.digest())")
    done = subprocess.run([sys.executable, "-c", code, kernel.AOT_MODULE, path], capture_output=True, text=True)
    return int(done.stdout) if done.returncode == 0 and done.stdout.strip().isdigit() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scheduler.placement.aot", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=default_path(), help="the module's path (default: beside kernel.py)")
    parser.add_argument("--cpu", default="", help='LLVM CPU name: "" a generic one of this architecture, "host" this machine\'s')
    parser.add_argument("--if-stale", action="store_true", help="only when the module is missing or not built from this kernel.py")
    args = parser.parse_args(argv)
    if args.if_stale and built_digest(args.out) == kernel.source_digest():
        print(f"{args.out}: up to date")
        return 0
    build(args.out, args.cpu)
    print(f"{args.out}: built")
    return 0


if __name__ == "__main__":
    sys.exit(main())
