"""Fixtures for the agent's tests on real cgroups, namespaces and runc.

Every test gets its own node name, state dir and subnet (inside 10.213.0.0/16), so tests and other
agents on the machine never share a bridge, a cgroup or a namespace; whatever a test creates is
removed afterwards, also when it fails.
"""
from __future__ import annotations

import os
import random
import shutil
import uuid
from pathlib import Path

import pytest

from tests.conftest import searchable_dir

RUNC = shutil.which("runc") or "/usr/sbin/runc"


def needs_root() -> pytest.MarkDecorator:
    return pytest.mark.skipif(os.geteuid() != 0, reason="needs root (cgroups, namespaces, mounts)")


def needs_runc() -> pytest.MarkDecorator:
    return pytest.mark.skipif(not os.access(RUNC, os.X_OK), reason="runc is not installed")


@pytest.fixture
def node() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def subnet() -> str:
    # a random /24 in 10.213.0.0/16, avoiding the ones in use (another test or agent right now)
    used = Path("/proc/net/fib_trie").read_text() if os.path.exists("/proc/net/fib_trie") else ""
    for _ in range(100):
        n = random.randint(1, 254)
        if f"10.213.{n}." not in used:
            return f"10.213.{n}.0/24"
    pytest.skip("no free /24 in 10.213.0.0/16")


@pytest.fixture
def state_dir(request) -> Path:
    """Searchable by the containers' mapped root (see tests/conftest.py searchable_dir)."""
    d = searchable_dir(request, "agent") / "state"
    d.mkdir()
    return d
