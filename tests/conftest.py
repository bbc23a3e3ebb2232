import asyncio
import os
import shutil
import time
from pathlib import Path

import pytest
from hypothesis import settings

from packyard.etcd import Etcd
from scheduler.embedded_etcd import EtcdServer

ROOT = Path(__file__).resolve().parent.parent

# Hypothesis fails an example slower than 200 ms: a timed assertion, which this suite does not make
# (speed is the benchmarks'); on 2 shared cores a 100,000-slot example overran it now and then.
settings.register_profile("packyard", deadline=None)
settings.load_profile("packyard")


def pytest_collection_modifyitems(config, items):
    missing = [b for b in ("etcd",) if shutil.which(b) is None]
    for item in items:
        if missing and "etcd" in item.fixturenames:
            item.add_marker(pytest.mark.skip(reason=f"not installed: {', '.join(missing)}"))


def searchable_dir(request, name: str) -> Path:
    """A new directory under /var/tmp, removed after the test (or module): containers run as an
    unprivileged host uid (their user namespace's root) and runc looks their root filesystem up by
    its host path, so every directory above an agent's state dir must be searchable by others.
    pytest's own temporary directories are not (it makes pytest-of-root 0700 at each session)."""
    import tempfile
    path = Path(tempfile.mkdtemp(prefix=f"packyard-{name}-", dir="/var/tmp"))
    path.chmod(0o711)
    request.addfinalizer(lambda: shutil.rmtree(path, ignore_errors=True))
    return path


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory):
    """One real etcd for the session; each test gets a clean keyspace through `etcd`."""
    with EtcdServer(tmp_path_factory.mktemp("etcd"), tie_to_parent=True) as server:
        yield server


@pytest.fixture
async def etcd(etcd_server):
    client = Etcd(etcd_server.endpoint)
    await client.connect()
    await client.delete_prefix("/packyard/")
    yield client
    await client.delete_prefix("/packyard/")
    await client.close()


def opt_in(reason: str) -> pytest.MarkDecorator:
    """A slow proof kept out of the default suite (which must stay under 15 minutes on 2 cores): it
    runs with PACKYARD_SLOW_TESTS=1, as CI's maintainers run it before resolving an issue."""
    return pytest.mark.skipif(os.environ.get("PACKYARD_SLOW_TESTS") != "1",
                              reason=f"{reason}: run with PACKYARD_SLOW_TESTS=1")


# A container's command that ends on SIGTERM: a shell as PID 1 ignores it (no handler, and the kernel
# delivers no default action to a namespace's init), so `exec sleep` waits out the stop's 10 s grace
# before SIGKILL, in a test that waits for "stopped" and in every cluster's teardown. What happens
# after the grace has its own test on real runc (tests/agent/drivers/test_container.py).
UNTIL_STOPPED = "trap 'exit 0' TERM; sleep 3600 & wait"


def needs_root():
    return pytest.mark.skipif(os.geteuid() != 0, reason="needs root (cgroups, namespaces)")


async def eventually(check, timeout=10.0, interval=0.02, what="condition"):
    """Await until check() (sync or async) returns a truthy value; return it."""
    deadline = asyncio.get_running_loop().time() + timeout
    last = None
    while True:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {last!r}")
        await asyncio.sleep(interval)


def wait_for(predicate, timeout: float = 30.0, what: str = "condition", interval: float = 0.2):
    """Poll predicate() (for tests driving real processes from plain functions) until it returns
    a truthy value; return it."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")
