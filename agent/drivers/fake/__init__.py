"""A driver that runs nothing: instances "start" at once and "run" until stopped. It implements
the real Driver protocol, so the agent's code path is the same; used by fast unit tests and by
simulated hosts (issue 7)."""
from agent.drivers.fake.driver import FakeDriver

__all__ = ["FakeDriver"]
