"""Hard links across layers: a layer whose tar hard-links a file of a layer below it (issue 16's gap).
The target is found in the merged view of the layers below and copied into the layer; links that
leave the image's root or name nothing are refused. Random stacks are checked against the kernel's
own overlayfs: what a container sees through the mounted layers is what a model of the OCI changesets
says it should."""
from __future__ import annotations

import io
import os
import random
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from agent.drivers.container.runc import IdMap
from agent.images import layers, stack

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="owners, whiteout devices and overlay mounts: root")


def _entry(name, kind="file", data=b"", mode=0o644, uid=0, linkname=""):
    info = tarfile.TarInfo(name)
    info.mode, info.uid, info.gid, info.mtime = mode, uid, uid, 1000
    if kind == "dir":
        info.type, info.mode = tarfile.DIRTYPE, 0o755
    elif kind == "hard":
        info.type, info.linkname = tarfile.LNKTYPE, linkname
    elif kind == "sym":
        info.type, info.linkname = tarfile.SYMTYPE, linkname
    else:
        info.size = len(data)
    return info, (io.BytesIO(data) if kind == "file" else None)


def _stack(tmp_path: Path, tars: list[list[tuple]], ids: IdMap | None = None, setuid: bool = False) -> list[Path]:
    """Each tar (bottom first) unpacked onto the ones before it; the layer dirs, topmost first."""
    done: list[Path] = []
    for i, entries in enumerate(tars):
        blob = tmp_path / f"layer{i}.tar"
        with tarfile.open(blob, "w") as tf:
            for e in entries:
                tf.addfile(*_entry(*e[:2], **(e[2] if len(e) > 2 else {})))
        dest = tmp_path / f"l{i}"
        dest.mkdir()
        layers.unpack(blob, dest, ids, setuid=setuid, below=done)
        done.insert(0, dest)
    return done


def test_a_link_to_a_file_below_is_a_copy_with_its_owner_and_mode(tmp_path):
    rng = random.Random(7)
    files = {f"d{rng.randrange(3)}/f{i}": (rng.randbytes(rng.randrange(1, 5000)), rng.choice([0o644, 0o755, 0o600]),
                                           rng.randrange(0, 2000)) for i in range(6)}
    base = [(n.split("/")[0], "dir") for n in files] + [(n, "file", {"data": d, "mode": m, "uid": u})
                                                          for n, (d, m, u) in files.items()]
    top = [("new", "dir")] + [(f"new/{n.replace('/', '_')}", "hard", {"linkname": n}) for n in files]
    upper, lower = _stack(tmp_path, [base, top])
    for n, (data, mode, uid) in files.items():
        got = upper / "new" / n.replace("/", "_")
        st = os.lstat(got)
        assert got.read_bytes() == data and stat.S_IMODE(st.st_mode) == mode
        if os.geteuid() == 0:
            assert (st.st_uid, st.st_gid) == (uid, uid)
        assert st.st_ino != os.lstat(lower / n).st_ino            # never a link across layer dirs
        assert stack.find([upper, lower], f"new/{n.replace('/', '_')}") == got


def test_a_link_to_a_file_of_its_own_layer_is_a_link(tmp_path):
    (layer,) = _stack(tmp_path, [[("a", "file", {"data": b"x"}), ("b", "hard", {"linkname": "a"}),
                                  ("c", "hard", {"linkname": "./b"})]])
    assert len({os.lstat(layer / n).st_ino for n in "abc"}) == 1


def test_links_to_one_file_below_share_one_copy(tmp_path):
    upper, _ = _stack(tmp_path, [[("bin", "dir"), ("bin/tool", "file", {"data": b"t" * 100})],
                                 [("x", "hard", {"linkname": "bin/tool"}), ("y", "hard", {"linkname": "./bin/../bin/tool"})]])
    assert os.lstat(upper / "x").st_ino == os.lstat(upper / "y").st_ino and (upper / "y").read_bytes() == b"t" * 100


def test_the_target_is_found_through_symlinks_as_the_container_sees_them(tmp_path):
    """/lib -> usr/lib in the base (a merged-/usr image) and an absolute symlink:
    followed inside the image's root, never on the host."""
    upper, _, _ = _stack(tmp_path, [
        [("usr", "dir"), ("usr/lib", "dir"), ("usr/lib/libc.so", "file", {"data": b"libc"}),
         ("lib", "sym", {"linkname": "usr/lib"}), ("abs", "sym", {"linkname": "/usr/lib"}),
         ("up", "sym", {"linkname": "../../../../usr"})],
        [("etc", "dir")],
        [("a", "hard", {"linkname": "lib/libc.so"}), ("b", "hard", {"linkname": "abs/libc.so"}),
         ("c", "hard", {"linkname": "up/lib/libc.so"})]])
    assert [(upper / n).read_bytes() for n in "abc"] == [b"libc"] * 3


@pytest.mark.parametrize("where", ["below", "same-layer"])
def test_a_link_to_a_symlink_is_a_symlink_never_the_host_file_it_names(tmp_path, where):
    """A layer's `s -> /HOST/FILE` and a hard link `h -> s` (in that layer or one above): `h` is the
    symlink itself, as Linux's link(2) and containerd's hardlinkRootPath make it, never a link to
    the host's file (a copy from below must not follow it either)."""
    secret = tmp_path / "host-secret"
    secret.write_text("the host's")
    sym = [("etc", "dir"), ("etc/s", "sym", {"linkname": str(secret)})]
    link = [("h", "hard", {"linkname": "etc/s"})]
    upper = _stack(tmp_path, [sym, link] if where == "below" else [sym + link])[0]
    assert os.readlink(upper / "h") == str(secret) and os.lstat(upper / "h").st_ino != secret.stat().st_ino
    assert secret.stat().st_nlink == 1


@pytest.mark.parametrize("tars, words", [
    ([[("a", "file")], [("b", "hard", {"linkname": "../../../etc/hostname"})]], "leaves the image's root"),
    ([[("a", "file")], [("b", "hard", {"linkname": "/../etc/hostname"})]], "leaves the image's root"),
    ([[("a", "file")], [("b", "hard", {"linkname": "a/../../a"})]], "leaves the image's root"),
    ([[("a", "file")], [("b", "hard", {"linkname": "/etc/hostname"})]], "leaves the image's root"),
    ([[("a", "file")], [("b", "hard", {"linkname": "/a"})]], "leaves the image's root"),
    ([[("a", "file")], [("b", "hard", {"linkname": "etc/hostname"})]], "names nothing"),
    ([[("a", "file")], [("b", "hard", {"linkname": "nothing"})]], "names nothing"),
    ([[("d", "dir"), ("d/a", "file")], [("d/.wh.a", "file")], [("b", "hard", {"linkname": "d/a"})]],
     "names nothing"),
    ([[("d", "dir"), ("d/a", "file")], [("d", "dir"), ("d/.wh..wh..opq", "file")],
      [("b", "hard", {"linkname": "d/a"})]], "names nothing"),
    ([[("d", "dir"), ("d/a", "file")], [("d", "file")], [("b", "hard", {"linkname": "d/a"})]], "names nothing"),
    ([[("a", "file"), ("loop", "sym", {"linkname": "loop/x"})], [("b", "hard", {"linkname": "loop/a"})]],
     "names nothing"),
    ([[("d", "dir")], [("b", "hard", {"linkname": "d"})]], "names a directory"),
], ids=["dotdot", "absolute-dotdot", "inner-dotdot", "absolute", "absolute-in-image", "host-path", "missing",
        "whited-out", "opaque", "file-over-dir", "symlink-loop", "directory"])
def test_a_link_out_of_the_image_or_to_nothing_is_refused(tmp_path, tars, words):
    if os.geteuid() != 0 and any(".wh." in e[0] for t in tars for e in t):
        pytest.skip("whiteouts are device nodes and trusted xattrs: root")
    hostname = os.stat("/etc/hostname") if os.path.exists("/etc/hostname") else None
    with pytest.raises(layers.LayerError, match=f"cannot unpack layer layer{len(tars) - 1}.tar: hard link 'b' .*{words}"):
        _stack(tmp_path, tars)
    assert not (tmp_path / f"l{len(tars) - 1}" / "b").exists()
    if hostname is not None:          # not linked, nor its times or mode changed
        after = os.stat("/etc/hostname")
        assert (after.st_nlink, after.st_mtime_ns, after.st_mode) == (hostname.st_nlink, hostname.st_mtime_ns,
                                                                      hostname.st_mode)


@root_only
def test_a_link_to_a_file_its_own_layer_deletes_keeps_the_content(tmp_path):
    """The layer's whiteout deletes the file below; its hard link, made from what was below, stays."""
    upper, _ = _stack(tmp_path, [[("d", "dir"), ("d/a", "file", {"data": b"kept"})],
                                 [("d", "dir"), ("d/.wh.a", "file"), ("d/b", "hard", {"linkname": "d/a"})]])
    assert (upper / "d/b").read_bytes() == b"kept"
    a = os.lstat(upper / "d/a")
    assert stat.S_ISCHR(a.st_mode) and a.st_rdev == 0


@root_only
@pytest.mark.parametrize("setuid", [False, True], ids=["ordinary", "privileged"])
def test_a_copy_keeps_the_id_range_and_the_setuid_rule(tmp_path, setuid):
    ids = None if setuid else IdMap(300000, 300000, 65536)
    upper, lower = _stack(tmp_path, [[("bin", "dir"), ("bin/su", "file", {"data": b"x", "mode": 0o4755, "uid": 5})],
                                     [("su2", "hard", {"linkname": "bin/su"})]], ids=ids, setuid=setuid)
    st = os.lstat(upper / "su2")
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == ((5, 0o4755) if setuid else (300005, 0o755))


# -- random stacks against the kernel's overlayfs -------------------------------------------------

NAMES = ("a", "b", "c")
DIRS = ("d", "e")


def _random_stack(rng: random.Random, depth: int) -> tuple[list[list[tuple]], dict[str, bytes]]:
    """Layers of files, whiteouts and hard links (to files of the layer or below); the files the
    merged image holds, as the OCI changeset rules say (a model: a dict of path -> content)."""
    model: dict[str, bytes] = {}
    tars: list[list[tuple]] = []
    for n in range(depth):
        entries: list[tuple] = [(d, "dir") for d in DIRS]
        before = dict(model)
        added: dict[str, bytes] = {}
        touched: set[str] = set()                      # a changeset names a path once
        for _ in range(rng.randrange(1, 6)):
            path = f"{rng.choice(DIRS)}/{rng.choice(NAMES)}"
            if path in touched:
                continue
            touched.add(path)
            roll = rng.random()
            if roll < 0.3 and n:                                               # delete what is below
                entries.append((f"{path.split('/')[0]}/.wh.{path.split('/')[1]}", "file"))
                model.pop(path, None)
                continue
            # below, even if this layer deletes it; or earlier in this layer
            sources = {**before, **added}
            if roll < 0.7 and sources:                                         # hard link
                target = rng.choice(sorted(sources))
                if target == path:
                    continue
                entries.append((path, "hard", {"linkname": target}))
                added[path] = sources[target]
            else:
                data = f"{n}:{path}:{rng.random()}".encode()
                entries.append((path, "file", {"data": data}))
                added[path] = data
        model.update(added)
        tars.append(entries)
    return tars, model


@root_only
@pytest.mark.parametrize("seed", range(12))
def test_random_stacks_show_through_overlayfs_what_the_changesets_say(tmp_path, seed):
    rng = random.Random(seed)
    tars, model = _random_stack(rng, rng.randrange(2, 6))
    lowers = _stack(tmp_path, tars)
    merged = tmp_path / "merged"
    merged.mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", "ro,lowerdir=" + ":".join(map(str, lowers)),
                    str(merged)], check=True)
    try:
        seen = {f"{d}/{n}": (merged / d / n).read_bytes() for d in DIRS for n in NAMES
                if (merged / d / n).exists()}
    finally:
        subprocess.run(["umount", str(merged)], check=True)
    assert seen == model, tars
