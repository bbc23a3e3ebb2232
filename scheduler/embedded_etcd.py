"""The single-member etcd the scheduler starts when no --etcd is given, so one command runs a
working cluster. Also used by the tests and the local-cluster script to start real etcd servers.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

from packyard.pdeathsig import dies_with_parent


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class EtcdServer:
    """An etcd process with its data under data_dir. Stop ends only the process we started."""

    def __init__(self, data_dir: Path, client_host: str = "127.0.0.1", client_port: int = 0,
                 peer_port: int = 0, name: str = "packyard", binary: str | None = None,
                 extra_client_hosts: tuple[str, ...] = (), tie_to_parent: bool = False,
                 initial_cluster: str | None = None, tls_dir: Path | None = None):
        """tls_dir (`ctl certs init`): clients must present a certificate of the cluster CA, and
        etcd serves with its own (etcd.crt, name packyard-etcd): https:// endpoints; members talk
        TLS to each other too (etcd.crt names 127.0.0.1). With the cluster's root pair in tls_dir,
        start() also turns etcd's authentication on, each identity allowed its own keys only
        (packyard/etcd_auth.py)."""
        self.data_dir = Path(data_dir)
        self.tls_dir = Path(tls_dir) if tls_dir is not None else None
        self.client_host = client_host
        self.client_port = client_port or free_port(client_host)
        # a fixed peer port next to a fixed client port: a restarted member must find its peer URL again
        self.peer_port = peer_port or (client_port + 1 if client_port else free_port("127.0.0.1"))
        self.name = name
        self.binary = binary or shutil.which("etcd") or "/usr/bin/etcd"
        self.extra_client_hosts = extra_client_hosts
        self.tie_to_parent = tie_to_parent
        self.initial_cluster = initial_cluster     # name=peer-url,...; default: this member alone
        self.proc: subprocess.Popen | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls_dir is not None else "http"

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://{self.client_host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.peer_port}"

    def start(self, wait_seconds: float = 20.0) -> EtcdServer:
        self.launch()
        self.wait_healthy(wait_seconds)
        self.grant()
        return self

    def grant(self) -> None:
        """etcd's users and roles for the identities in tls_dir, auth on (a no-op without TLS or
        without the root pair); again on each start, so a node certificate issued meanwhile counts."""
        if self.tls_dir is not None and (self.tls_dir / "root.crt").exists():
            from packyard import etcd_auth
            etcd_auth.grant(self.endpoint, self.tls_dir)

    def launch(self) -> None:
        """Start the process without waiting: a cluster's members are healthy only once a quorum runs."""
        if not Path(self.binary).exists():
            raise RuntimeError("etcd is not installed (Debian package etcd-server)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        listen = ",".join(f"{self.scheme}://{h}:{self.client_port}"
                          for h in (self.client_host, *self.extra_client_hosts))
        peer = self.peer_url
        args = [self.binary, "--name", self.name, "--data-dir", str(self.data_dir / "etcd"),
                "--listen-client-urls", listen, "--advertise-client-urls", self.endpoint,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", self.initial_cluster or f"{self.name}={peer}",
                # larger transactions let the scheduler commit a group's placements in fewer round trips
                "--max-txn-ops", "1024", "--quota-backend-bytes", str(4 << 30),
                "--snapshot-count", "100000", "--log-level", "warn"]
        if self.tls_dir is not None:   # mutual TLS on the client and the peer ports
            crt, key, ca = (str(self.tls_dir / f) for f in ("etcd.crt", "etcd.key", "ca.crt"))
            args += ["--cert-file", crt, "--key-file", key, "--client-cert-auth", "--trusted-ca-file", ca,
                     "--peer-cert-file", crt, "--peer-key-file", key, "--peer-client-cert-auth",
                     "--peer-trusted-ca-file", ca]
        log = open(self.data_dir / "etcd.log", "ab")
        tie = dies_with_parent("TERM") if self.tie_to_parent else []   # etcd does not hold the port past us
        self.proc = subprocess.Popen([*tie, *args], stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        log.close()

    def wait_healthy(self, wait_seconds: float = 20.0) -> None:
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = (self.data_dir / "etcd.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"etcd exited with {self.proc.returncode}: {tail}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/health", timeout=0.5,
                                            context=self._health_tls()) as r:
                    if b'"true"' in r.read():
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"etcd did not become healthy within {wait_seconds}s")

    def _health_tls(self) -> ssl.SSLContext | None:
        """The probe of a TLS etcd shows etcd's own certificate as its client's (any of the CA's
        will do); the chain is checked, not the name: it is the process we just started."""
        if self.tls_dir is None:
            return None
        ctx = ssl.create_default_context(cafile=str(self.tls_dir / "ca.crt"))
        ctx.check_hostname = False
        ctx.load_cert_chain(self.tls_dir / "etcd.crt", self.tls_dir / "etcd.key")
        return ctx

    def kill(self) -> None:
        """SIGKILL, as a crash: the data dir stays, so start() brings the same member back."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> EtcdServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class EtcdCluster:
    """Members of one etcd cluster (static --initial-cluster), each an EtcdServer with its own data
    dir on client ports `ports` (peer port = client port + 1). For fault tests: kill and start
    members one by one or all together; a restarted member rejoins from its data dir."""

    def __init__(self, base_dir: Path, ports: tuple[int, ...] = (23900, 23902, 23904),
                 tie_to_parent: bool = False, host: str = "127.0.0.1", tls_dir: Path | None = None):
        self.members = [EtcdServer(Path(base_dir) / f"m{i}", client_host=host, client_port=port, name=f"m{i}",
                                   tie_to_parent=tie_to_parent, tls_dir=tls_dir) for i, port in enumerate(ports)]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for m in self.members:
            m.initial_cluster = initial

    @property
    def endpoints(self) -> str:
        """The comma list that packyard's --etcd takes."""
        return ",".join(m.endpoint for m in self.members)

    def start(self, wait_seconds: float = 30.0) -> EtcdCluster:
        for m in self.members:
            if m.proc is None:
                m.launch()
        for m in self.members:
            m.wait_healthy(wait_seconds)
        self.members[0].grant()
        return self

    def kill(self) -> None:
        for m in self.members:
            m.kill()

    def stop(self) -> None:
        for m in self.members:
            m.stop()

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
