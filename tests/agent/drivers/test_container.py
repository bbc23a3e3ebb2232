"""The container driver on real runc, cgroups, overlayfs and network namespaces."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import tarfile
import time
from pathlib import Path

import pytest

from agent.drivers.base import DriverError, ExitResult, Handle, InstanceSpec
from agent.drivers.container import ContainerDriver
from agent.drivers.container import cgroups as cg
from agent.drivers.container import logger as logger_mod
from agent.drivers.container import rootfs as rootfs_mod
from agent.drivers.container import runc as runc_mod
from tests.agent.conftest import RUNC, needs_root, needs_runc

MI = 1 << 20

# -- pure parts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("instance_id,expected", [
    ("web.api.0-x7k2", "web.api.0-x7k2"),
    ("has space/slash", None),
    ("..", None),
], ids=["valid-kept", "sanitized", "dotdot"])
def test_container_id(instance_id, expected):
    cid = runc_mod.container_id(instance_id)
    if expected:
        assert cid == expected
    else:
        assert runc_mod.VALID_ID.match(cid) and cid not in (".", "..")
        assert cid != runc_mod.container_id(instance_id + "!")


def test_host_access_is_one_definition_the_agent_reads_without_loading_the_spec_parser():
    import subprocess
    import sys

    from agent.drivers.container import driver
    from packyard import privilege, spec
    assert driver.host_access is privilege.host_access and spec.HOST_ACCESS is privilege.HOST_ACCESS
    # packyard.spec loads pydantic and yaml (~11 MiB): the agent's drivers must not
    code = ("import sys, agent.drivers.container.driver, agent.drivers.vm.driver; "
            "print(sorted(m for m in ('pydantic', 'yaml', 'packyard.spec') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def make_config(**kw):
    args = dict(args=["sh", "-c", "exit 3"], env={"A": "1"}, rootfs=Path("/s/rootfs"),
                netns_path="/var/run/netns/pyn-x", cgroups_path="packyard/n1/i1", hostname="i1")
    return runc_mod.config(**{**args, **kw})


def test_config_joins_our_netns_and_cgroup_without_limits():
    c = make_config()
    linux = c["linux"]
    assert {"type": "network", "path": "/var/run/netns/pyn-x"} in linux["namespaces"]
    assert {n["type"] for n in linux["namespaces"]} == {"pid", "ipc", "uts", "mount", "network", "cgroup"}
    assert linux["cgroupsPath"] == "/packyard/n1/i1"
    assert set(linux["resources"]) == {"devices"}          # limits are the agent's, not runc's
    assert c["process"]["args"] == ["sh", "-c", "exit 3"] and c["process"]["terminal"] is False
    assert c["root"] == {"path": "/s/rootfs", "readonly": False}
    json.dumps(c)


@pytest.mark.parametrize("env,path", [({}, runc_mod.DEFAULT_PATH), ({"PATH": "/opt/bin"}, "/opt/bin")],
                         ids=["path-added", "path-kept"])
def test_config_env(env, path):
    assert f"PATH={path}" in make_config(env=env)["process"]["env"]


@pytest.mark.parametrize("info,oom,expected", [
    ((1, 0), 0, ExitResult(0, reason="exit status 0")),
    ((1, 3), 0, ExitResult(3, reason="exit status 3")),
    ((2, 9), 0, ExitResult(137, reason="killed by signal 9")),
    ((2, 9), 1, ExitResult(137, oom_killed=True, reason="OOMKilled")),
    ((1, 137), 1, ExitResult(137, oom_killed=True, reason="OOMKilled")),
    (None, 0, ExitResult(None, reason="ended while the agent was not its parent")),
], ids=["zero", "three", "sigkill", "oom-signal", "oom-shell", "not-our-child"])
def test_exit_result(info, oom, expected):
    from agent.drivers.container.driver import _exit_result

    class Info:                                          # the fields of os.waitid_result we read
        def __init__(self, code, status):
            self.si_code = {1: os.CLD_EXITED, 2: os.CLD_KILLED}[code]
            self.si_status = status
    assert _exit_result(Info(*info) if info else None, oom) == expected


def test_tar_images_lose_setuid_but_cannot_escape(tmp_path):
    import io
    good, bad = tmp_path / "good.tar", tmp_path / "bad.tar"
    with tarfile.open(good, "w") as tf:
        f = tarfile.TarInfo("bin/su")
        f.size, f.mode = 1, 0o4755
        tf.addfile(f, io.BytesIO(b"x"))
        link = tarfile.TarInfo("bin/sh")
        link.type, link.linkname = tarfile.SYMTYPE, "/bin/busybox"       # absolute: fine in a rootfs
        tf.addfile(link)
    with tarfile.open(bad, "w") as tf:
        f = tarfile.TarInfo("../../escaped")
        f.size = 1
        tf.addfile(f, io.BytesIO(b"x"))
    root = rootfs_mod.lower_dir(str(good), tmp_path / "cache")
    assert (root / "bin/su").stat().st_mode & 0o7777 == 0o755       # issue 15: no setuid from a .tar
    assert os.readlink(root / "bin/sh") == "/bin/busybox"
    assert rootfs_mod.lower_dir(str(good), tmp_path / "cache") == root        # extracted once
    with pytest.raises(rootfs_mod.RootfsError, match="outside the destination"):
        rootfs_mod.lower_dir(str(bad), tmp_path / "cache")
    assert not list(tmp_path.rglob("escaped"))
    with pytest.raises(rootfs_mod.RootfsError, match="does not exist"):
        rootfs_mod.lower_dir(str(tmp_path / "nope"), tmp_path / "cache")


class CountingBuild:
    """A build function for LowerLayers that takes a while and counts its calls."""

    def __init__(self, fail_first: bool = False):
        self.calls: list[str | None] = []
        self.fail_first = fail_first

    def __call__(self, image: str | None, cache: Path) -> Path:
        self.calls.append(image)
        time.sleep(0.05)
        if self.fail_first and len(self.calls) == 1:
            raise rootfs_mod.RootfsError("broken image")
        return cache / f"built-{len(self.calls)}"


async def test_a_burst_of_starts_waits_for_one_build_per_image(tmp_path):
    build = CountingBuild()
    layers = rootfs_mod.LowerLayers(tmp_path, build)
    tar = tmp_path / "image.tar"
    tar.write_bytes(b"x")
    got = await asyncio.gather(*(layers.get(None) for _ in range(20)), *(layers.get(str(tar)) for _ in range(5)))
    assert sorted(build.calls, key=str) == sorted([None, str(tar)], key=str)   # one build per image
    assert len(set(got[:20])) == 1 and len(set(got[20:])) == 1
    assert await layers.get(None) == got[0] and len(build.calls) == 2  # kept
    os.utime(tar, ns=(1, 1))                                          # replaced in place
    await layers.get(str(tar))
    assert build.calls[-1] == str(tar) and len(build.calls) == 3
    assert await layers.get(str(tmp_path)) == tmp_path and len(build.calls) == 3   # a directory: as is


async def test_a_failed_build_is_tried_again_by_the_next_start(tmp_path):
    build = CountingBuild(fail_first=True)
    layers = rootfs_mod.LowerLayers(tmp_path, build)
    results = await asyncio.gather(layers.get(None), layers.get(None), return_exceptions=True)
    assert [str(r) for r in results] == ["broken image"] * 2 and len(build.calls) == 1
    assert await layers.get(None) == tmp_path / "built-2"


async def test_warming_builds_the_default_image_and_keeps_a_failure_quiet(tmp_path):
    build = CountingBuild(fail_first=True)
    layers = rootfs_mod.LowerLayers(tmp_path, build)
    layers.warm()                                       # fails: nobody is told, nothing is kept
    await asyncio.sleep(0.2)
    assert build.calls == [None]
    layers.warm()
    assert await layers.get(None) == tmp_path / "built-2" and build.calls == [None, None]


# -- real containers ------------------------------------------------------------------------------

def spec(instance_id: str, command: list[str], *, cpu_milli=1000, memory=64 * MI, image=None, gpus=()):
    return InstanceSpec(id=instance_id, job="t", group="g", kind="container", cpu_milli=cpu_milli,
                        memory_bytes=memory, config={"image": image, "command": command, "env": {}}, gpus=gpus)


class Harness:
    """A driver plus every handle it started, destroyed at the end even when the test failed."""

    def __init__(self, node: str, state_dir: Path, subnet: str, **kw):
        self.node, self.state_dir, self.subnet = node, state_dir, subnet
        self.driver = ContainerDriver(node, state_dir, subnet, runc=RUNC, **kw)
        self.handles: list[Handle] = []

    async def start(self, *args, **kw) -> Handle:
        h = await self.driver.start(spec(*args, **kw))
        self.handles.append(h)
        return h

    async def close(self) -> list[str]:
        """Destroy everything, shut the driver down; return what is still left on the host."""
        left = []
        for h in self.handles:
            try:
                await self.driver.destroy(h)
            except DriverError as e:            # still try the rest
                left.append(f"{h.id}: {e}")
            left += [f"{h.id}: {what}" for what in leftovers(self.driver, h)]
        await self.driver.shutdown()
        for root in self.driver.cgroups.roots():
            if os.path.exists(os.path.join(root, cg.node_path(self.node))):
                left.append(f"node cgroup in {root}")
        if os.path.exists(f"/sys/class/net/{self.driver.network.bridge}"):
            left.append("bridge")
        return left


@pytest.fixture
async def harness(node, state_dir, subnet):
    h = Harness(node, state_dir, subnet)
    yield h
    assert await h.close() == []


async def until(predicate, timeout=5.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


def leftovers(driver: ContainerDriver, h: Handle) -> list[str]:
    """What of instance `h` is still on the host."""
    found = []
    for root in driver.cgroups.roots():
        if os.path.exists(os.path.join(root, h.data["cgroup"])):
            found.append(f"cgroup in {root}")
    for what, path in [("netns", f"/var/run/netns/{h.data.get('netns', '-')}"),
                       ("bundle", h.data["bundle"]), ("runc state", driver.runc.root / h.data["container_id"])]:
        if os.path.exists(path):
            found.append(what)
    if rootfs_mod.is_mounted(Path(h.data["bundle"]) / "rootfs"):
        found.append("overlay mount")
    pidfd = logger_mod.find(logger_mod.LogProcess.from_data(h.data.get("logger")))
    if pidfd is not None:
        os.close(pidfd)
        found.append("log process")
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.integration
@needs_root()
@needs_runc()
async def test_fingerprint(harness):
    assert await harness.driver.fingerprint() == {"driver.container": "ok", "cgroup.version":
                                                  harness.driver.cgroups.version}
    broken = ContainerDriver(harness.node, harness.state_dir, harness.subnet, runc="/nonexistent/runc")
    attrs = await broken.fingerprint()
    assert attrs["driver.container"].startswith("unavailable: runc not found")


@pytest.mark.integration
@needs_root()
@needs_runc()
async def test_start_logs_stop_and_clean_up(harness):
    d = harness.driver
    latencies = []
    for i in range(5):
        t0 = time.perf_counter()
        h = await harness.start(f"t.g.{i}-run", ["sh", "-c", "echo hello; echo oops >&2; sleep 1000"])
        latencies.append(time.perf_counter() - t0)
    print(f"start(): p50 {statistics.median(latencies) * 1000:.1f} ms, "
          f"max {max(latencies) * 1000:.1f} ms over {len(latencies)}")
    await until(lambda: d.log_path(h).read_text() == "hello\noops\n")       # stdout and stderr
    pid = h.data["pid"]
    assert alive(pid) and d.address(h).startswith(harness.subnet.rsplit(".", 1)[0])
    assert pid in d.cgroups.pids(h.data["cgroup"])
    await d.stop(h, grace_seconds=0.3)          # sh as pid 1 ignores SIGTERM: killed after grace
    result = await d.wait(h)
    assert result == ExitResult(137, reason="killed by signal 9")
    assert not alive(pid)
    await d.destroy(h)
    assert leftovers(d, h) == []
    await d.destroy(h)                          # idempotent
    assert "hello" in d.log_path(h).read_text()  # the log outlives the instance...
    d.remove_logs(h)
    assert not d.log_path(h).exists()           # ...until removed


@pytest.mark.integration
@needs_root()
@needs_runc()
async def test_only_the_chosen_gpu_is_allowed(harness, tmp_path):
    """No GPU here: fake NVIDIA nodes (major 195, no driver behind them). Opening an allowed one
    says "no such device" (ENXIO, from the missing driver). In the container's user namespace no
    node can be made (mknod: EPERM); the device cgroup allows only the chosen one (devices.list)."""
    d = harness.driver
    d.dev_dir = tmp_path / "dev"
    d.dev_dir.mkdir()
    for n in (0, 1):
        os.mknod(d.dev_dir / f"nvidia{n}", 0o020666, os.makedev(195, n))
    script = "env; ls /dev; cat /dev/nvidia1; mknod /tmp/n0 c 195 0; cat /tmp/n0; echo done"
    h = await harness.start("t.g.0-gpu", ["sh", "-c", script], gpus=(1,))
    await until(lambda: "done" in d.log_path(h).read_text())
    out = d.log_path(h).read_text()
    assert {"NVIDIA_VISIBLE_DEVICES=1", "CUDA_VISIBLE_DEVICES=1", "CUDA_DEVICE_ORDER=PCI_BUS_ID"} <= set(out.split())
    assert "nvidia1" in out.split() and "nvidia0" not in out.split()          # ls /dev
    assert "can't open '/dev/nvidia1': No such device or address" in out     # allowed
    assert "mknod: /tmp/n0: Operation not permitted" in out                  # no node made
    assert (h.data["gpus"], h.data["gpu_devices"]) == ([1], ["/dev/nvidia1"])
    if d.cgroups.version == "v1":
        rules = Path("/sys/fs/cgroup/devices", h.data["cgroup"], "devices.list").read_text().split("\n")
        assert "c 195:1 rwm" in rules and "c 195:0 rwm" not in rules

    plain = await harness.start("t.g.1-gpu", ["sh", "-c", "env; ls /dev; echo done"])
    await until(lambda: "done" in d.log_path(plain).read_text())
    out = d.log_path(plain).read_text()
    assert "VISIBLE_DEVICES" not in out and "nvidia" not in out and "gpus" not in plain.data

    with pytest.raises(DriverError, match="GPU 2 chosen for it has no device node"):
        await harness.start("t.g.2-gpu", ["true"], gpus=(2,))


@pytest.mark.integration
@needs_root()
@needs_runc()
async def test_stop_is_sigterm_first(harness):
    d = harness.driver
    h = await harness.start("t.g.0-term", ["sh", "-c", "trap 'echo bye; exit 0' TERM; "
                                           "echo ready; while :; do sleep 0.05; done"])
    await until(lambda: "ready" in d.log_path(h).read_text())
    t0 = time.monotonic()
    await d.stop(h, grace_seconds=10)
    assert time.monotonic() - t0 < 2                # ended on SIGTERM, long before the grace
    assert await d.wait(h) == ExitResult(0, reason="exit status 0")
    assert "bye" in d.log_path(h).read_text()


@pytest.mark.integration
@needs_root()
@needs_runc()
@pytest.mark.parametrize("parallel", [2, 0], ids=["two-at-once", "default"])
async def test_parallel_starts_run_in_the_order_they_came(harness, parallel):
    d = harness.driver = ContainerDriver(harness.node, harness.state_dir, harness.subnet, runc=RUNC,
                                         parallel_starts=parallel)
    done: list[int] = []

    async def start(i: int) -> Handle:
        h = await harness.start(f"t.g.{i}-par", ["sleep", "1000"])
        done.append(i)
        return h

    t0 = time.perf_counter()
    handles = await asyncio.gather(*(start(i) for i in range(8)))
    print(f"8 parallel starts: {(time.perf_counter() - t0) * 1000:.0f} ms, in the order {done}")
    assert len({d.address(h) for h in handles}) == 8
    assert all(alive(h.data["pid"]) for h in handles)
    # a queue, not a crowd: the first asked run first (two at a time), the last last
    assert set(done[:2]) <= {0, 1, 2} and set(done[-2:]) <= {5, 6, 7}


@pytest.mark.integration
@needs_root()
@needs_runc()
async def test_a_failed_start_in_the_line_does_not_hold_up_the_ones_after_it(harness):
    """Each start waits for the previous one's end before `runc start`: one that fails (its command
    does not exist) must still let the rest go on, and leave nothing behind."""
    d = harness.driver = ContainerDriver(harness.node, harness.state_dir, harness.subnet, runc=RUNC,
                                         parallel_starts=2)
    commands = [["sleep", "1000"], ["/no-such-program"], ["sleep", "1000"], ["sleep", "1000"]]
    results = await asyncio.wait_for(asyncio.gather(
        *(harness.start(f"t.g.{i}-line", c) for i, c in enumerate(commands)), return_exceptions=True), 60)
    assert isinstance(results[1], DriverError) and "no-such-program" in str(results[1])
    assert all(alive(h.data["pid"]) for i, h in enumerate(results) if i != 1)
    assert not (d.instances_dir / runc_mod.container_id("t.g.1-line")).exists()


@pytest.mark.integration
@needs_root()
@needs_runc()
async def test_exit_code(harness):
    h = await harness.start("t.g.0-exit", ["sh", "-c", "exit 3"])
    assert await asyncio.wait_for(harness.driver.wait(h), 5) == ExitResult(3, reason="exit status 3")


@pytest.mark.integration
@needs_root()
@needs_runc()
@pytest.mark.parametrize("command,image,error", [
    (["/no-such-program"], None, "no-such-program"),
    (["sh"], "/no/such/image", "image /no/such/image does not exist"),
], ids=["bad-command", "bad-image"])
async def test_start_failure_is_a_driver_error_and_leaves_nothing(harness, command, image, error):
    with pytest.raises(DriverError, match=error) as failed:
        await harness.start("t.g.0-bad", command, image=image)
    print(failed.value)
    d = harness.driver
    assert not list(d.instances_dir.iterdir())
    assert not os.path.exists(os.path.join(d.cgroups.roots()[0], cg.instance_path(d.node, "t.g.0-bad")))
    assert not d.network.pool.in_use()


@pytest.mark.integration
@needs_root()
@needs_runc()
async def test_memory_limit_oom_kills_only_that_container(harness):
    d = harness.driver
    neighbour = await harness.start("t.g.0-calm", ["sleep", "1000"], memory=64 * MI)
    hog = await harness.start("t.g.1-hog", ["sh", "-c", "dd if=/dev/zero of=/dev/null bs=200M count=1"],
                              memory=32 * MI)
    result = await asyncio.wait_for(d.wait(hog), 10)
    assert result.oom_killed and result.reason == "OOMKilled", result
    assert (await d.stats(hog)).oom_kills >= 1
    assert alive(neighbour.data["pid"])
    assert (await d.stats(neighbour)).oom_kills == 0


@pytest.mark.integration
@needs_root()
@needs_runc()
async def test_disk_is_the_writable_layer_and_the_log_not_the_image(harness):
    """What resources.disk is held to (issue 15): what the container wrote to its root and its log."""
    d = harness.driver
    quiet = await harness.start("t.g.0-quiet", ["sleep", "1000"])
    writer = await harness.start("t.g.1-writer", ["sh", "-c", "dd if=/dev/zero of=/fill bs=1M count=3 2>/dev/null; "
                                                  "head -c 200000 /dev/zero | tr '\\0' x; echo; exec sleep 1000"])
    log = d.log_path(writer)
    for _ in range(100):
        if log.exists() and log.stat().st_size > 200_000:
            break
        await asyncio.sleep(0.1)
    base = (await d.stats(quiet)).disk_bytes
    used = (await d.stats(writer)).disk_bytes
    assert base is not None and base < 256 * 1024            # a fresh layer: a few directories
    assert 3 * MI + 200_000 <= used < 4 * MI, used           # the 3 MiB file and the 200 kB of log


@pytest.mark.integration
@needs_root()
@needs_runc()
async def test_cpu_quota(harness):
    d = harness.driver
    h = await harness.start("t.g.0-spin", ["sh", "-c", "while :; do :; done"], cpu_milli=250)
    await asyncio.sleep(0.2)
    before, t0 = (await d.stats(h)).cpu_seconds, time.monotonic()
    await asyncio.sleep(2.0)
    cores = ((await d.stats(h)).cpu_seconds - before) / (time.monotonic() - t0)
    print(f"0.25-core container used {cores:.3f} cores")
    assert 0.15 <= cores <= 0.35


@pytest.mark.integration
@needs_root()
@needs_runc()
async def test_two_containers_reach_each_other_and_the_bridge(harness):
    d = harness.driver
    server = await harness.start("t.g.0-srv", ["sleep", "1000"])
    gateway = d.network.gateway
    client = await harness.start("t.g.1-cli", ["sh", "-c",
                                 f"ping -c1 -W1 {gateway} && ping -c1 -W1 {d.address(server)}"])
    assert d.address(server) != d.address(client)
    result = await asyncio.wait_for(d.wait(client), 10)
    assert result.exit_code == 0, d.log_path(client).read_text()


@pytest.mark.integration
@needs_root()
@needs_runc()
async def test_recover_after_agent_restart(harness):
    first = harness.driver
    h = await harness.start("t.g.0-keep", ["sleep", "1000"])
    gone = await harness.start("t.g.1-gone", ["sh", "-c", "exit 0"])
    await asyncio.wait_for(first.wait(gone), 5)
    first.close()                                # the agent goes away; containers keep running
    # a new driver object on the same state dir: the restarted agent
    second = harness.driver = ContainerDriver(harness.node, harness.state_dir, harness.subnet, runc=RUNC)
    handle = Handle(**json.loads(json.dumps(h.__dict__)))        # as persisted by the agent
    assert await second.recover(handle)
    assert not await second.recover(Handle(**json.loads(json.dumps(gone.__dict__))))
    assert (await second.stats(handle)).memory_bytes > 0
    assert second.address(handle) == first.address(h)
    await second.stop(handle, grace_seconds=0.2)
    assert (await second.wait(handle)).reason == "killed by signal 9"
    await second.destroy(handle)
    assert leftovers(second, handle) == []


@pytest.mark.integration
@needs_root()
@needs_runc()
async def test_a_start_cut_off_by_the_agents_end_is_discarded_then_made_again(harness):
    """The agent died after its start had made the container but before it kept a handle: the
    restarted agent has only the spec. The start made again must not fail on the parts left."""
    first = harness.driver
    cut = await first.start(spec("t.g.0-cut", ["sleep", "1000"]))    # no handle kept for it
    first.close()
    second = harness.driver = ContainerDriver(harness.node, harness.state_dir, harness.subnet, runc=RUNC)
    with pytest.raises(DriverError, match="already exists"):
        await second.start(spec("t.g.0-cut", ["sleep", "1000"]))
    await second.discard(spec("t.g.0-cut", ["sleep", "1000"]))
    assert not alive(cut.data["pid"])
    # its log process was never known to this agent: it ends by itself at the container's end (EOF),
    # and is reaped here, as init would reap the orphan of a dead agent
    log_process = logger_mod.find(logger_mod.LogProcess.from_data(cut.data["logger"]))
    assert log_process is not None and await logger_mod.ended(log_process, 5)
    logger_mod.reap(log_process)
    os.close(log_process)
    assert leftovers(second, cut) == []
    await second.discard(spec("t.g.0-cut", ["sleep", "1000"]))        # nothing left: nothing to do
    again = await harness.start("t.g.0-cut", ["sleep", "1000"])
    assert alive(again.data["pid"]) and again.data["pid"] != cut.data["pid"]


def busybox_image(root: Path, marker: str) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "bin/busybox").write_bytes(Path("/bin/busybox").read_bytes())
    (root / "bin/busybox").chmod(0o755)
    for applet in ("sh", "cat", "echo"):
        (root / "bin" / applet).symlink_to("busybox")
    (root / "marker").write_text(marker)
    return root


@pytest.mark.integration
@needs_root()
@needs_runc()
@pytest.mark.parametrize("as_tar", [False, True], ids=["directory", "tar"])
async def test_image(harness, tmp_path, as_tar):
    d = harness.driver
    image = busybox_image(tmp_path / "image", "from-the-image")
    if as_tar:
        tar = tmp_path / "image.tar"
        with tarfile.open(tar, "w") as tf:
            tf.add(image, arcname=".")
        image = tar
    command = ["/bin/sh", "-c", "cat /marker; echo written > /new; echo changed > /marker"]
    for i in range(2):
        h = await harness.start(f"t.g.{i}-img", command, image=str(image))
        # a directory image is used as it is: its root-owned 0644 file is not the container root's
        # (a user namespace's), but / is (the writable layer); a .tar is extracted with shifted owners
        assert (await asyncio.wait_for(d.wait(h), 5)).exit_code == (0 if as_tar else 1)
        assert d.log_path(h).read_text().startswith("from-the-image")   # lower layer untouched
        assert as_tar or "can't create /marker: Permission denied" in d.log_path(h).read_text()
    if as_tar:
        assert len(list(d.shifted_lowers.cache.glob("tar-*"))) == 1       # extracted once
    else:
        assert (image / "marker").read_text() == "from-the-image" and not (image / "new").exists()


@pytest.mark.integration
@needs_root()
@needs_runc()
async def test_exec_in_runs_inside_the_container_and_a_hung_command_is_killed(harness):
    d = harness.driver
    h = await harness.start("t.g.0-exec", ["sh", "-c", "echo inside > /tmp/mark; echo ready; sleep 3600"])
    await until(lambda: "ready" in d.log_path(h).read_text())
    assert await d.exec_in(h, ("cat", "/tmp/mark"), 5.0) == (0, "inside\n")     # its filesystem
    code, out = await d.exec_in(h, ("sh", "-c", "echo nope >&2; exit 3"), 5.0)
    assert (code, out) == (3, "nope\n")
    code, out = await d.exec_in(h, ("/no/such/program",), 5.0)
    assert code != 0 and "no/such/program" in out
    before = set(os.listdir("/proc"))
    with pytest.raises(TimeoutError):
        await d.exec_in(h, ("sleep", "30"), 0.3)
    await asyncio.sleep(0.2)
    hung = [p for p in set(os.listdir("/proc")) - before if p.isdigit() and alive(int(p))
            and Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"sleep\x0030")]
    assert hung == []                                  # the command was killed, not only runc
    await d.stop(h, 1)              # and it was reaped: a zombie in its PID namespace would keep
    await d.wait(h)                 # the container's init from exiting


@pytest.mark.integration
@needs_root()
@needs_runc()
@pytest.mark.parametrize("seconds", [0.005, 0.02, 0.05, 0.1])
async def test_a_container_still_ends_after_execs_cut_off_while_runc_sets_them_up(harness, seconds):
    """A check's `runc exec` timed out before its command even started (a loaded host): runc is
    killed half-way, and what it had already made inside the container's PID namespace must not
    keep the container's init from ending when it is stopped."""
    d = harness.driver
    h = await harness.start("t.g.0-cut", ["sh", "-c", "trap 'exit 0' TERM; echo ready; sleep 3600 & wait"])
    await until(lambda: "ready" in d.log_path(h).read_text())
    for _ in range(4):
        with contextlib.suppress(TimeoutError):
            await d.exec_in(h, ("sleep", "30"), seconds)
    await asyncio.wait_for(d.stop(h, 2), 20)
    await asyncio.wait_for(d.wait(h), 10)
