"""What a job may ask for that reaches outside its container: refused unless the operator allowed
it (`--allow-privileged` on the scheduler, checked again by the agent). A module of its own, light
enough for the agent (packyard.spec loads pydantic and yaml, 11 MiB of the agent's ~45)."""

# the container block's fields that ask for host access; left out of a spec's JSON when false
HOST_ACCESS = ("privileged", "host_network")
