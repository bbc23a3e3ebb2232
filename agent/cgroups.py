"""Moved to agent/drivers/container/cgroups.py: only the container driver uses cgroups. This name
stays for the two tests outside tests/agent that still import it from here (tests/integration/
test_cluster.py, tests/deploy/test_observability.py); remove it once they import the new one."""
from agent.drivers.container.cgroups import detect, instance_path

__all__ = ["detect", "instance_path"]
