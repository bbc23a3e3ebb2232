"""Registry images against a real docker-registry started here (issue 16): pulled by skopeo into the
host's store, run by the container driver through real runc."""
from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path

import pytest

from agent.drivers.base import DriverError, InstanceSpec
from agent.drivers.container import ContainerDriver
from agent.drivers.container.runc import IdMap
from agent.images.pull import PullError
from agent.images.registry import RegistryConfig
from agent.images.store import ImageStore
from tests.agent.conftest import RUNC, needs_root, needs_runc
from tests.agent.images.registry import Registry, busybox_layer, has, layer, write_layout
from tests.conftest import searchable_dir

pytestmark = [pytest.mark.integration, needs_root(), needs_runc(),
              pytest.mark.skipif(not (has("docker-registry") and has("skopeo")),
                                 reason="needs docker-registry and skopeo")]
MI = 1 << 20
CONFIG = {"Entrypoint": ["/bin/sh", "-c"],
          "Cmd": ["echo $GREETING from $(pwd) as $(id -u); cat msg; ls /old; echo end"],
          "Env": ["GREETING=hi", "PATH=/bin", "FROM_IMAGE=yes"], "WorkingDir": "/app", "User": "app"}


def app_layout(out: Path, tag: str = "1", message: bytes = b"hello\n") -> Path:
    """Two layers: busybox with /old/gone, then /app/msg and a whiteout deleting /old/gone."""
    base = busybox_layer([("old", "dir", None), ("old/gone", "file", b"x")])
    top = layer([("app", "dir", None), ("app/msg", "file", message, 0o644), ("old", "dir", None),
                 ("old/.wh.gone", "file", b"")])
    return write_layout(out, tag, [base, top], CONFIG)


@pytest.fixture
def registry(tmp_path):
    r = Registry(tmp_path / "registry").start()
    yield r
    r.stop()


@pytest.fixture
def workdir(request) -> Path:
    return searchable_dir(request, "images")


def spec(instance_id: str, image: str, **config) -> InstanceSpec:
    return InstanceSpec(id=instance_id, job="t", group="g", kind="container", cpu_milli=500,
                        memory_bytes=64 * MI, config={"image": image, "env": {}, **config})


class Driven:
    """A container driver and what it started, destroyed at the end."""

    def __init__(self, node: str, state_dir: Path, subnet: str, store: ImageStore | None = None,
                 allow_privileged: bool = False):
        self.driver = ContainerDriver(node, state_dir, subnet, runc=RUNC, images=store,
                                      allow_privileged=allow_privileged)
        self.handles = []
        self.progress: list[str] = []
        self.driver.progress = lambda i, m: self.progress.append(m)

    async def run(self, s: InstanceSpec) -> tuple[str, dict]:
        """Start s, wait for its end; (its log, its handle's data)."""
        h = await self.driver.start(s)
        self.handles.append(h)
        await asyncio.wait_for(self.driver.wait(h), 20)
        return self.driver.log_path(h).read_text(), h.data

    async def close(self) -> None:
        for h in self.handles:
            await self.driver.destroy(h)
        await self.driver.shutdown()


@pytest.fixture
async def driven(node, state_dir, subnet):
    d = Driven(node, state_dir, subnet)
    yield d
    await d.close()


async def test_a_multi_layer_image_runs_with_its_entrypoint_env_workdir_and_user(registry, workdir, driven):
    digest = registry.push(app_layout(workdir / "layout"), "team/app", "1")
    log, data = await driven.run(spec("img-run", f"{registry.address}/team/app:1"))
    # Entrypoint + Cmd, Env, WorkingDir, User (app = 1000), the second layer's whiteout deleted /old/gone
    assert log.splitlines() == ["hi from /app as 1000", "hello", "end"]
    assert data["image_digest"] == digest
    # the spec's command replaces Cmd (Entrypoint stays), its env and user win
    log, _ = await driven.run(spec("img-override", f"{registry.address}/team/app:1",
                                   command=["echo $GREETING $FROM_IMAGE $(id -u)"], env={"GREETING": "spec"},
                                   user="0"))
    assert log.strip() == "spec yes 0"


async def test_an_images_setuid_programs_keep_their_bit_only_for_privileged_containers(
        registry, workdir, node, state_dir, subnet):
    """Issue 16: layers unpacked without setuid/setgid bits unless privileged (as .tar images are);
    the privileged container's layers are a tree of their own, fetched from the same blobs."""
    top = layer([("bin/su", "file", b"x", 0o4755), ("bin/wall", "file", b"x", 0o2711)])
    registry.push(write_layout(workdir / "layout", "1", [busybox_layer(), top], {"Cmd": ["ls", "-l", "/bin"]}),
                  "team/suid", "1")
    ref = f"{registry.address}/team/suid:1"
    d = Driven(node, state_dir, subnet, allow_privileged=True)
    try:
        before = len(registry.blob_gets())
        plain, _ = await d.run(spec("suid-plain", ref))
        privileged, _ = await d.run(spec("suid-privileged", ref, privileged=True))
        assert len(registry.blob_gets()) == before + 3                   # pulled once for both
    finally:
        await d.close()
    modes = {kind: {line.split()[-1]: line.split()[0] for line in out.splitlines() if line.endswith(("su", "wall"))}
             for kind, out in (("plain", plain), ("privileged", privileged))}
    assert modes == {"plain": {"su": "-rwxr-xr-x", "wall": "-rwx--x--x"},
                     "privileged": {"su": "-rwsr-xr-x", "wall": "-rwx--s--x"}}


async def test_a_layer_that_hard_links_files_of_the_layer_below_runs(registry, workdir, driven):
    """Issue 16's gap: a later layer hard-linking a file an earlier one shipped (a copy of busybox run
    as /usr/bin/cat, a data file), and one it deletes in the same layer (whiteout + link: the link
    keeps the content). Pushed to a real registry, pulled, run by runc in the node's user namespace."""
    base = busybox_layer([("data", "dir", None), ("data/msg", "file", b"from the base\n", 0o640),
                          ("data/old", "file", b"deleted below, linked above\n", 0o644)])
    top = layer([("usr", "dir", None), ("usr/bin", "dir", None), ("usr/bin/cat", "hard", "bin/busybox"),
                 ("app", "dir", None), ("app/msg", "hard", "data/msg"), ("data", "dir", None),
                 ("data/.wh.old", "file", b""), ("app/old", "hard", "data/old")])
    cmd = "/usr/bin/cat /app/msg /app/old; ls /data; ls -ln /app/msg"
    digest = registry.push(write_layout(workdir / "layout", "1", [base, top], {"Cmd": ["/bin/sh", "-c", cmd]}),
                           "team/hardlinks", "1")
    log, data = await driven.run(spec("img-hardlinks", f"{registry.address}/team/hardlinks:1"))
    lines = log.splitlines()
    assert data["image_digest"] == digest
    assert lines[:3] == ["from the base", "deleted below, linked above", "msg"], log
    # the copy keeps the file's mode and its owner, root of the container's id range
    assert lines[3].split()[:4] == ["-rw-r-----", "1", "0", "0"], log


async def test_one_hard_linking_layer_on_two_bases_shows_each_base_s_file(registry, workdir, tmp_path):
    """A layer blob is shared by content; one that copied files from the layers under it holds
    those copies, so each stack under it has its own tree (and collecting one image leaves the other's)."""
    top = layer([("x", "hard", "data/f")])
    contents = {tag: f"base {tag}: {os.urandom(4).hex()}\n".encode() for tag in ("1", "2")}
    for tag, content in contents.items():
        base = busybox_layer([("data", "dir", None), ("data/f", "file", content)])
        registry.push(write_layout(workdir / "layout", tag, [base, top], {"Cmd": ["/bin/cat", "/x"]}), "team/on", tag)
    store = ImageStore(tmp_path / "store")
    images = {tag: await store.get(f"{registry.address}/team/on:{tag}") for tag in contents}
    assert {tag: (i.layers[0] / "x").read_bytes() for tag, i in images.items()} == contents
    assert images["1"].layers[0] != images["2"].layers[0]
    store.cap_bytes = store.size() - 1                        # the least recently used image goes
    assert store.collect() == [images["1"].digest]
    assert not any(p.exists() for p in images["1"].layers) and all(p.is_dir() for p in images["2"].layers)
    again = await store.get(f"{registry.address}/team/on:2")  # nothing unpacked again
    assert again.layers == images["2"].layers and (again.layers[0] / "x").read_bytes() == contents["2"]


@pytest.mark.parametrize("linkname, words", [
    ("../../../../../../etc/hostname", "leaves the image's root"), ("/etc/passwd", "leaves the image's root"),
    ("data/nothing", "names nothing in this layer or the layers below it")])
async def test_a_layer_hard_linking_out_of_the_image_or_to_nothing_fails_the_start(registry, workdir, driven,
                                                                                  linkname, words):
    top = layer([("x", "hard", linkname)])
    registry.push(write_layout(workdir / "layout", "1", [busybox_layer(), top], {"Cmd": ["/bin/cat", "/x"]}),
                  "team/badlink", "1")
    with pytest.raises(DriverError, match=f"hard link 'x' -> '{re.escape(linkname)}' {words}"):
        await driven.run(spec("img-badlink", f"{registry.address}/team/badlink:1"))


async def test_starts_of_one_image_for_different_id_ranges_pull_it_once(registry, workdir, tmp_path):
    """The pull is per reference; the unpacking per id range (user namespace, host ids, privileged)."""
    registry.push(app_layout(workdir / "layout"), "team/app", "1")
    ref = f"{registry.address}/team/app:1"
    store = ImageStore(tmp_path / "store")
    before = len(registry.blob_gets())
    images = await asyncio.gather(store.get(ref, ids=IdMap(200000, 200000, 65536)), store.get(ref),
                                  store.get(ref, setuid=True))
    assert len(registry.blob_gets()) == before + 3                      # config + 2 layers, once
    assert len({i.digest for i in images}) == 1 and len({i.layers for i in images}) == 3
    assert sorted(p.name for p in (store.root / "layers").iterdir()) == ["host", "privileged", "userns-200000-200000"]
    # every range's layers counted in the record, whichever thread wrote it last (the cap's arithmetic)
    record = json.loads((store.root / "images" / f"{images[0].digest.split(':')[1]}.json").read_text())
    assert sorted({k.split("/")[0] for k in record["layer_bytes"]}) == ["host", "privileged", "userns-200000-200000"]
    assert len(record["layer_bytes"]) == 6


async def test_two_instances_pull_once_and_a_third_pulls_nothing(registry, workdir, driven):
    registry.push(app_layout(workdir / "layout"), "team/app", "1")
    ref = f"{registry.address}/team/app:1"
    before = len(registry.blob_gets())
    await asyncio.gather(driven.run(spec("twice-a", ref)), driven.run(spec("twice-b", ref)))
    fetched = registry.blob_gets()[before:]
    assert len(fetched) == 3 and len(set(fetched)) == 3          # config + 2 layers, each once
    await driven.run(spec("twice-c", ref))
    assert len(registry.blob_gets()) == before + 3


async def test_a_digest_pins_the_image_while_the_tag_moves(registry, workdir, driven):
    layout = workdir / "layout"
    first = registry.push(app_layout(layout, "v", b"first\n"), "team/app", "v")
    second = registry.push(app_layout(layout, "v", b"second\n"), "team/app", "v")
    assert first != second
    log, data = await driven.run(spec("pinned", f"{registry.address}/team/app@{first}"))
    assert "first" in log and data["image_digest"] == first
    log, data = await driven.run(spec("moved", f"{registry.address}/team/app:v", pull="always"))
    assert "second" in log and data["image_digest"] == second



async def test_a_tag_and_a_digest_together_run_the_digest(registry, workdir, driven):
    """`NAME:TAG@sha256:...` is a valid reference (the tag is then only a note, as Docker has it);
    skopeo refuses the two together, so the pull asks for the digest alone."""
    layout = workdir / "layout"
    first = registry.push(app_layout(layout, "v", b"first\n"), "team/app", "v")
    registry.push(app_layout(layout, "v", b"second\n"), "team/app", "v")
    log, data = await driven.run(spec("tag-and-digest", f"{registry.address}/team/app:v@{first}"))
    assert "first" in log and data["image_digest"] == first


async def test_a_tampered_blob_fails_the_start_and_leaves_nothing_used_later(registry, workdir, driven):
    layout = app_layout(workdir / "layout")
    registry.push(layout, "team/app", "1")
    manifest = json.loads((layout / "blobs/sha256" / json.loads((layout / "index.json").read_text())
                           ["manifests"][0]["digest"].split(":")[1]).read_text())
    top = manifest["layers"][1]["digest"]
    blob = registry.blob_file(top)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(DriverError, match="(?i)digest"):
        await driven.run(spec("tampered", f"{registry.address}/team/app:1"))
    store = driven.driver.images
    assert store.holds() == []
    assert not any((store.root / "layers").glob("*/" + top.split(":")[1]))
    assert not (store.blobs / "sha256" / top.split(":")[1]).exists()


async def test_an_unknown_tag_and_an_unreachable_registry_fail_with_the_reason(registry, driven):
    with pytest.raises(DriverError, match="manifest unknown"):
        await driven.run(spec("no-tag", f"{registry.address}/team/none:1"))
    with pytest.raises(DriverError, match="(?i)connection refused|dial tcp"):
        await driven.run(spec("no-registry", "127.0.0.1:1/team/none:1"))


async def test_never_refuses_an_image_not_on_the_node(registry, driven):
    with pytest.raises(DriverError, match="container.pull is never"):
        await driven.run(spec("never", f"{registry.address}/team/app:1", pull="never"))


async def test_basic_auth_and_tls_with_the_registry_config(tmp_path, workdir, node, state_dir, subnet):
    r = Registry(tmp_path / "secure", auth=("alice", "s3cret"), tls=True).start()
    try:
        digest = r.push(app_layout(workdir / "layout"), "team/app", "1")
        ref = f"{r.address}/team/app:1"
        for name, password, ok in [("wrong", "nope", False), ("right", "s3cret", True)]:
            auth = __import__("base64").b64encode(f"alice:{password}".encode()).decode()
            cfg = tmp_path / f"{name}.json"
            cfg.write_text(json.dumps({"auths": {r.address: {"auth": auth}}, "certs": {r.address: str(r.ca)}}))
            store = ImageStore(state_dir / name / "images", RegistryConfig.load(cfg))
            d = Driven(node, state_dir / name, subnet, store)
            try:
                if ok:
                    log, data = await d.run(spec(f"auth-{name}", ref))
                    assert "hello" in log and data["image_digest"] == digest
                else:
                    with pytest.raises(DriverError, match="(?i)unauthorized|authentication"):
                        await d.run(spec(f"auth-{name}", ref))
            finally:
                await d.close()
    finally:
        r.stop()


async def test_gc_keeps_the_store_under_its_cap_least_recently_used_first(registry, workdir, tmp_path):
    layout = workdir / "layout"
    a = registry.push(app_layout(layout, "a", b"a\n"), "team/app", "a")
    b = registry.push(app_layout(layout, "b", b"b\n"), "team/app", "b")
    store = ImageStore(tmp_path / "store", cap_bytes=1)        # any image is over the cap
    told: list[list[dict]] = []
    store.on_change = told.append         # what the agent publishes with its node record
    first = await store.get(f"{registry.address}/team/app:a")
    assert first.digest == a and store.holds() == [a]
    size_a = sum(os.path.getsize(store.blobs / "sha256" / d.split(":")[1]) for d in _blobs_of(store, a))
    assert told == [[{"digest": a, "references": [f"{registry.address}/team/app:a"], "bytes": size_a}]]
    await store.get(f"{registry.address}/team/app:a")          # nothing changed: nothing told
    assert len(told) == 1
    second = await store.get(f"{registry.address}/team/app:b")   # a is unused: collected for b
    assert store.holds() == [b]
    assert [[i["digest"] for i in t] for t in told] == [[a], [b]]   # the collection is told too
    assert first.layers[1] == second.layers[1] and first.layers[1].is_dir()   # the shared busybox layer stays
    assert not first.layers[0].exists()                                        # a's own top layer went
    assert sorted(os.listdir(store.blobs / "sha256")) == sorted(
        d.split(":")[1] for d in _blobs_of(store, b))


async def test_an_image_over_the_cap_goes_once_its_last_instance_is_destroyed(registry, workdir, node, state_dir,
                                                                               subnet, tmp_path):
    """Collected when released, not only at the next pull (kubelet's image GC runs on its own):
    in use while either instance's overlay is mounted, gone, and told, after the last one."""
    a = registry.push(app_layout(workdir / "layout", "a", b"a\n"), "team/app", "a")
    store = ImageStore(tmp_path / "store", cap_bytes=1)
    told: list[list[dict]] = []
    store.on_change = told.append
    d = Driven(node, state_dir, subnet, store)
    try:
        ref = f"{registry.address}/team/app:a"
        first, second = await d.driver.start(spec("rel-1", ref)), await d.driver.start(spec("rel-2", ref))
        for h in (first, second):
            await asyncio.wait_for(d.driver.wait(h), 20)
        await d.driver.destroy(first)
        assert store.holds() == [a]                    # the second's overlay still holds it
        await d.driver.destroy(second)
        assert store.holds() == [] and [[i["digest"] for i in t] for t in told] == [[a], []]
        assert os.listdir(store.blobs / "sha256") == [] and list((store.root / "layers").glob("*/*")) == []
    finally:
        await d.close()


def _blobs_of(store: ImageStore, digest: str) -> list[str]:
    record = json.loads((store.root / "images" / f"{digest.split(':')[1]}.json").read_text())
    return [record["manifest"], record["config_digest"], *record["layers"]]


async def test_a_stalled_registry_fails_the_pull_at_the_deadline(registry, workdir, tmp_path):
    big = os.urandom(4 * MI)       # random: gzip cannot shrink it, the stall comes mid-blob
    registry.push(write_layout(workdir / "layout", "big", [busybox_layer([("big", "file", big)])], CONFIG),
                  "team/big", "big")
    proxy = await StallingProxy.start(registry.port, after=256 * 1024)
    store = ImageStore(tmp_path / "store", stall_seconds=1.5)
    loop = asyncio.get_running_loop()
    began = loop.time()
    progress: list[str] = []
    try:
        with pytest.raises(PullError, match="stalled"):
            await store.get(f"127.0.0.1:{proxy.port}/team/big:big", progress=progress.append)
    finally:
        proxy.close()
    assert loop.time() - began < 10
    assert progress and progress[-1].startswith("pulling ") and progress[-1].endswith(" MiB")
    assert store.holds() == [] and list((store.root / "layers").glob("*/*")) == []
    assert list(store.tmp.glob("pull-*")) == []


class StallingProxy:
    """Forwards to the registry until `after` bytes of one response went through, then holds on."""

    def __init__(self, upstream: int, after: int):
        self.upstream, self.after = upstream, after

    @classmethod
    async def start(cls, upstream: int, after: int) -> StallingProxy:
        p = cls(upstream, after)
        p.server = await asyncio.start_server(p._serve, "127.0.0.1", 0)
        p.port = p.server.sockets[0].getsockname()[1]
        return p

    async def _serve(self, reader, writer):
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream)

        async def pipe(src, dst, limit):
            sent = 0
            while data := await src.read(65536):
                if limit is not None and sent + len(data) > limit:
                    await asyncio.sleep(3600)           # the stall: nothing more, connection open
                dst.write(data)
                await dst.drain()
                sent += len(data)

        try:
            await asyncio.gather(pipe(reader, up_w, None), pipe(up_r, writer, self.after))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            up_w.close()

    def close(self):
        self.server.close()
