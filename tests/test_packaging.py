"""What a wheel carries: every file other than Python source and READMEs that the packages hold is
data the code reads at run time, and must be declared as package data. A deployment installs the
wheel, not this checkout (the Ansible deploy found Docker's seccomp rules missing: no container
driver on any host)."""
import fnmatch
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agent", "ctl", "packyard", "scheduler")


def declared() -> list[tuple[str, str]]:
    """(package directory, glob) pairs of [tool.setuptools.package-data]."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    return [(package.replace(".", "/"), glob) for package, globs in data.items() for glob in globs]


def test_every_data_file_of_the_packages_is_package_data():
    tracked = subprocess.run(["git", "ls-files", *PACKAGES], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    data = [f for f in tracked if not f.endswith((".py", ".md"))]
    assert "agent/drivers/container/seccomp-docker.json" in data
    missing = [f for f in data
               if not any(f.startswith(d + "/") and fnmatch.fnmatch(f[len(d) + 1:], g) for d, g in declared())]
    assert missing == []


def test_the_wheel_carries_the_data(tmp_path):
    """Built for real: what an installed ctl and agent read at run time is in the wheel."""
    import sys
    import zipfile
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    wheel, = tmp_path.glob("packyard-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("agent/drivers/container/seccomp-docker.json", "ctl/prometheus/prometheus.yml",
                   "ctl/prometheus/alerts.yml"):
        assert needed in names
    # the placement kernel built ahead of time (setup.py): the scheduler runs it without numba
    assert any(n.startswith("scheduler/placement/_kernel_aot.") and n.endswith(".so") for n in names)
