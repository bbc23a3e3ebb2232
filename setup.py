"""The one build step pyproject.toml cannot declare: the placement kernel compiled ahead of time
(scheduler/placement/aot.py), so that the scheduler runs it without importing numba. Every install
builds it: `pip install .`, `pip wheel .` (the Ansible deploy's wheelhouse: a wheel for this
platform and Python), the editable install of deploy/local/setup.sh.

It is optional: where it cannot be built (no C compiler) the install goes on without it and the
scheduler compiles the kernel with numba at start, as before. PACKYARD_KERNEL_CPU picks the CPU
it is compiled for (default a generic one of the architecture: a wheel runs on other hosts;
setup.sh, which builds on the machine that runs it, says "host").
"""
import os
import sys
import types

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CompileError

HERE = os.path.dirname(os.path.abspath(__file__))


def placement_package() -> None:
    """This tree's scheduler.placement, as packages whose __init__ is not run: the engine it
    imports needs the project's dependencies, which the build's environment does not hold (only
    pyproject.toml's build requirements); kernel.py and aot.py need numpy and numba alone."""
    for name, path in (("scheduler", "scheduler"), ("scheduler.placement", "scheduler/placement")):
        package = types.ModuleType(name)
        package.__path__ = [os.path.join(HERE, path)]
        sys.modules[name] = package


class BuildKernel(build_ext):
    def build_extension(self, ext):
        try:
            placement_package()
            from scheduler.placement import aot  # numba: a build requirement (pyproject.toml)

            aot.build(self.get_ext_fullpath(ext.name), os.environ.get("PACKYARD_KERNEL_CPU", ""))
        except Exception as error:   # the kind of error build_ext skips an optional extension for
            raise CompileError(f"the kernel ahead of time: {error}") from error


setup(ext_modules=[Extension("scheduler.placement._kernel_aot", sources=[], optional=True)],
      cmdclass={"build_ext": BuildKernel})
