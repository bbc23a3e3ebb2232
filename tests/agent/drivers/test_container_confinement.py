"""Issue 15: containers as confined as Docker's defaults. The seccomp profile's conversion, the id
range and image shift, `container.user`, config.json; then black-box, from inside real containers
started by the driver: the filter (a static probe calling the system calls), the user namespace,
/proc, masked paths, oom_score_adj, rlimits, and what --allow-privileged lets a job turn off."""
from __future__ import annotations

import asyncio
import os
import re
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from agent.drivers.base import DriverError, Handle, InstanceSpec
from agent.drivers.container import ContainerDriver, users
from agent.drivers.container import runc as runc_mod
from agent.drivers.container import seccomp as sc
from agent.drivers.container import userns as un
from agent.drivers.container.runc import IdMap, User
from tests.agent.conftest import RUNC, needs_root, needs_runc

MI = 1 << 20
AMD64 = sc.Platform("amd64", "SCMP_ARCH_X86_64", (6, 1))
DENIED = ["keyctl", "add_key", "bpf", "perf_event_open", "userfaultfd", "unshare", "setns", "mount"]

# -- the profile ------------------------------------------------------------------------------------

PROFILE = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
           "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
                       {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}],
           "syscalls": [
               {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
               {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64"]}},
               {"names": ["cacheflush"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["arm64"]}},
               {"names": ["bpf"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
               {"names": ["bpf"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
               {"names": ["new_call"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "6.5"}},
               {"name": "personality", "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}], "comment": "x"}]}


def verdicts(oci: dict) -> dict[str, list]:
    out: dict[str, list] = {}
    for rule in oci["syscalls"]:
        for name in rule["names"]:
            out.setdefault(name, []).append((rule["action"], rule.get("errnoRet"), bool(rule.get("args"))))
    return out


@pytest.mark.parametrize("caps,platform,expected", [
    ((), AMD64, {"read", "write", "arch_prctl", "bpf:SCMP_ACT_ERRNO", "personality"}),
    (("CAP_SYS_ADMIN",), AMD64, {"read", "write", "arch_prctl", "bpf:SCMP_ACT_ALLOW", "personality"}),
    ((), sc.Platform("arm64", "SCMP_ARCH_AARCH64", (6, 1)),
     {"read", "write", "cacheflush", "bpf:SCMP_ACT_ERRNO", "personality"}),
    ((), sc.Platform("amd64", "SCMP_ARCH_X86_64", (6, 18)),
     {"read", "write", "arch_prctl", "bpf:SCMP_ACT_ERRNO", "personality", "new_call"}),
], ids=["default-caps", "sys-admin", "arm64", "newer-kernel"])
def test_includes_and_excludes_follow_caps_arch_and_kernel(caps, platform, expected):
    oci = sc.to_oci(PROFILE, frozenset(caps), platform)
    got = {n if n != "bpf" else f"bpf:{v[0][0]}" for n, v in verdicts(oci).items()}
    assert got == expected
    assert oci["defaultAction"] == "SCMP_ACT_ERRNO" and oci["defaultErrnoRet"] == 38
    assert oci["architectures"] == [platform.seccomp_arch, {"amd64": "SCMP_ARCH_X86", "arm64": "SCMP_ARCH_ARM"}[
        platform.arch]]
    personality = next(r for r in oci["syscalls"] if r["names"] == ["personality"])
    assert set(personality) == {"names", "action", "args"}          # no comment, no "name"


@pytest.mark.parametrize("x32,expected", [
    (True, ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]),
    (False, ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]),
])
def test_x32_is_filtered_only_where_the_kernel_runs_it(x32, expected):
    profile = {**PROFILE, "archMap": [{"architecture": "SCMP_ARCH_X86_64",
                                       "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}]}
    oci = sc.to_oci(profile, frozenset(), sc.Platform("amd64", "SCMP_ARCH_X86_64", (6, 1), x32=x32))
    assert oci["architectures"] == expected


def test_rules_replace_the_base_ones_for_the_calls_they_name():
    merged = sc.with_rules(PROFILE, [{"names": ["write"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}])
    v = verdicts(sc.to_oci(merged, frozenset(), AMD64))
    assert v["write"] == [("SCMP_ACT_ERRNO", 1, False)] and v["read"] == [("SCMP_ACT_ALLOW", None, False)]


@pytest.mark.skipif(not sc.DEFAULT_PROFILE.exists(), reason=f"{sc.PACKAGE} not installed")
def test_the_default_profile_denies_what_docker_denies():
    profile = sc.Profile.load()
    oci = profile.oci(runc_mod.CAPABILITIES)
    assert profile.oci(runc_mod.CAPABILITIES) is oci                 # converted once
    v = verdicts(oci)
    for name in DENIED:
        assert v.get(name, [(oci["defaultAction"], None, False)])[0][:2] == ("SCMP_ACT_ERRNO", 1), name
    assert v["clone"] == [("SCMP_ACT_ALLOW", None, True)]           # only without namespace flags
    assert v["clone3"] == [("SCMP_ACT_ERRNO", 38, False)]           # ENOSYS: libc falls back to clone
    assert ("SCMP_ACT_ALLOW", None, False) in v["read"]
    privileged = verdicts(profile.oci(runc_mod.host_capabilities()))
    assert privileged["unshare"] == [("SCMP_ACT_ALLOW", None, False)]


def test_a_missing_or_bad_profile_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(sc, "DEFAULT_PROFILE", tmp_path / "seccomp.json")
    with pytest.raises(sc.SeccompError, match=f"{tmp_path}/seccomp.json does not exist .*install {sc.PACKAGE}"):
        sc.Profile.load()
    bad = tmp_path / "bad.json"
    for text, why in (("{", "is not JSON"), ('{"syscalls": [{"names": "read"}]}', r"syscalls\[0\] is not a rule")):
        bad.write_text(text)
        with pytest.raises(sc.SeccompError, match=f"{bad}: .*{why}|{bad} {why}"):
            sc.Profile.load(bad)


# -- the id range, the shift, the user ---------------------------------------------------------------

@pytest.mark.parametrize("subuid,expected", [
    ("alice:100000:65536\npackyard:300000:65536\n", 300000),
    ("packyard:200000:1000\npackyard:400000:131072\n", 400000),       # the first big enough
    ("alice:100000:65536\n", None),
    ("packyard:0:65536\n", None),                                      # never the host's root
], ids=["found", "first-big-enough", "missing", "root"])
def test_id_range_from_subuid(tmp_path, subuid, expected):
    (tmp_path / "subuid").write_text(subuid)
    (tmp_path / "subgid").write_text(subuid)
    if expected is None:
        with pytest.raises(un.UsernsError, match="no range of 65536 ids for 'packyard'"):
            un.id_map("packyard", tmp_path / "subuid", tmp_path / "subgid")
    else:
        assert un.id_map("packyard", tmp_path / "subuid", tmp_path / "subgid") == IdMap(expected, expected, 65536)


@needs_root()
def test_shift_owns_the_tree_by_the_range_keeps_setuid_and_is_idempotent(tmp_path):
    ids = IdMap(300000, 400000, 65536)
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    (root / "bin/su").write_text("x")
    os.chmod(root / "bin/su", 0o4755)
    (root / "home").mkdir()
    os.chown(root / "home", 1000, 1000)
    (root / "far").write_text("")
    os.chown(root / "far", 70000, 0)
    (root / "link").symlink_to("/etc/passwd")
    for _ in range(2):
        un.shift(root, ids)
        owners = {p.name: (p.lstat().st_uid, p.lstat().st_gid) for p in [root, *root.rglob("*")]}
        assert owners == {"root": (300000, 400000), "bin": (300000, 400000), "su": (300000, 400000),
                          "home": (301000, 401000), "far": (300000 + 65534, 400000), "link": (300000, 400000)}
        assert (root / "bin/su").stat().st_mode & 0o7777 == 0o4755
    assert os.stat("/etc/passwd").st_uid == 0                           # the link's target untouched


def test_unreachable_names_the_first_closed_directory(state_dir):
    ids = IdMap(300000, 300000, 65536)
    deep = state_dir / "a" / "b"
    deep.mkdir(parents=True)
    assert un.unreachable(deep, ids) == ""
    (state_dir / "a").chmod(0o700)
    assert un.unreachable(deep, ids) == str(state_dir / "a")


def image_with_users(root: Path) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\napp:x:1001:\ndisk:x:6:app,root\nstaff:x:50:\n")
    return root


@pytest.mark.parametrize("value,expected", [
    (None, User(0, 0)),
    ("1000:1000", User(1000, 1000)),
    ("1000", User(1000, 1001, (6,))),              # the passwd entry's group, /etc/group's too
    ("4242", User(4242, 0)),                       # no entry: group 0, as Docker
    ("app", User(1000, 1001, (6,))),
    ("app:staff", User(1000, 50)),
    ("0:app", User(0, 1001)),
], ids=["none", "numbers", "uid", "unknown-uid", "name", "names", "group-name"])
def test_user_resolution(tmp_path, value, expected):
    assert users.resolve(value, image_with_users(tmp_path / "img"), "i: container.user") == expected


@pytest.mark.parametrize("value,error", [
    ("nobody", "no user 'nobody' in the image's /etc/passwd"),
    ("app:wheel", "no group 'wheel' in the image's /etc/group"),
    ("abc:", re.escape("'abc:' is not UID[:GID]")),
], ids=["no-user", "no-group", "malformed"])
def test_user_errors_name_the_field(tmp_path, value, error):
    with pytest.raises(DriverError, match=rf"^i: container.user: .*{error}"):
        users.resolve(value, image_with_users(tmp_path / "img"), "i: container.user")


def test_an_image_passwd_that_is_a_symlink_is_not_followed(tmp_path):
    root = tmp_path / "img"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").symlink_to("/etc/passwd")                     # the host's has root
    with pytest.raises(DriverError, match="no user 'root'"):
        users.resolve("root", root, "i: container.user")


# -- config.json ------------------------------------------------------------------------------------

def make_config(**kw):
    args = dict(args=["sh"], env={}, rootfs=Path("/s/rootfs"), netns_path="/var/run/netns/pyn-x",
                cgroups_path="packyard/n1/i1", hostname="i1")
    return runc_mod.config(**{**args, **kw})


def test_config_has_dockers_defaults():
    c = make_config()
    proc = next(m for m in c["mounts"] if m["destination"] == "/proc")
    assert set(proc["options"]) == {"nosuid", "noexec", "nodev"}
    assert {"/proc/interrupts", "/sys/devices/virtual/powercap", "/proc/kcore", "/sys/firmware"} <= set(
        c["linux"]["maskedPaths"])
    assert c["linux"]["readonlyPaths"] == runc_mod.READONLY_PATHS
    assert {"type": "cgroup"} in c["linux"]["namespaces"]
    assert c["process"]["oomScoreAdj"] == 0
    nofile = next(r for r in c["process"]["rlimits"] if r["type"] == "RLIMIT_NOFILE")
    assert nofile["soft"] == 1024 and nofile["hard"] <= 524288
    assert c["process"]["user"] == {"uid": 0, "gid": 0} and "seccomp" not in c["linux"]


def test_config_in_a_user_namespace_as_a_user_with_a_filter():
    c = make_config(id_map=IdMap(300000, 400000, 65536), user=User(1000, 1000, (6,)), seccomp={"x": 1})
    linux = c["linux"]
    assert {"type": "user"} in linux["namespaces"] and {"type": "network"} in linux["namespaces"]
    assert not any("path" in n for n in linux["namespaces"])           # runc's netns, inside the userns
    assert linux["uidMappings"] == [{"containerID": 0, "hostID": 300000, "size": 65536}]
    assert linux["gidMappings"] == [{"containerID": 0, "hostID": 400000, "size": 65536}]
    assert c["process"]["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [6]}
    assert linux["seccomp"] == {"x": 1}


# -- real containers --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed (deploy/local/setup.sh installs it)")
    out = tmp_path_factory.mktemp("probe") / "syscalls"
    subprocess.run(["gcc", "-static", "-O1", "-o", str(out), str(Path(__file__).with_name("syscalls.c"))],
                   check=True, capture_output=True)
    return out


def tar_image(tmp_path: Path, probe: Path | None = None) -> Path:
    """busybox + its applets, /etc/passwd and /etc/group with a user `app`, the probe, as a .tar."""
    root = image_with_users(tmp_path / "image")
    (root / "bin").mkdir()
    shutil.copy2("/bin/busybox", root / "bin/busybox")
    for applet in ("sh", "cat", "grep", "id", "unshare", "echo", "head", "ls", "sleep", "readlink"):
        (root / "bin" / applet).symlink_to("busybox")
    for d in ("proc", "sys", "dev", "tmp"):
        (root / d).mkdir()
    (root / "tmp").chmod(0o1777)
    if probe is not None:
        shutil.copy2(probe, root / "bin/syscalls")
    tar = tmp_path / "image.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(root, arcname=".")
    return tar


class Drivers:
    """A driver without and one with --allow-privileged on one node; everything destroyed at the end."""

    def __init__(self, node: str, state_dir: Path, subnet: str):
        self.made = {p: ContainerDriver(node, state_dir / str(p), subnet, runc=RUNC, allow_privileged=p)
                     for p in (False, True)}
        self.handles: list[tuple[ContainerDriver, Handle]] = []

    async def run(self, config: dict, privileged_node: bool = False, iid: str = "t.g.0-1") -> tuple[Handle, str]:
        """Start, wait for the end, return the handle and the output."""
        driver, h = await self.start(config, privileged_node, iid)
        result = await asyncio.wait_for(driver.wait(h), 10)
        return h, f"{driver.log_path(h).read_text()}[{result.reason}]"

    async def start(self, config: dict, privileged_node: bool = False, iid: str = "t.g.0-1"):
        driver = self.made[privileged_node]
        h = await driver.start(InstanceSpec(id=iid, job="t", group="g", kind="container", cpu_milli=500,
                                            memory_bytes=64 * MI, config=config))
        self.handles.append((driver, h))
        return driver, h

    async def close(self) -> None:
        for driver, h in self.handles:
            await driver.destroy(h)
        for driver in self.made.values():
            await driver.shutdown()


@pytest.fixture
async def drivers(node, state_dir, subnet):
    d = Drivers(node, state_dir, subnet)
    yield d
    await d.close()


FACTS = ("grep Seccomp: /proc/self/status; unshare -U -r true; echo unshare=$?; cat /proc/self/uid_map; "
         "echo oom=$(cat /proc/self/oom_score_adj); echo nofile=$(ulimit -n); head -1 /proc/self/cgroup; "
         "echo kcore=$(head -c 16 /proc/kcore | wc -c) interrupts=$(cat /proc/interrupts | wc -c); "
         "grep -E '^(proc /proc|overlay /) ' /proc/self/mounts; id")


@pytest.mark.integration
@needs_root()
@needs_runc()
async def test_a_default_container_is_confined(drivers):
    _, out = await drivers.run({"command": ["sh", "-c", FACTS]})
    ids = drivers.made[False].ids
    assert "Seccomp:\t2" in out                                            # a filter, in force
    assert "unshare=1" in out and "Operation not permitted" in out         # no user namespace of its own
    assert f"0 {ids.uid:10d} {ids.size:10d}" in " ".join(out.split("\n")) or \
        f"0     {ids.uid}      {ids.size}" in out                           # root is not the host's
    assert "0          0 4294967295" not in out
    assert "oom=0" in out and "nofile=1024" in out
    assert ":/\n" in out                                                   # its own cgroup namespace
    assert "kcore=0 interrupts=0" in out                                   # masked
    proc = next(line for line in out.splitlines() if line.startswith("proc /proc"))
    overlay = next(line for line in out.splitlines() if line.startswith("overlay / "))
    assert {"nosuid", "nodev", "noexec"} <= set(proc.split()[3].split(","))
    assert {"nosuid", "nodev"} <= set(overlay.split()[3].split(","))
    assert "uid=0(root) gid=0(root)" in out and "[exit status 0]" in out   # and the command still ran


@pytest.mark.integration
@needs_root()
@needs_runc()
async def test_the_filter_denies_what_docker_denies_and_unconfined_does_not(drivers, tmp_path, probe):
    image = str(tar_image(tmp_path, probe))
    _, out = await drivers.run({"image": image, "command": ["/bin/syscalls"]})
    seen = dict(line.split() for line in out.splitlines() if line.count(" ") == 1 and line[0].isalpha())
    assert {k: seen[k] for k in ("keyctl", "add_key", "bpf", "perf_event_open", "userfaultfd", "unshare_user",
                                 "mount")} == dict.fromkeys(("keyctl", "add_key", "bpf", "perf_event_open",
                                                             "userfaultfd", "unshare_user", "mount"), "1")
    assert seen["getpid"] == "0"
    _, out = await drivers.run({"image": image, "command": ["/bin/syscalls"], "seccomp": "unconfined"},
                               privileged_node=True, iid="t.g.1-1")
    seen = dict(line.split() for line in out.splitlines() if line.count(" ") == 1 and line[0].isalpha())
    assert seen["keyctl"] == "0" and seen["unshare_user"] == "0"           # the filter was what denied


@pytest.mark.integration
@needs_root()
@needs_runc()
async def test_user_runs_the_command_and_the_exec_check_in_the_user_namespace(drivers, tmp_path):
    image = str(tar_image(tmp_path))
    _, out = await drivers.run({"image": image, "user": "1000:1000", "command": ["id"]})
    assert "uid=1000(app) gid=1000\n" in out
    _, out = await drivers.run({"image": image, "user": "app", "command": ["id"]}, iid="t.g.1-1")
    assert "uid=1000(app) gid=1001(app) groups=6(disk)" in out
    driver, h = await drivers.start({"image": image, "user": "app", "command": ["sleep", "60"]}, iid="t.g.2-1")
    code, out = await driver.exec_in(h, ("sh", "-c", "id -u; grep Seccomp: /proc/self/status; "
                                               "readlink /proc/self/ns/user"), 5.0)
    lines = out.split()
    assert (code, lines[:3]) == (0, ["1000", "Seccomp:", "2"]), out      # its user, its filter
    assert lines[3] == os.readlink(f"/proc/{h.data['pid']}/ns/user") != os.readlink("/proc/self/ns/user")
    await driver.stop(h, 1)


@pytest.mark.integration
@needs_root()
@needs_runc()
@pytest.mark.parametrize("config,error", [
    ({"user": "abc:"}, re.escape("container.user: 'abc:' is not UID[:GID]")),
    ({"user": "70000"}, r"container.user: 70000 is outside the node's user namespace \(ids 0..65535\)"),
    ({"user": "ghost"}, "container.user: no user 'ghost'"),
    ({"seccomp": "strict"}, "container.seccomp: 'strict' is not default or unconfined"),
    ({"userns": "private"}, "container.userns: 'private' is not default or host"),
    ({"seccomp": "unconfined"}, r"container.seccomp is not allowed .*--allow-privileged"),
    ({"userns": "host"}, r"container.userns is not allowed .*--allow-privileged"),
], ids=["malformed-user", "user-beyond-range", "unknown-user", "seccomp", "userns", "unconfined", "host"])
async def test_the_agent_refuses_bad_or_unallowed_values(drivers, config, error):
    with pytest.raises(DriverError, match=rf"^(cannot start )?t.g.0-1: {error}"):
        await drivers.start({"command": ["true"], **config})
    assert not list((drivers.made[False].instances_dir).iterdir())       # nothing made


@pytest.mark.integration
@needs_root()
@needs_runc()
async def test_what_allow_privileged_lets_a_job_turn_off(drivers):
    facts = "grep Seccomp: /proc/self/status; cat /proc/self/uid_map"
    _, host_ids = await drivers.run({"command": ["sh", "-c", facts], "userns": "host"}, True)
    assert "Seccomp:\t2" in host_ids and "4294967295" in host_ids          # host ids, still filtered
    _, unconfined = await drivers.run({"command": ["sh", "-c", facts], "seccomp": "unconfined"}, True, "t.g.1-1")
    assert "Seccomp:\t0" in unconfined and "4294967295" not in unconfined
    _, privileged = await drivers.run({"command": ["sh", "-c", facts], "privileged": True}, True, "t.g.2-1")
    assert "Seccomp:\t0" in privileged and "4294967295" in privileged      # as Docker's --privileged


@pytest.mark.integration
@needs_root()
@needs_runc()
async def test_without_the_profile_the_node_runs_no_container_unconfined(node, state_dir, subnet, tmp_path):
    missing = tmp_path / "no-such-profile.json"
    driver = ContainerDriver(node, state_dir, subnet, runc=RUNC, seccomp_profile=missing)
    try:
        attrs = await driver.fingerprint()
        assert attrs["driver.container"] == f"unavailable: seccomp profile {missing} does not exist"
        with pytest.raises(DriverError, match=f"^t.g.0-1: |seccomp profile {missing} does not exist"):
            await driver.start(InstanceSpec(id="t.g.0-1", job="t", group="g", kind="container", cpu_milli=500,
                                            memory_bytes=64 * MI, config={"command": ["true"]}))
        assert not list(driver.instances_dir.iterdir())
    finally:
        await driver.shutdown()


@pytest.mark.integration
@needs_root()
@needs_runc()
async def test_the_jobs_env_lands_only_in_files_root_reads(drivers):
    """Issue 15.11: config.json and the log (where a program may print its env) are root's alone
    even under umask 0, which would leave them world-readable: config.json is 0600, the log's
    directory (its log process's, which makes its files 0644) 0700."""
    old = os.umask(0)
    try:
        h, out = await drivers.run({"command": ["sh", "-c", "echo $TOKEN"], "env": {"TOKEN": "s3cret"}})
    finally:
        os.umask(old)
    assert "s3cret" in out
    config = Path(h.data["bundle"]) / "config.json"
    assert "s3cret" in config.read_text()
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    log_dir = Path(h.data["log"]).parent
    assert stat.S_IMODE(log_dir.stat().st_mode) == 0o700 and log_dir.stat().st_uid == 0


@pytest.mark.integration
@needs_root()
@needs_runc()
async def test_a_tars_setuid_programs_run_setuid_only_in_privileged_containers(drivers, tmp_path):
    """Issue 15.8: a .tar image is unpacked without setuid bits unless the container is privileged
    (`docker run --privileged` runs them as they are); either tree lies under the driver's 0700
    images directory, so no host user can run an image's setuid program from the host."""
    root = tmp_path / "image"
    (root / "bin").mkdir(parents=True)
    shutil.copy(shutil.which("busybox") or "/bin/busybox", root / "bin/busybox")
    for applet in ("sh", "stat"):
        (root / "bin" / applet).symlink_to("busybox")
    (root / "bin/su").write_bytes(b"x")
    (root / "bin/su").chmod(0o4755)
    tar = tmp_path / "image.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(root, arcname=".")
    config = {"image": str(tar), "command": ["stat", "-c", "%a", "/bin/su"]}
    h_plain, plain = await drivers.run(config, True, "t.g.0-1")
    h_privileged, privileged = await drivers.run({**config, "privileged": True}, True, "t.g.1-1")
    assert plain.startswith("755\n") and privileged.startswith("4755\n")
    ids = drivers.made[True].ids
    for h, mode, group in ((h_plain, 0o710, ids.gid), (h_privileged, 0o700, 0)):   # what a host user
        st = Path(h.data["bundle"]).stat()                                        # cannot enter
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (mode, 0, group)
    images = drivers.made[True].images_dir
    assert stat.S_IMODE(images.stat().st_mode) == 0o700
    setuid = [p for p in images.parent.rglob("su") if p.stat().st_mode & stat.S_ISUID]
    assert len(setuid) == 2                              # the image's tree, the running overlay
    assert not [p for p in setuid if all(d.stat().st_mode & stat.S_IXOTH for d in p.parents)]
