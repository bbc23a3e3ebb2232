"""Where the InstanceManager keeps each instance's spec and driver handle between agent processes.

The manager saves a handle before it reports the instance running and forgets it once the instance
is cleaned up; after a restart `recover` reattaches to whatever is still saved. Three stores:
- FileHandleStore: the agent's, one JSON file per instance, `<state dir>/handles/<id>.json`, each
  replaced atomically (written aside, then renamed) so a crash never leaves half a handle;
- MemoryHandleStore: the same contract in a dict, for tests that restart a manager over it;
- NoHandleStore: keeps nothing, for simulated hosts, whose instances die with their process (and
  100,000 file writes would dominate a scale run).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from agent import private
from agent.drivers.base import Handle, InstanceSpec
from packyard.policies import CheckPolicy, RestartPolicy

log = logging.getLogger(__name__)


class HandleStore(Protocol):
    def save(self, spec: InstanceSpec, handle: Handle) -> None:
        """Keep (or replace) what is needed to find the instance again; durable on return."""

    def forget(self, instance_id: str) -> None:
        """Drop the instance's entry. Idempotent."""

    def saved(self) -> Iterator[tuple[InstanceSpec, Handle]]:
        """Every entry kept, in instance id order. An unreadable entry is logged and dropped."""


class FileHandleStore:
    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)

    def save(self, spec: InstanceSpec, handle: Handle) -> None:
        path = self.dir / f"{spec.id}.json"
        tmp = path.with_suffix(".tmp")
        private.write_text(tmp, json.dumps({"spec": dataclasses.asdict(spec), "handle": dataclasses.asdict(handle)}))
        os.replace(tmp, path)

    def forget(self, instance_id: str) -> None:
        (self.dir / f"{instance_id}.json").unlink(missing_ok=True)

    def saved(self) -> Iterator[tuple[InstanceSpec, Handle]]:
        for path in sorted(self.dir.glob("*.json")):
            try:
                data = json.loads(path.read_text())
                spec = _spec(data["spec"])
                handle = Handle(**data["handle"])
            except (ValueError, KeyError, TypeError) as e:
                log.warning("unreadable handle %s: %s", path, e)
                path.unlink()
                continue
            yield spec, handle


class MemoryHandleStore:
    """Copies on save and on read, as a file would: what a driver changes in a handle afterwards
    is not saved until it is saved again."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[InstanceSpec, Handle]] = {}

    def save(self, spec: InstanceSpec, handle: Handle) -> None:
        self.entries[spec.id] = copy.deepcopy((spec, handle))

    def forget(self, instance_id: str) -> None:
        self.entries.pop(instance_id, None)

    def saved(self) -> Iterator[tuple[InstanceSpec, Handle]]:
        for instance_id in sorted(self.entries):
            if instance_id in self.entries:          # forgotten while iterating (recover does)
                yield copy.deepcopy(self.entries[instance_id])


class NoHandleStore:
    def save(self, spec: InstanceSpec, handle: Handle) -> None:
        pass

    def forget(self, instance_id: str) -> None:
        pass

    def saved(self) -> Iterator[tuple[InstanceSpec, Handle]]:
        return iter(())


def _spec(data: dict) -> InstanceSpec:
    spec = InstanceSpec(**data)
    # JSON has no tuples (the GPU devices come back as a list) and no dataclasses (the policies)
    restart = RestartPolicy(**spec.restart) if isinstance(spec.restart, dict) else None
    check = None
    if isinstance(spec.check, dict):
        check = CheckPolicy(**{**spec.check, "command": tuple(spec.check.get("command") or ())})
    return dataclasses.replace(spec, gpus=tuple(spec.gpus), restart=restart, check=check)
