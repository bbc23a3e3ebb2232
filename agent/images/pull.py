"""Resolving a reference and copying an image's blobs, with skopeo (Debian's `skopeo`, a maintained
client of the distribution protocol: tokens, redirects, retries, TLS).

resolve(): `skopeo inspect --raw` fetches the manifest the tag points to now; its sha256 is the
digest the instance will run (a multi-platform index is narrowed to this host's platform). copy():
`skopeo copy` of exactly that digest into a per-pull OCI layout whose blobs go to the host's shared
blob directory (`--dest-shared-blob-dir`: a blob already there is not fetched again). skopeo writes
each blob to a temporary file and renames it once complete, so bytes in flight are the temporary
files' sizes: what the progress ("pulling 12/48 MiB") and the stall deadline watch.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import platform
import re
from collections.abc import Callable
from pathlib import Path

from packyard.imageref import Reference
from packyard.pdeathsig import dies_with_parent

SKOPEO = "skopeo"
# skopeo dies with the agent (killed by the kernel when its parent does): a pull is never left
# running, writing into a store a restarted agent has emptied of partial pulls
DIES_WITH_PARENT = dies_with_parent("KILL")
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")
ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}
MiB = 1 << 20


class PullError(Exception):
    """A pull failed; the message is the registry's (or skopeo's) reason, one line."""


# skopeo's wrapper around any failure to read the source, though the name itself parsed (the
# instance's reason already names the image)
_WRAPPER = re.compile(r'^Error parsing image name "[^"]*": ')


def reason(stderr: str) -> str:
    """skopeo's last `msg="..."` (its fatal error), else its last line; without skopeo's wrapper,
    and a registry's code repeated as its message ("manifest unknown: manifest unknown") said once."""
    msgs = re.findall(r'msg="((?:[^"\\]|\\.)*)"', stderr)
    text = msgs[-1].replace('\\"', '"') if msgs else (stderr.strip().splitlines() or ["skopeo failed"])[-1]
    text = _WRAPPER.sub("", " ".join(text.split()))
    head, sep, last = text.rpartition(": ")
    if sep and head.endswith(": " + last):
        text = head
    return text[:500]


async def _run(args: list[str], timeout: float) -> bytes:
    proc = await asyncio.create_subprocess_exec(*DIES_WITH_PARENT, SKOPEO, *args, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise PullError(f"the registry did not answer within {timeout:g}s") from None
    except asyncio.CancelledError:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise PullError(reason(err.decode(errors="replace")))
    return out


async def resolve(ref: Reference, args: list[str], timeout: float) -> tuple[str, str, bytes]:
    """(the digest the reference stands for, the digest of this platform's manifest, that manifest)."""
    # a digest alone when there is one: skopeo refuses a tag and a digest together (the tag is a note)
    raw = await _run(["inspect", "--raw", *args, f"docker://{ref.pinned(ref.digest) if ref.digest else ref}"],
                     timeout)
    top = "sha256:" + hashlib.sha256(raw).hexdigest()
    if ref.digest and ref.digest != top:
        raise PullError(f"digest mismatch: the registry's manifest is {top}, not {ref.digest}")
    manifest = _json(raw)
    if manifest.get("mediaType") in INDEX_TYPES or "manifests" in manifest:
        chosen = _platform(manifest)
        raw = await _run(["inspect", "--raw", *args, f"docker://{ref.pinned(chosen)}"], timeout)
        if "sha256:" + hashlib.sha256(raw).hexdigest() != chosen:
            raise PullError(f"digest mismatch in the manifest of {ref.pinned(chosen)}")
        return top, chosen, raw
    return top, top, raw


def _json(raw: bytes) -> dict:
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise PullError(f"the registry sent a manifest that is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise PullError("the registry sent a manifest that is not a JSON object")
    return data


def _platform(index: dict) -> str:
    arch = ARCH.get(platform.machine(), platform.machine())
    for m in index.get("manifests", []):
        p = m.get("platform", {})
        if p.get("os") == "linux" and p.get("architecture") == arch:
            return str(m["digest"])
    raise PullError(f"the image has no linux/{arch} manifest")


async def copy(ref: Reference, digest: str, args: list[str], layout: Path, blobs: Path,
               sizes: dict[str, int], progress: Callable[[int, int], None], stall: float) -> None:
    """Copy `digest` of `ref` into `layout` (blobs into `blobs`); `sizes`: its blobs' sizes by
    digest; `progress(done, total)` about twice a second; PullError if no byte arrived for `stall`."""
    total = sum(sizes.values())
    layout.mkdir(parents=True, exist_ok=True)
    proc = await asyncio.create_subprocess_exec(
        *DIES_WITH_PARENT, SKOPEO, "copy", "--quiet", *args, f"--dest-shared-blob-dir={blobs}",
        f"docker://{ref.pinned(digest)}", f"oci:{layout}:image",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    errors = asyncio.ensure_future(proc.stderr.read())
    loop = asyncio.get_running_loop()
    last, last_at = -1, loop.time()
    try:
        while True:
            try:
                await asyncio.wait_for(asyncio.shield(proc.wait()), 0.5)
                break
            except TimeoutError:
                pass
            done = _in_flight(layout) + sum(n for d, n in sizes.items()
                                             if (blobs / d.replace(":", "/", 1)).exists())
            if done != last:
                last, last_at = done, loop.time()
                progress(done, total)
            elif loop.time() - last_at > stall:
                raise PullError(f"the registry stalled: no data for {stall:g}s "
                                f"({done // MiB}/{max(1, total // MiB)} MiB pulled)")
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    err = (await errors).decode(errors="replace")
    if proc.returncode != 0:
        raise PullError(reason(err))


def _in_flight(layout: Path) -> int:
    """Bytes in skopeo's temporary blob files: grows while any data arrives."""
    total = 0
    try:
        with os.scandir(layout) as it:
            for e in it:
                if e.name.startswith("oci-put-blob"):
                    total += e.stat().st_size
    except OSError:
        pass
    return total
