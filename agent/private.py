"""Files only the agent (root) may read. A job spec's env (its secrets, often) is in every
container's config.json and in the agent's saved handles, and a program may print it to its log:
none of them may be world-readable, whatever the umask (issue 15, point 11).
"""
from __future__ import annotations

import os
from pathlib import Path

MODE = 0o600


def opener(path: str, flags: int) -> int:
    """For open(..., opener=opener): a new file is created 0600, an older one made 0600."""
    fd = os.open(path, flags, MODE)
    os.fchmod(fd, MODE)
    return fd


def write_text(path: Path, text: str) -> None:
    """Write the whole file, 0600 from its first byte (write_text would create it 0644 first)."""
    with open(path, "w", opener=opener) as f:
        f.write(text)
