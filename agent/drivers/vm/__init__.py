"""The VM driver (libvirt + QEMU); see driver.py."""
from agent.drivers.vm.driver import VMDriver

__all__ = ["VMDriver"]
