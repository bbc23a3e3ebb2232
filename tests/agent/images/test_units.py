"""The image store's pure parts: references, registry config, process merge, safe layer unpacking."""
from __future__ import annotations

import io
import json
import os
import re
import stat
import tarfile
from pathlib import Path

import pytest

from agent.drivers.container.runc import IdMap
from agent.images import layers
from agent.images.process import ProcessError, merged
from agent.images.pull import reason
from agent.images.registry import RegistryConfig, RegistryConfigError
from packyard import imageref

D = "sha256:" + "a" * 64


@pytest.mark.parametrize("value, registry, name, tag, digest", [
    ("127.0.0.1:5000/team/app:1.2", "127.0.0.1:5000", "team/app", "1.2", None),
    ("registry.example/app", "registry.example", "app", "latest", None),
    (f"localhost/app@{D}", "localhost", "app", None, D),
    (f"r.io:443/a/b/c:t@{D}", "r.io:443", "a/b/c", "t", D),
], ids=["port-tag", "default-tag", "digest", "tag-and-digest"])
def test_references_parse(value, registry, name, tag, digest):
    ref = imageref.parse(value)
    assert (ref.registry, ref.name, ref.tag, ref.digest) == (registry, name, tag, digest)


@pytest.mark.parametrize("value, words", [
    ("team/app", "not a registry host"), ("r.io/App", "does not match"), ("r.io/app@sha256:12", "does not match"),
    ("r.io:70000/app", "outside 1..65535"), ("r.io/app:", "does not match"), ("r.io/" + "a" * 300, "longer"),
    ("[::1]:5000/app:1", "IPv6 address"),
], ids=["no-registry", "uppercase", "short-digest", "bad-port", "empty-tag", "too-long", "ipv6"])
def test_malformed_references_say_why(value, words):
    with pytest.raises(imageref.ReferenceError, match=words):
        imageref.parse(value)


@pytest.mark.parametrize("value, words", [
    ("busybox", "docker.io/library/busybox\\)"), ("busybox:1.36", "docker.io/library/busybox:1.36\\)"),
    ("team/app:1", "docker.io/team/app:1\\)"),
], ids=["bare-name", "bare-name-tag", "no-registry-tag"])
def test_a_reference_without_its_registry_is_shown_written_out(value, words):
    """Docker would resolve these through docker.io; packyard pulls only what the spec names."""
    with pytest.raises(imageref.ReferenceError, match=words):
        imageref.parse(value)


@pytest.mark.parametrize("tag", ["t\u00e9", "\u0663", "v1\u00b2", "a\u212a"])
def test_a_tag_is_ascii_as_in_the_distribution_grammar(tag):
    """Python's \\w is Unicode's: a tag no registry accepts passed the check (and failed at pull)."""
    with pytest.raises(imageref.ReferenceError, match="does not match"):
        imageref.parse(f"localhost:5000/app:{tag}")
    assert imageref.parse(f"localhost:5000/app:{tag.encode('ascii', 'replace').decode().replace('?', 'x')}")


@pytest.mark.parametrize("value", ["\x85", "r.io/a\u2028b", "r.io/a\nb", "r.io/" + "\x85" * 400])
def test_a_bad_reference_is_quoted_back_on_one_short_line(value):
    """hypothesis found '\x85' (NEL, a line break to str.splitlines) quoted back raw."""
    with pytest.raises(imageref.ReferenceError) as e:
        imageref.parse(value)
    assert len(str(e.value).splitlines()) == 1 and len(str(e.value)) < 300


def test_plain_http_only_for_loopback_or_listed(tmp_path):
    cfg = tmp_path / "c.json"
    (tmp_path / "x.crt").write_text("a CA")
    cfg.write_text(json.dumps({"auths": {}, "insecure": ["10.0.0.5:5000"],
                               "certs": {"127.0.0.1:5000": str(tmp_path / "x.crt")}}))
    rc = RegistryConfig.load(cfg)
    allowed = {r: rc.plain_allowed(imageref.parse(f"{r}/a")) for r in
               ("127.0.0.1:5000", "localhost:1", "LocalHost:1", "127.9.9.9", "10.0.0.5:5000", "10.0.0.6:5000",
                "r.io", "localhost.r.io", "127.0.0.1.nip.io")}
    assert allowed == {"127.0.0.1:5000": True, "localhost:1": True, "LocalHost:1": True, "127.9.9.9": True,
                       "10.0.0.5:5000": True, "10.0.0.6:5000": False, "r.io": False, "localhost.r.io": False,
                       "127.0.0.1.nip.io": False}
    # a registry given a CA is verified with it, even on loopback
    args = RegistryConfig(certs={"127.0.0.1:5000": cfg}).skopeo_args(imageref.parse("127.0.0.1:5000/a"), tmp_path)
    assert "--src-tls-verify=true" in args and any(a.startswith("--src-cert-dir=") for a in args)
    with pytest.raises(RegistryConfigError, match="auths"):
        (tmp_path / "bad.json").write_text('{"auths": []}')
        RegistryConfig.load(tmp_path / "bad.json")


@pytest.mark.parametrize("msg, said", [
    ("Error reading manifest 1 in r/a: manifest unknown: manifest unknown",
     "Error reading manifest 1 in r/a: manifest unknown"),
    (r'Error parsing image name \"docker://r:5000/a:9\": reading manifest 9 in r:5000/a: manifest unknown: '
     "manifest unknown", "reading manifest 9 in r:5000/a: manifest unknown"),
    ("reading manifest 1 in r/a: unauthorized: authentication required",
     "reading manifest 1 in r/a: unauthorized: authentication required"),
    (r'pinging container registry r: Get \"https://r/v2/\": dial tcp: connection refused',
     'pinging container registry r: Get "https://r/v2/": dial tcp: connection refused'),
], ids=["repeated-code", "name-wrapper", "auth", "unreachable"])
def test_skopeo_reason_is_its_message(msg, said):
    assert reason(f'time="x" level=info msg="first"\ntime="x" level=fatal msg="{msg}"\n') == said


@pytest.mark.parametrize("image, spec, args, env, cwd, user", [
    ({"Entrypoint": ["/e"], "Cmd": ["c"]}, {}, ["/e", "c"], {}, "/", None),
    ({"Entrypoint": ["/e"], "Cmd": ["c"]}, {"command": ["x"]}, ["/e", "x"], {}, "/", None),
    ({"Cmd": ["c"], "Env": ["A=1", "B=2=3"], "WorkingDir": "w", "User": "app"},
     {"env": {"A": "s"}, "user": "0"}, ["c"], {"A": "s", "B": "2=3"}, "/w", "0"),
    ({"Cmd": ["c"], "User": "app"}, {}, ["c"], {}, "/", "app"),
], ids=["entrypoint+cmd", "command-replaces-cmd", "spec-wins", "image-user"])
def test_the_spec_wins_as_docker_does(image, spec, args, env, cwd, user):
    p = merged(image, spec)
    assert (p.args, p.env, p.cwd, p.user) == (args, env, cwd, user)


def test_nothing_to_run_is_refused():
    with pytest.raises(ProcessError, match="container.command"):
        merged({}, {})


def _tar(tmp_path: Path, entries) -> Path:
    path = tmp_path / "layer.tar"
    with tarfile.open(path, "w") as tf:
        for info, data in entries:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _info(name, kind=tarfile.REGTYPE, size=0, linkname="", mode=0o644, uid=0):
    i = tarfile.TarInfo(name)
    i.type, i.size, i.linkname, i.mode, i.uid, i.gid = kind, size, linkname, mode, uid, uid
    return i


@pytest.mark.parametrize("entries", [
    [(_info("../escape", size=1), b"x")],
    [(_info("/abs/../../escape", size=1), b"x")],
    [(_info("link", tarfile.SYMTYPE, linkname="/"), None), (_info("link/etc/x", size=1), b"x")],
    [(_info("hard", tarfile.LNKTYPE, linkname="../../etc/passwd"), None)],
], ids=["dotdot", "absolute-dotdot", "through-symlink", "hardlink-out"])
def test_no_member_lands_outside_the_layer(tmp_path, entries):
    dest = tmp_path / "layer"
    dest.mkdir()
    with pytest.raises(layers.LayerError):
        layers.unpack(_tar(tmp_path, entries), dest, None)
    assert not (tmp_path / "escape").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts are device nodes and trusted xattrs: root")
def test_whiteouts_devices_and_owners(tmp_path):
    dest = tmp_path / "layer"
    dest.mkdir()
    blob = _tar(tmp_path, [(_info("d", tarfile.DIRTYPE, mode=0o755), None), (_info("d/.wh.gone"), b""),
                           (_info("o", tarfile.DIRTYPE, mode=0o755), None), (_info("o/.wh..wh..opq"), b""),
                           (_info("null", tarfile.CHRTYPE), None),
                           (_info("suid", size=1, mode=0o4755, uid=1000), b"x")])
    layers.unpack(blob, dest, IdMap(100000, 100000, 65536))
    gone = os.lstat(dest / "d/gone")
    assert stat.S_ISCHR(gone.st_mode) and gone.st_rdev == 0          # overlayfs's whiteout
    assert os.getxattr(dest / "o", "trusted.overlay.opaque") == b"y"
    assert not (dest / "null").exists()                               # no device nodes from images
    suid = os.lstat(dest / "suid")
    assert (suid.st_uid, suid.st_gid) == (101000, 101000) and stat.S_IMODE(suid.st_mode) == 0o755


@pytest.mark.skipif(os.geteuid() != 0, reason="owners of the host's ids: root")
@pytest.mark.parametrize("setuid", [False, True], ids=["ordinary", "privileged"])
def test_setuid_bits_only_in_layers_for_privileged_containers(tmp_path, setuid):
    """Issue 16: no setuid bits unless privileged (as a .tar image); a root filesystem's sticky,
    world-writable /tmp and a setgid directory are kept either way."""
    dest = tmp_path / "layer"
    dest.mkdir()
    modes = {"bin/su": 0o4755, "bin/wall": 0o2755, "bin/both": 0o6750, "bin/ls": 0o755,
             "tmp": 0o1777, "srv": 0o2775}
    entries = [(_info("bin", tarfile.DIRTYPE, mode=0o755), None)]
    entries += [(_info(n, tarfile.DIRTYPE, mode=m), None) if n in ("tmp", "srv") else (_info(n, size=1, mode=m), b"x")
                for n, m in modes.items()]
    layers.unpack(_tar(tmp_path, entries), dest, None, setuid=setuid)
    got = {n: stat.S_IMODE(os.lstat(dest / n).st_mode) for n in modes}
    assert got == ({**modes} if setuid else {**modes, "bin/su": 0o755, "bin/wall": 0o755, "bin/both": 0o750})


def test_a_collection_keeps_the_blobs_of_a_pull_in_progress(tmp_path):
    """A pull's blobs land before its image's record: a collection meanwhile (another image
    released over the cap) removes the unused image's blobs, not those."""
    from agent.images.store import ImageStore
    store = ImageStore(tmp_path / "store", cap_bytes=1)
    old, landing = ["sha256:" + c * 64 for c in "ab"], "sha256:" + "c" * 64
    for d in (*old, landing):
        (store.blobs / "sha256" / d.split(":")[1]).write_bytes(b"x")
    (store.root / "images" / f"{'d' * 64}.json").write_text(json.dumps(
        {"digest": "sha256:" + "d" * 64, "manifest": old[0], "config_digest": old[1], "layers": [],
         "blob_bytes": 2, "layer_bytes": {}, "used_at": 1.0}))
    assert store.collect(frozenset({landing})) == ["sha256:" + "d" * 64]
    assert os.listdir(store.blobs / "sha256") == ["c" * 64]


@pytest.mark.parametrize("content, words", [
    ({"auths": {}, "certs": {"r.io": "/no/such/ca.crt"}}, "certs.r.io: cannot read /no/such/ca.crt"),
    ({"auths": {}, "certs": {"r.io": 5}}, "'certs' must map registries to CA files"),
    ({"auths": {}, "insecure": "r.io"}, "'insecure' list registries"),
    ({"auths": []}, "no 'auths' object"),
], ids=["missing-ca", "ca-not-a-path", "insecure-not-a-list", "auths-not-an-object"])
def test_a_registry_config_that_cannot_work_is_refused_when_loaded(tmp_path, content, words):
    """Refused when the agent starts (exit 2 naming the flag), not at each pull from that registry."""
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(content))
    with pytest.raises(RegistryConfigError, match=re.escape(words)):
        RegistryConfig.load(cfg)
