"""How much disk an instance uses on the host: its writable layer (a container's overlay upperdir)
and its log files, as kubelet counts a pod's ephemeral storage (issue 15).

A walk with os.scandir in the agent's own process, not a `du` per instance: a fork + exec of `du`
costs more than the walk of a layer of a few hundred files, and the usage loop measures every
instance every few seconds (bench/disk_usage.py compares the two). Allocated blocks are counted,
not sizes, so a sparse file counts what it really takes; a file hard-linked twice counts once.
Symbolic links are never followed (the layer is the instance's to fill with links to anywhere),
and the walk stays on the layer's file system.
"""
from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path


def measure(paths: Iterable[Path | str]) -> int:
    """Bytes allocated by `paths` (files or directory trees; missing ones count 0)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for top in paths:
        try:
            st = os.lstat(top)
        except OSError:
            continue
        total += _count(st, seen)
        if os.path.isdir(top) and not os.path.islink(top):
            total += _walk(str(top), st.st_dev, seen)
    return total


def _walk(top: str, dev: int, seen: set[tuple[int, int]]) -> int:
    total, stack = 0, [top]
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except OSError:            # removed meanwhile, or the instance made it unreadable: skip it
            continue
        with entries:
            for e in entries:
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                if st.st_dev != dev:
                    continue
                total += _count(st, seen)
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
    return total


def _count(st: os.stat_result, seen: set[tuple[int, int]]) -> int:
    if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
        key = (st.st_dev, st.st_ino)
        if key in seen:
            return 0
        seen.add(key)
    return st.st_blocks * 512
