"""The local cluster's image registry (issue 16): Debian's docker-registry on the bridge address,
port 5000, holding an example image built from the busybox rootfs (`packyard/busybox:1`), and the
agents' --registry-config listing it as insecure (plain HTTP on a non-loopback address must be
listed, as Docker's insecure-registries). Started and ended by its PID like every other process."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

PORT = 5000
EXAMPLE = "packyard/busybox:1"


def start(workdir: Path, address: str, log: Path, spawn) -> tuple[subprocess.Popen, Path]:
    """docker-registry serving on address:PORT (its data under workdir), the example image pushed;
    (its process, the agents' registry config)."""
    if shutil.which("docker-registry") is None or shutil.which("skopeo") is None:
        raise RuntimeError("the local registry needs docker-registry and skopeo (deploy/local/setup.sh installs them)")
    root = workdir / "registry"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    endpoint = f"{address}:{PORT}"
    (root / "config.yml").write_text(json.dumps({
        "version": 0.1, "log": {"level": "warn", "accesslog": {"disabled": False}},
        "storage": {"filesystem": {"rootdirectory": str(root / "data")}}, "http": {"addr": endpoint}}))
    proc = spawn(["docker-registry", "serve", str(root / "config.yml")], log)
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection((address, PORT), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry did not start; see {log}") from None
            time.sleep(0.05)
    layout = _example_layout(root / "example")
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:1",
                    f"docker://{endpoint}/{EXAMPLE}"], check=True, capture_output=True)
    config = root / "registry-config.json"
    config.write_text(json.dumps({"auths": {}, "insecure": [endpoint]}))
    return proc, config


def _example_layout(out: Path) -> Path:
    """One layer: the agents' built-in busybox rootfs; config: a shell as Cmd, an Env and a WorkingDir."""
    from agent.drivers.container.rootfs import default_rootfs
    with tempfile.TemporaryDirectory() as cache:
        tree = default_rootfs(Path(cache))
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            for path in sorted(tree.rglob("*")):
                tf.add(path, arcname=str(path.relative_to(tree)), recursive=False)
    layer = gzip.compress(buf.getvalue(), mtime=0)
    blobs = out / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> str:
        h = hashlib.sha256(data).hexdigest()
        (blobs / h).write_bytes(data)
        return f"sha256:{h}"

    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin:/sbin:/usr/bin", "IMAGE=packyard/busybox"],
                                    "WorkingDir": "/tmp"},
                         "rootfs": {"type": "layers",
                                    "diff_ids": [f"sha256:{hashlib.sha256(gzip.decompress(layer)).hexdigest()}"]}}
                        ).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": put(config), "size": len(config)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                       "digest": put(layer), "size": len(layer)}]}).encode()
    (out / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (out / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(manifest), "size": len(manifest),
         "annotations": {"org.opencontainers.image.ref.name": "1"}}]}))
    return out
