"""A real registry for tests (Debian's docker-registry) on a free 127.0.0.1 port, optionally with
basic auth and TLS, and images built without Docker: an OCI layout written here, pushed by skopeo."""
from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import re
import shutil
import socket
import subprocess
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "cat", "echo", "ls", "id", "pwd", "sleep", "env", "test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Registry:
    root: Path
    auth: tuple[str, str] | None = None
    tls: bool = False
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ca(self) -> Path:
        return self.root / "tls" / "ca.crt"

    def start(self) -> Registry:
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        http: dict = {"addr": self.address}
        config: dict = {"version": 0.1, "log": {"level": "info", "accesslog": {"disabled": False}},
                        "storage": {"filesystem": {"rootdirectory": str(self.root / "data")}}, "http": http}
        if self.tls:
            d = self.root / "tls"
            d.mkdir(exist_ok=True)
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                            "-keyout", str(d / "key.pem"), "-out", str(self.ca)], check=True, capture_output=True)
            http["tls"] = {"certificate": str(self.ca), "key": str(d / "key.pem")}
        if self.auth:
            hashed = subprocess.run(["python3", "-W", "ignore", "-c",
                                     "import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH)))",
                                     self.auth[1]], check=True, capture_output=True, text=True).stdout.strip()
            (self.root / "htpasswd").write_text(f"{self.auth[0]}:{hashed}\n")
            config["auth"] = {"htpasswd": {"realm": "test", "path": str(self.root / "htpasswd")}}
        (self.root / "config.yml").write_text(json.dumps(config))
        self.log = open(self.root / "registry.log", "wb")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(self.root / "config.yml")],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"docker-registry did not start: {(self.root / 'registry.log').read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(5)
            self.log.close()

    def blob_gets(self) -> list[str]:
        """The blob digests GET from it so far (its access log), in order."""
        text = (self.root / "registry.log").read_text(errors="replace")
        return re.findall(r'"GET /v2/[^ ]+/blobs/(sha256:[0-9a-f]{64}) HTTP', text)

    def blob_file(self, digest: str) -> Path:
        hexa = digest.split(":")[1]
        return self.root / "data/docker/registry/v2/blobs/sha256" / hexa[:2] / hexa / "data"

    def push(self, layout: Path, name: str, tag: str) -> str:
        """Push the OCI layout's image as NAME:TAG; the manifest's digest."""
        args = ["skopeo", "copy", "--quiet", "--dest-tls-verify=false"]
        if self.auth:
            args.append(f"--dest-creds={self.auth[0]}:{self.auth[1]}")
        subprocess.run([*args, f"oci:{layout}:{tag}", f"docker://{self.address}/{name}:{tag}"],
                       check=True, capture_output=True)
        index = json.loads((layout / "index.json").read_text())
        return next(m["digest"] for m in index["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == tag)


def layer(entries: list[tuple]) -> bytes:
    """A gzip tar of (name, kind, data) entries: kind 'file' (data bytes), 'dir', 'link' (target),
    'hard' (a hard link: the path it names), 'whiteout'; a 4th item is the mode."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, kind, data, *mode in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "link":
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, data, 0o777
            elif kind == "hard":
                info.type, info.linkname, info.mode = tarfile.LNKTYPE, data, 0o644
            else:
                info.size, info.mode = len(data or b""), 0o755
            if mode:
                info.mode = mode[0]
            tf.addfile(info, io.BytesIO(data or b"") if info.isreg() else None)
    return gzip.compress(buf.getvalue(), mtime=0)


def busybox_layer(extra: list[tuple] = ()) -> bytes:
    entries = [("bin", "dir", None), ("bin/busybox", "file", Path(BUSYBOX).read_bytes()),
               *[(f"bin/{a}", "link", "busybox") for a in APPLETS], ("etc", "dir", None),
               ("etc/passwd", "file", b"root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/app:/bin/sh\n"),
               ("etc/group", "file", b"root:x:0:\napp:x:1000:\n"), *extra]
    return layer(entries)


def write_layout(out: Path, tag: str, layers: list[bytes], config: dict) -> Path:
    """An OCI image layout at `out` holding one image tagged `tag` (added to what is there)."""
    blobs = out / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (out / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')

    def put(data: bytes) -> str:
        h = hashlib.sha256(data).hexdigest()
        (blobs / h).write_bytes(data)
        return f"sha256:{h}"

    diff_ids = [f"sha256:{hashlib.sha256(gzip.decompress(b)).hexdigest()}" for b in layers]
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": config,
                      "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": put(cfg), "size": len(cfg)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                       "digest": put(b), "size": len(b)} for b in layers]}).encode()
    index_path = out / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {"schemaVersion": 2, "manifests": []}
    index["manifests"] = [m for m in index["manifests"]
                          if m["annotations"]["org.opencontainers.image.ref.name"] != tag]
    index["manifests"].append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(manifest),
                               "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": tag}})
    index_path.write_text(json.dumps(index))
    return out


def has(cmd: str) -> bool:
    return shutil.which(cmd) is not None


class Throttle:
    """A TCP proxy to a registry, on `host` (a free port), in a thread of its own for tests that
    drive real processes from plain functions: data toward the client at most `rate` bytes a
    second (None: as fast as it comes; changeable while it runs). close() ends it."""

    def __init__(self, host: str, upstream: tuple[str, int], rate: float | None):
        self.host, self.upstream, self.rate = host, upstream, rate
        self.sent = 0
        self._ready = threading.Event()

    def start(self) -> Throttle:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()
        self._ready.wait(10)
        return self

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._serve, self.host, 0))
        self.port = self.server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()
        self.server.close()
        self.loop.run_until_complete(self.server.wait_closed())
        for task in asyncio.all_tasks(self.loop):
            task.cancel()
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()

    async def _serve(self, reader, writer):
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return

        async def pipe(src, dst, throttled):
            while data := await src.read(16384):
                dst.write(data)
                await dst.drain()
                if throttled:
                    self.sent += len(data)
                    if self.rate:
                        await asyncio.sleep(len(data) / self.rate)

        try:
            await asyncio.gather(pipe(reader, up_w, False), pipe(up_r, writer, True))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            up_w.close()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
