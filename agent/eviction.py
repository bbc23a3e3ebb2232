"""Whether an instance is evicted for the disk it uses (issue 15): a pure decision, like
agent/restarts.py; the usage loop (agent/usage.py) measures, the InstanceManager kills.

`resources.disk` is what the scheduler counted when it placed the instance. A container's writable
layer and its logs (agent/drivers/diskusage.py) going over it is what kubelet's ephemeral-storage
limit evicts a pod for. 0 (unset) is unlimited; an instance whose driver does not measure its disk
(VMs: the guest's disk is its own) is never evicted for it.
"""
from __future__ import annotations

from packyard.quantity import format_bytes


def over_disk(limit: int, used: int | None) -> str:
    """The eviction's one-line reason, or "" if the instance may go on."""
    if limit <= 0 or used is None or used <= limit:
        return ""
    return (f"evicted: writable layer and logs use {format_bytes(used)}, "
            f"over its resources.disk of {format_bytes(limit)}")
