"""Real booted hosts for deployment tests: `systemd-nspawn -b` containers of one debootstrapped Debian
image, each with its own systemd, sshd and address on a bridge of its own.

What it takes on this kind of machine (no systemd as PID 1, cgroup v1 hybrid), found by trying:
- a host `dbus-daemon --system` (nspawn: "Failed to open system bus" without it) and
  `--register=no --keep-unit` (no machined; "Failed to allocate scope" without --keep-unit);
- the address in `10-host0.network`: networkd takes the first file by name and the image ships
  `80-container-host0.network` (link-local only);
- the v1 controllers (memory, cpu, pids, ...) are mounted read-only inside the container, so the agent
  cannot make its cgroups; `mount -o remount,bind,rw /sys/fs/cgroup/<controller>` inside it, once it
  is up, fixes that (a plain remount is refused: "mount point is busy"; the same command as an early
  boot unit failed now and then with 219/CGROUP). nspawn gives the container its own cgroup
  namespace, so what the agent makes lands below nspawn's own cgroup on the host.
  (SYSTEMD_NSPAWN_API_VFS_WRITABLE=1 does not help: the controllers stay read-only, and a writable
  /sys makes networkd wait for a udev that never comes, so host0 stays down.)
- runc needs the keyring system calls, which nspawn's seccomp filter refuses ("unable to join session
  keyring: ... operation not permitted"): `--system-call-filter=@keyring` allows them.
Each host is an overlay on the cached image; /var/lib/packyard is a plain directory bound in, because
the agent's per-instance overlays cannot have their upper directory on an overlayfs.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

CACHE = Path(os.environ.get("PACKYARD_DEPLOY_CACHE", "/var/cache/packyard"))
RELEASE = "bookworm"       # the controller's Python (3.11) must match the hosts' for the wheels
MIRROR = "http://deb.debian.org/debian"
# what the hosts need to boot and be reached, and what the playbook installs with apt (baked in so the
# test needs no mirror on the hosts' network; the playbook's apt tasks then find them installed)
PACKAGES = ["systemd", "systemd-sysv", "dbus", "openssh-server", "iproute2", "python3", "python3-venv",
            "python3-apt", "etcd-server", "etcd-client", "runc", "s6", "busybox-static", "kmod", "prometheus",
            "ca-certificates", "golang-github-containers-common"]
BOOTSTRAP = ["systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "ca-certificates"]
BRIDGE = "pkyd208"
SUBNET = "10.213.208"          # ours alone: the bridge is .1, hosts .11, .12, ...
CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "devices", "freezer")

# run on each host once it is up; the mounts last as long as the host
WRITABLE_CGROUPS = ("for c in " + " ".join(CONTROLLERS) + "; do [ -d /sys/fs/cgroup/$c ] && "
                    "mount -o remount,bind,rw /sys/fs/cgroup/$c; done; true")


def image(log=print) -> Path:
    """The cached host image: debootstrapped once (about 100 s, 730 MB); packages added to PACKAGES
    since are installed into it with apt in a chroot."""
    path = CACHE / f"debian-{RELEASE}-host"
    stamp = path / "etc/packyard-test-image"
    wanted = " ".join(PACKAGES) + "\n"
    if (path / "usr/sbin/sshd").exists():
        if not stamp.exists() or stamp.read_text() != wanted:
            log(f"adding packages to {path}")
            _apt_install(path)
            stamp.write_text(wanted)
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    build = CACHE / f"debian-{RELEASE}-host.build"
    shutil.rmtree(build, ignore_errors=True)
    log(f"debootstrap {RELEASE} into {build} (once; cached)")
    # debootstrap resolves no virtual package (containers-common depends on container-network-stack,
    # which one of several packages provides): it lays down a minimal system, apt adds the rest
    subprocess.run(["debootstrap", "--variant=minbase", "--include=" + ",".join(BOOTSTRAP), RELEASE,
                    str(build), MIRROR], check=True, stdout=subprocess.DEVNULL)
    _apt_install(build)
    (build / "etc/packyard-test-image").write_text(wanted)
    build.rename(path)
    return path


def _apt_install(root: Path) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["chroot", str(root), "apt-get", "update", "-q"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["chroot", str(root), "apt-get", "install", "-y", "-q", "--no-install-recommends",
                    *PACKAGES], check=True, env=env, stdout=subprocess.DEVNULL)


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True)


def _system_bus() -> subprocess.Popen | None:
    """A host system bus for nspawn, started here if there is none; the process to stop after."""
    if Path("/run/dbus/system_bus_socket").exists():
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect("/run/dbus/system_bus_socket")
            return None
        except OSError:
            Path("/run/dbus/system_bus_socket").unlink()
        finally:
            probe.close()
    Path("/run/dbus").mkdir(exist_ok=True)
    bus = subprocess.Popen(["dbus-daemon", "--system", "--nofork", "--nopidfile"])
    for _ in range(50):
        if Path("/run/dbus/system_bus_socket").exists():
            return bus
        time.sleep(0.1)
    raise RuntimeError("dbus-daemon --system did not come up")


@dataclass
class Host:
    name: str
    address: str
    dir: Path
    process: subprocess.Popen | None = None

    @property
    def root(self) -> Path:
        return self.dir / "root"


@dataclass
class Hosts:
    """N booted hosts; `ssh(host, cmd)` runs a command on one as root with the test's key."""
    work: Path
    hosts: list[Host] = field(default_factory=list)
    key: Path | None = None
    bus: subprocess.Popen | None = None

    def ssh_args(self, host: Host) -> list[str]:
        return ["ssh", "-i", str(self.key), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=3", f"root@{host.address}"]

    def ssh(self, host: Host, command: str, check: bool = True, timeout: float = 60) -> str:
        result = subprocess.run(self.ssh_args(host) + [command], capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"{host.name}: {command}: exit {result.returncode}: {result.stderr.strip()}")
        return result.stdout


def boot(work: Path, names: list[str], log=print) -> Hosts:
    """Boot NAMES from the cached image on a fresh bridge; returns once sshd answers on every one."""
    base = image(log)
    hosts = Hosts(work=work)
    try:
        hosts.bus = _system_bus()
        if hosts.bus:
            (work / "bus.pid").write_text(str(hosts.bus.pid))
        hosts.key = work / "id_ed25519"
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hosts.key))
        _run("ip", "link", "del", BRIDGE, check=False)
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "addr", "add", f"{SUBNET}.1/24", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        for i, name in enumerate(names):
            host = Host(name=name, address=f"{SUBNET}.{11 + i}", dir=work / name)
            hosts.hosts.append(host)
            _prepare(host, base, hosts.key)
            _run("ip", "link", "del", f"vb-pkyd-{name}", check=False)     # left by a killed run
            with open(host.dir / "console.log", "wb") as console:
                host.process = subprocess.Popen(
                    ["systemd-nspawn", "-D", str(host.root), "--register=no", "--keep-unit", "-b",
                     f"--machine=pkyd-{name}", f"--hostname={name}", f"--network-bridge={BRIDGE}",
                     f"--bind={host.dir / 'state'}:/var/lib/packyard", "--console=pipe",
                     "--system-call-filter=@keyring"],
                    stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT, start_new_session=True)
            (host.dir / "pid").write_text(str(host.process.pid))
        for host in hosts.hosts:
            _wait_ssh(hosts, host)
            hosts.ssh(host, WRITABLE_CGROUPS)
        return hosts
    except BaseException:
        teardown(hosts)
        raise


def _prepare(host: Host, base: Path, key: Path) -> None:
    for sub in ("upper", "work", "root", "state"):
        (host.dir / sub).mkdir(parents=True)
    _run("mount", "-t", "overlay", "overlay", "-o",
         f"lowerdir={base},upperdir={host.dir / 'upper'},workdir={host.dir / 'work'}", str(host.root))
    root = host.root
    (root / "etc/hostname").write_text(host.name + "\n")
    network = root / "etc/systemd/network"
    network.mkdir(parents=True, exist_ok=True)
    (network / "10-host0.network").write_text(
        f"[Match]\nName=host0\n\n[Network]\nAddress={host.address}/24\nLinkLocalAddressing=no\n")
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / "systemd-networkd.service").symlink_to("/lib/systemd/system/systemd-networkd.service")
    ssh = root / "root/.ssh"
    ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
    (ssh / "authorized_keys").write_text(Path(f"{key}.pub").read_text())


def _wait_ssh(hosts: Hosts, host: Host, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if host.process and host.process.poll() is not None:
            raise RuntimeError(f"{host.name}: systemd-nspawn exited: {(host.dir / 'console.log').read_text()[-2000:]}")
        try:
            if hosts.ssh(host, "systemctl is-system-running --wait || true", timeout=30).strip() in (
                    "running", "degraded"):
                return
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{host.name}: no ssh after {timeout:.0f} s")
        time.sleep(0.5)


def _signal(pid_file: Path, sig: int, comm: str) -> int | None:
    """Send SIG to the process in PID_FILE if it is still COMM (not a reused pid); its pid."""
    try:
        pid = int(pid_file.read_text())
        if Path(f"/proc/{pid}/comm").read_text().strip() != comm:
            return None
        os.kill(pid, sig)
        return pid
    except (OSError, ValueError):
        return None


def down(work: Path) -> None:
    """Tear down hosts booted under WORK by another process (after PACKYARD_DEPLOY_KEEP=1)."""
    hosts = Hosts(work=work)
    for d in sorted(p.parent for p in work.glob("*/console.log")):
        hosts.hosts.append(Host(name=d.name, address="", dir=d))
        _signal(d / "pid", signal.SIGTERM, "systemd-nspawn")
    time.sleep(10)
    for host in hosts.hosts:
        pid = _signal(host.dir / "pid", 0, "systemd-nspawn")
        if pid:
            _kill_container(pid)
    time.sleep(2)
    teardown(hosts)
    _signal(work / "bus.pid", signal.SIGTERM, "dbus-daemon")


def _kill_container(nspawn_pid: int) -> None:
    """SIGKILL the container's init (nspawn's child): its PID namespace, and every process in it or
    nested in it, dies with it, and nspawn then cleans up and exits. Killing nspawn alone would leave
    the container's init running."""
    try:
        children = Path(f"/proc/{nspawn_pid}/task/{nspawn_pid}/children").read_text().split()
    except OSError:
        children = []
    for child in children:
        try:
            os.kill(int(child), signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(1)
    try:
        os.kill(nspawn_pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def teardown(hosts: Hosts) -> None:
    """Power the hosts off (SIGTERM to nspawn halts the container's systemd), then remove everything
    made here: overlays, the bridge, the bus if it was started here. A host still running a workload
    is killed after 10 s: a container's PID 1 ignores SIGTERM, and systemd would wait 90 s for it."""
    for host in hosts.hosts:
        if host.process and host.process.poll() is None:
            host.process.send_signal(signal.SIGTERM)
    for host in hosts.hosts:
        if host.process:
            try:
                host.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _kill_container(host.process.pid)
                host.process.wait()
        _run("umount", str(host.root), check=False)
        shutil.rmtree(f"/run/systemd/nspawn/propagate/pkyd-{host.name}", ignore_errors=True)
        shutil.rmtree(host.dir, ignore_errors=True)
    _run("ip", "link", "del", BRIDGE, check=False)
    if hosts.bus:
        hosts.bus.terminate()
        hosts.bus.wait(timeout=10)


if __name__ == "__main__":
    import sys
    if sys.argv[1:2] == ["down"] and len(sys.argv) == 3:
        down(Path(sys.argv[2]))
    else:
        sys.exit("usage: python -m tests.deploy.nspawn.hosts down WORK_DIR")
