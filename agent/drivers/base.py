"""The Driver protocol: what the agent needs from a way of running workloads.

One package per driver (agent/drivers/container, later agent/drivers/vm, agent/drivers/fake), each
behind this small protocol. Handles are plain JSON-able dicts persisted by the agent in its state
dir, so that after an agent restart `recover(handle)` can reattach to what is still running.
Drivers translate OS/libvirt/runc failures into DriverError at their boundary.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from packyard.policies import CheckPolicy, RestartPolicy


class DriverError(Exception):
    """A driver could not do what was asked; the message is shown to users as the reason."""


class RestartableError(DriverError):
    """A start failed for a reason that may pass (a pull: the registry away, a tag not pushed yet,
    wrong credentials fixed later): the agent restarts the instance as its restart policy says,
    as it would after an end, instead of letting the start fail at once."""


@dataclass(frozen=True)
class InstanceSpec:
    id: str
    job: str
    group: str
    kind: str                      # container | vm
    cpu_milli: int                 # enforced limit (request + overhead)
    memory_bytes: int              # enforced limit (request + overhead)
    config: dict[str, Any]         # the group's `container:` / `vm:` block
    pids_max: int = 4096
    request_cpu_milli: int = 0     # what the workload asked for (a VM's vCPUs); 0: same as cpu_milli
    request_memory_bytes: int = 0  # what the workload asked for (a VM's guest RAM); 0: same as memory_bytes
    gpus: tuple[int, ...] = ()     # GPU device indices on this node, chosen by the scheduler
    job_type: str = "service"      # service | batch | system: what an exit means (issue 13)
    restart: RestartPolicy | None = None   # restarts in place; None: never (InstanceManager)
    check: CheckPolicy | None = None       # the health check, if any
    disk_bytes: int = 0            # resources.disk: its writable layer and logs may use this much; 0: unlimited


@dataclass
class Handle:
    """What a driver needs to find an instance again. `data` must be JSON-serialisable."""
    id: str
    driver: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExitResult:
    exit_code: int | None          # None when unknown (e.g. it ended while the agent was down)
    oom_killed: bool = False
    reason: str = ""               # e.g. "OOMKilled", "exit status 3", "killed by signal 9"


@dataclass(frozen=True)
class Stats:
    cpu_seconds: float = 0.0
    memory_bytes: int = 0
    oom_kills: int = 0
    overhead_memory_bytes: int | None = None   # VMs: QEMU's resident memory beyond the guest RAM it backs
    guest_memory_bytes: int | None = None      # VMs: resident guest RAM (what the guest has touched)
    disk_bytes: int | None = None              # containers: writable layer + logs (diskusage.py); None: not measured


class Driver(Protocol):
    name: str

    async def fingerprint(self) -> dict[str, str]:
        """Node attributes this driver contributes, e.g. {"driver.container": "ok"}. A missing
        dependency is reported as an attribute value ("unavailable: runc not found"), never raised."""

    async def start(self, spec: InstanceSpec) -> Handle:
        """Create and start the instance; return once it is running (or raise DriverError)."""

    async def wait(self, handle: Handle) -> ExitResult:
        """Complete when the instance ends, with how it ended."""

    async def stop(self, handle: Handle, grace_seconds: float) -> None:
        """Ask it to end (SIGTERM / ACPI), force it after the grace period."""

    async def destroy(self, handle: Handle) -> None:
        """Remove everything the instance left: cgroups, namespaces, overlays, files. Idempotent."""

    async def recover(self, handle: Handle) -> bool:
        """Reattach after an agent restart; False if the instance is gone."""

    async def discard(self, spec: InstanceSpec) -> None:
        """Remove what a start of `spec` cut off by the agent's end left behind (no handle was kept
        for it: files, mounts, a created container or domain, its network), so that the start can be
        made again from nothing. Nothing to do if it left nothing. Idempotent."""

    async def stats(self, handle: Handle) -> Stats:
        """Measured usage, from the cgroup (containers) or libvirt + QEMU process (VMs)."""

    def log_path(self, handle: Handle) -> Path:
        """The file holding the instance's stdout/stderr or serial console now: its writer rotates
        it, the rotated files beside it (agent/logfiles.py reads them in order)."""

    def log_path_for(self, instance_id: str) -> Path:
        """Where the log of an instance this driver ran is, once its handle is gone."""

    def address(self, handle: Handle) -> str:
        """The instance's own IP address, or "" if it has none."""

    async def exec_in(self, handle: Handle, command: tuple[str, ...], timeout: float) -> tuple[int, str]:
        """Run `command` inside the running instance (an `exec` health check): (exit code, the
        end of its output). Gives up after `timeout` seconds (TimeoutError, the command killed);
        DriverError if the instance cannot be entered (a VM: no agent inside)."""

    async def shutdown(self) -> None:
        """Agent exit: stop following instances (they keep running for a restarted agent to
        recover) and remove what the driver no longer needs."""
