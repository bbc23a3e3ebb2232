"""What counts as an instance's disk: real files on the host's file system."""
from __future__ import annotations

import os

from agent.drivers.diskusage import measure

MI = 1 << 20


def blocks(path) -> int:
    return os.lstat(path).st_blocks * 512


def test_allocated_blocks_of_a_tree_links_counted_once_symlinks_not_followed(tmp_path):
    upper = tmp_path / "upper"
    (upper / "a" / "b").mkdir(parents=True)
    (upper / "a" / "b" / "data").write_bytes(os.urandom(3 * MI))
    os.link(upper / "a" / "b" / "data", upper / "twice")          # the same blocks, once
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "huge").write_bytes(os.urandom(5 * MI))
    (upper / "link").symlink_to(outside)                           # never followed
    sparse = upper / "sparse"
    with open(sparse, "wb") as f:
        f.truncate(1 << 30)                                        # 1 GiB long, nothing allocated
    log = tmp_path / "i.log"
    log.write_bytes(b"x" * 100_000)
    used = measure([upper, log, tmp_path / "missing.log"])
    expected = sum(blocks(p) for p in (upper, upper / "a", upper / "a" / "b", upper / "a" / "b" / "data",
                                       upper / "link", sparse, log))
    assert used == expected
    assert 3 * MI <= used < 4 * MI


def test_nothing_there_is_zero(tmp_path):
    assert measure([tmp_path / "gone", tmp_path / "gone.log"]) == 0
