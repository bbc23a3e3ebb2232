"""The container driver (runc + the agent's own cgroups and network); see driver.py."""
from agent.drivers.container.driver import ContainerDriver, become_subreaper

__all__ = ["ContainerDriver", "become_subreaper"]
