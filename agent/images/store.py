"""The host's image store: blobs, unpacked layers and image records, content-addressed, shared by
every instance on the host; pulls of one image coalesced; least recently used images collected
once the store outgrows `--image-cache-size`.

Under the driver's state dir, images/registry/:
    blobs/sha256/<hex>              manifests, configs, layer blobs, as the registry sent them (verified)
    layers/<range>/<hex>/           one layer blob unpacked (layers.py), per id range (host, userns-U-G;
                                    privileged: the host's ids, setuid bits kept)
    layers/<range>/<hex>-<chain>/   a layer whose hard links name files of the layers below it: its tree
                                    holds copies of them, so it is kept per stack of layers under it
                                    (<chain>: of their digests, as containerd keys snapshots by chain ID)
    images/<hex>.json               an image (by its manifest's digest): layers, config, sizes, last use
    refs.json                       reference -> digest it was last resolved to (container.pull)
    tmp/                            pulls and unpacks in progress (emptied at start: never used)
Everything lands by rename once complete and verified, so a pull cut short (agent killed, registry
stalled, a blob that does not match its digest) leaves nothing a later start would use.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent.images import layers as layers_mod
from agent.images import pull as pull_mod
from agent.images.pull import MiB, PullError
from agent.images.registry import RegistryConfig
from packyard import imageref

if TYPE_CHECKING:                 # the container driver imports this package
    from agent.drivers.container.runc import IdMap

log = logging.getLogger(__name__)
LAYER_TYPES = ("application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip",
               "application/vnd.docker.image.rootfs.diff.tar.gzip", "application/vnd.docker.image.rootfs.diff.tar")
DEFAULT_CAP = 20 << 30
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Image:
    digest: str                 # what the reference resolved to: the instance runs this
    layers: tuple[Path, ...]    # unpacked, topmost first (overlayfs lowerdir order)
    config: dict                # the image config's `config` (Entrypoint, Cmd, Env, WorkingDir, User)


class ImageStore:
    def __init__(self, root: Path, registry: RegistryConfig | None = None, cap_bytes: int = DEFAULT_CAP,
                 stall_seconds: float = 30.0):
        self.root = Path(root)
        self.registry = registry or RegistryConfig()
        self.cap_bytes = cap_bytes
        self.stall = stall_seconds
        self.blobs, self.tmp = self.root / "blobs", self.root / "tmp"
        shutil.rmtree(self.tmp, ignore_errors=True)
        for d in (self.blobs / "sha256", self.root / "layers", self.root / "images", self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        self._pulls: dict[tuple, asyncio.Future[Image]] = {}
        # one registry pull per reference, whatever id ranges its layers are then unpacked for (a
        # privileged and an ordinary container of one image starting together fetch it once)
        self._fetching: dict[str, asyncio.Future[dict]] = {}
        self._listeners: dict[tuple, list[Progress]] = {}
        self._pinned: Counter[str] = Counter()      # images between get() and their overlay mount
        # blobs of pulls in progress: in the blob directory before their image's record is, so a
        # collection meanwhile (another image released) must not take them for unused ones
        self._pulling: Counter[str] = Counter()
        self._collecting = asyncio.Lock()            # one collection at a time (they run in threads)
        self._record_lock = threading.Lock()         # image records are rewritten from unpack threads
        # told what the store holds (summary()) whenever that changed: the agent publishes it with
        # its node record for placement's image locality; called on the event loop only
        self.on_change: Callable[[list[dict]], None] | None = None
        self._told: list[dict] | None = None

    # -- using images ------------------------------------------------------------------------------

    async def get(self, image: str, pull: str = "if-not-present", ids: IdMap | None = None,
                  progress: Progress | None = None, *, setuid: bool = False) -> Image:
        """The image `image` refers to, pulled if `pull` says so. Concurrent gets of one image wait
        for one pull (each hears its progress); PullError says why it failed. `setuid`: its layers
        as privileged containers see them (setuid/setgid bits kept; only with the host's ids)."""
        if setuid and ids is not None:
            raise ValueError("setuid layers are for privileged containers, which run with the host's ids")
        try:
            ref = imageref.parse(image)
        except imageref.ReferenceError as e:
            raise PullError(f"container.image: {e}") from None
        key = (str(ref), pull, _range(ids, setuid))
        if progress is not None:
            self._listeners.setdefault(key, []).append(progress)
        running = self._pulls.get(key)
        if running is None:
            running = self._pulls[key] = asyncio.ensure_future(self._get(ref, pull, ids, setuid))
            running.add_done_callback(lambda _: (self._pulls.pop(key, None), self._listeners.pop(key, None)))
        return await asyncio.shield(running)

    @contextmanager
    def pinned(self, digest: str) -> Iterator[None]:
        """Keep the image from garbage collection until its overlay is mounted (then the mount does)."""
        self._pinned[digest] += 1
        try:
            yield
        finally:
            self._pinned[digest] -= 1

    def holds(self) -> list[str]:
        """Digests of the images stored here."""
        return sorted(r["digest"] for r in self._records())

    def summary(self) -> list[dict]:
        """What the store holds, as the node record publishes it (placement's image locality):
        each image's digest, the references last resolved to it, and its size (its blobs, as the
        registry sent them: what a pull would fetch), sorted by digest."""
        refs: dict[str, list[str]] = {}
        for ref, digest in self._refs().items():
            refs.setdefault(digest, []).append(ref)
        return [{"digest": r["digest"], "references": sorted(refs.get(r["digest"], [])),
                 "bytes": int(r.get("blob_bytes", 0))}
                for r in sorted(self._records(), key=lambda r: r["digest"])]

    def _changed(self) -> None:
        """Tell on_change what the store holds, if that is not what it was last told."""
        if self.on_change is None:
            return
        now = self.summary()
        if now != self._told:
            self._told = now
            self.on_change(now)

    # -- pulling -----------------------------------------------------------------------------------

    async def _get(self, ref: imageref.Reference, pull: str, ids: IdMap | None, setuid: bool) -> Image:
        digest = ref.digest or (self._refs().get(str(ref)) if pull != "always" else None)
        record = self._record(digest) if digest else None
        if record is None and pull == "never":
            raise PullError(f"{ref} is not on this node and container.pull is never")
        if record is None:
            record = await self._fetched(ref)
        with self.pinned(record["digest"]):
            found = await asyncio.to_thread(self._unpacked, record, ids, setuid)
            self._touch(record, str(ref))
            await self._collect()                    # a new image may push the store over its cap
        self._changed()
        return found

    async def released(self) -> None:
        """An image's overlay was unmounted (its instance ended): one that no other instance uses
        may now be collected, if the store is over its cap, without waiting for the next pull
        (as kubelet's image GC runs on its own). Never raises: the caller is cleaning up."""
        try:
            await self._collect()
        except Exception as e:          # a collection that fails now is tried again at the next
            log.warning("image cache collection failed: %s", e)
        self._changed()

    async def _collect(self) -> list[str]:
        async with self._collecting:
            return await asyncio.to_thread(self.collect, frozenset(self._pulling))

    async def _fetched(self, ref: imageref.Reference) -> dict:
        name = str(ref)
        running = self._fetching.get(name)
        if running is None:
            running = self._fetching[name] = asyncio.ensure_future(self._pull(ref))
            running.add_done_callback(lambda _: self._fetching.pop(name, None))
        return await asyncio.shield(running)

    async def _pull(self, ref: imageref.Reference) -> dict:
        cert_root = self.tmp / "certs"
        args = self.registry.skopeo_args(ref, cert_root, prefix="")
        top, digest, raw = await pull_mod.resolve(ref, args, self.stall)
        known = self._record(top)
        if known is not None:                      # a tag resolved to an image already here
            return known
        manifest = json.loads(raw)
        descs = [manifest.get("config", {}), *manifest.get("layers", [])]
        for d in manifest.get("layers", []):
            if d.get("mediaType") not in LAYER_TYPES:
                raise PullError(f"layer {d.get('digest')} has media type {d.get('mediaType')}, which this agent "
                                "cannot unpack")
        sizes = {str(d["digest"]): int(d.get("size", 0)) for d in descs}
        self._pulling.update([*sizes, digest])
        try:
            return await self._fetch(ref, manifest, sizes, digest, top, raw, cert_root)
        finally:
            self._pulling.subtract([*sizes, digest])
            self._pulling += Counter()               # drop the zeros

    async def _fetch(self, ref: imageref.Reference, manifest: dict, sizes: dict[str, int], digest: str,
                     top: str, raw: bytes, cert_root: Path) -> dict:
        """The blobs in `sizes` copied (those not here yet) and verified; the image's record."""
        if not all(self._blob(d).exists() for d in sizes):
            layout = Path(tempfile.mkdtemp(prefix="pull-", dir=self.tmp))
            try:
                await pull_mod.copy(ref, digest, self.registry.skopeo_args(ref, cert_root), layout, self.blobs,
                                    sizes, lambda done, total: self._tell(str(ref), done, total), self.stall)
            finally:
                shutil.rmtree(layout, ignore_errors=True)
        await asyncio.to_thread(self._verify, sizes)
        config = json.loads(self._blob(str(manifest["config"]["digest"])).read_bytes())
        record = {"digest": top, "manifest": digest, "config": config.get("config") or {},
                  "config_digest": str(manifest["config"]["digest"]),
                  "layers": [str(d["digest"]) for d in manifest.get("layers", [])],
                  "blob_bytes": sum(sizes.values()) + len(raw), "layer_bytes": {}, "used_at": time.time()}
        self._write_record(record)
        return record

    def _tell(self, ref: str, done: int, total: int) -> None:
        """Progress to every start waiting for `ref`, whichever id range it unpacks for."""
        message = f"pulling {done // MiB}/{max(1, -(-total // MiB))} MiB"
        for key, listeners in list(self._listeners.items()):
            if key[0] == ref:
                for listener in listeners:
                    listener(message)

    def _verify(self, sizes: dict[str, int]) -> None:
        """Every blob's sha256 is its digest (skopeo checks too; a blob changed on disk since is
        caught here): a mismatching one is removed, so the next pull fetches it again."""
        for digest in sizes:
            path = self._blob(digest)
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            if "sha256:" + h.hexdigest() != digest:
                path.unlink(missing_ok=True)
                raise PullError(f"digest mismatch: blob {digest} has sha256:{h.hexdigest()}")

    def _unpacked(self, record: dict, ids: IdMap | None, setuid: bool) -> Image:
        """The record's layers unpacked for `ids` (each once per id range, off the event loop)."""
        rng = _range(ids, setuid)
        base = self.root / "layers" / rng
        base.mkdir(parents=True, exist_ok=True)
        paths: list[Path] = []
        for digest, (plain, chained) in zip(record["layers"], _layer_dirs(record["layers"]), strict=True):
            target = base / plain if (base / plain).is_dir() else base / chained
            if not target.is_dir():
                tmp = Path(tempfile.mkdtemp(prefix="layer-", dir=self.tmp))
                try:
                    unpacked = layers_mod.unpack(self._blob(digest), tmp, ids, setuid=setuid,
                                                 below=paths[::-1])
                    size = unpacked.bytes
                    target = base / (chained if unpacked.from_below else plain)
                    tmp.chmod(0o755)
                    os.rename(tmp, target)
                except layers_mod.LayerError as e:
                    raise PullError(str(e)) from e
                except OSError as e:
                    if not target.is_dir():
                        raise PullError(f"cannot keep layer {digest}: {e}") from e
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
                added = {f"{rng}/{digest}": size}      # called at once: the loop's values, bound here
                self._update_record(record, lambda r, added=added: r.setdefault("layer_bytes", {}).update(added))
            paths.append(target)
        return Image(digest=record["digest"], layers=tuple(reversed(paths)), config=record["config"])

    # -- records -----------------------------------------------------------------------------------

    def _blob(self, digest: str) -> Path:
        algo, _, hexa = digest.partition(":")
        if algo != "sha256" or len(hexa) != 64 or not all(c in "0123456789abcdef" for c in hexa):
            raise PullError(f"unsupported digest {digest[:80]}")
        return self.blobs / "sha256" / hexa

    def _record(self, digest: str | None) -> dict | None:
        if not digest:
            return None
        try:
            return json.loads((self.root / "images" / f"{digest.split(':', 1)[1]}.json").read_text())
        except (OSError, ValueError):
            return None

    def _records(self) -> list[dict]:
        out = []
        for p in (self.root / "images").glob("*.json"):
            try:
                out.append(json.loads(p.read_text()))
            except (OSError, ValueError):
                continue
        return out

    def _write_record(self, record: dict) -> None:
        _atomic(self.root / "images" / f"{record['digest'].split(':', 1)[1]}.json", json.dumps(record))

    def _refs(self) -> dict[str, str]:
        try:
            return json.loads((self.root / "refs.json").read_text())
        except (OSError, ValueError):
            return {}

    def _update_record(self, record: dict, change: Callable[[dict], None]) -> None:
        """`change` applied to the record as stored now (unpacks for other id ranges, in other
        threads, may have added to it since `record` was read), written back."""
        with self._record_lock:
            current = self._record(record["digest"]) or record
            change(current)
            self._write_record(current)

    def _touch(self, record: dict, ref: str) -> None:
        now = time.time()
        self._update_record(record, lambda r: r.update(used_at=now))
        refs = self._refs()
        if refs.get(ref) != record["digest"]:
            refs[ref] = record["digest"]
            _atomic(self.root / "refs.json", json.dumps(refs))

    # -- garbage collection ------------------------------------------------------------------------

    def size(self) -> int:
        blobs: dict[str, int] = {}
        layer_bytes: dict[str, int] = {}
        for r in self._records():
            blobs[r["digest"]] = r.get("blob_bytes", 0)
            layer_bytes.update(r.get("layer_bytes", {}))
        return sum(blobs.values()) + sum(layer_bytes.values())

    def collect(self, pulling: frozenset[str] = frozenset()) -> list[str]:
        """Remove least recently used images not in use (mounted or being started) until the store
        is within its cap, then every blob and layer no remaining image names, but the blobs of
        pulls in progress (`pulling`, digests). Their digests."""
        mounted = _mounted_lowers()
        records = sorted(self._records(), key=lambda r: r.get("used_at", 0.0))
        removed = []
        for r in records:
            if self.size() <= self.cap_bytes:
                break
            names = {n for pair in _layer_dirs(r["layers"]) for n in pair}
            in_use = self._pinned[r["digest"]] > 0 or any(
                layer.name in names for layer in mounted if layer.parent.parent == self.root / "layers")
            if in_use:
                continue
            (self.root / "images" / f"{r['digest'].split(':', 1)[1]}.json").unlink(missing_ok=True)
            removed.append(r["digest"])
        if removed:
            self._sweep(mounted, pulling)
            refs = {k: v for k, v in self._refs().items() if v not in removed}
            _atomic(self.root / "refs.json", json.dumps(refs))
            log.info("image cache over %d bytes: removed %s", self.cap_bytes, ", ".join(removed))
        return removed

    def _sweep(self, mounted: set[Path], pulling: frozenset[str]) -> None:
        keep_blobs, keep_layers = {d.split(":", 1)[1] for d in pulling}, set()
        for r in self._records():
            keep_blobs.update(d.split(":", 1)[1] for d in [r["manifest"], r["config_digest"], *r["layers"]])
            keep_layers.update(n for pair in _layer_dirs(r["layers"]) for n in pair)
        for rng in (self.root / "layers").iterdir():
            for layer in rng.iterdir():
                if layer.name not in keep_layers and layer not in mounted:
                    shutil.rmtree(layer, ignore_errors=True)
        for blob in (self.blobs / "sha256").iterdir():
            if blob.name not in keep_blobs:
                blob.unlink(missing_ok=True)


def _layer_dirs(digests: list[str]) -> list[tuple[str, str]]:
    """Each layer's directory names (bottom first): its blob's hex alone, and with the chain of its
    stack (its digest and those under it: for a layer that copied files from them)."""
    out, chain = [], ""
    for digest in digests:
        chain = hashlib.sha256(f"{chain} {digest}".encode()).hexdigest()
        hexa = digest.split(":", 1)[1]
        out.append((hexa, f"{hexa}-{chain[:32]}"))
    return out


def _range(ids: IdMap | None, setuid: bool = False) -> str:
    if setuid:
        return "privileged"
    return "host" if ids is None else f"userns-{ids.uid}-{ids.gid}"


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")    # a name of each writer's own
    tmp.write_text(text)
    os.replace(tmp, path)


def _mounted_lowers() -> set[Path]:
    """Every lower layer of an overlay mounted on this host: in use, whatever the agent remembers."""
    out: set[Path] = set()
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                for opt in line.rsplit(" ", 1)[-1].strip().split(","):
                    if opt.startswith("lowerdir="):
                        out.update(Path(p) for p in opt[len("lowerdir="):].split(":"))
    except OSError:
        pass
    return out
