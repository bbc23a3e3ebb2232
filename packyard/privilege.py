"""What a job may ask for that reaches outside its container: refused unless the operator allowed
it (`--allow-privileged` on the scheduler, checked again by the agent). A module of its own, light
enough for the agent (packyard.spec loads pydantic and yaml, 11 MiB of the agent's ~45).

Also the `container.user`, `container.seccomp` and `container.userns` values both sides accept: the
spec validates them for ctl and the scheduler, the agent again (it trusts no caller)."""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# the container block's fields that ask for host access, and the value that asks; a field is left
# out of a spec's JSON when it has its default (DEFAULTS), so specs stored before it existed keep
# their group hash
HOST_ACCESS: dict[str, Any] = {"privileged": True, "host_network": True, "seccomp": "unconfined",
                               "userns": "host"}
DEFAULTS: dict[str, Any] = {"privileged": False, "host_network": False, "seccomp": "default",
                            "userns": "default", "user": None}
SECCOMP = ("default", "unconfined")   # default: the node's profile (Docker's); unconfined: none
USERNS = ("default", "host")          # default: the node's remapped range; host: the host's ids
MAX_ID = 4294967294                   # (uid_t)-1 means "no change" to the kernel
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?\Z")    # useradd's names (and a machine's $)


def host_access(block: Mapping[str, Any]) -> list[str]:
    """The HOST_ACCESS fields a container block asks for."""
    return [k for k, v in HOST_ACCESS.items() if block.get(k) == v]


def implied_host_access(asked: list[str]) -> list[str]:
    """What asking for `asked` also means. Privileged mode is every capability, no seccomp filter
    and the host's ids (Docker: --privileged turns seccomp off and is refused with userns-remap
    unless --userns=host); the host's network is the host's ids too (Docker refuses --net=host
    under userns-remap: a remapped root binds no port below 1024 there). All of it needs the same
    --allow-privileged, so here they are implied instead of refused."""
    out = list(asked)
    if "privileged" in asked:
        out += ["seccomp", "userns"]
    if "host_network" in asked:
        out.append("userns")
    return list(dict.fromkeys(out))


def choice_problem(field: str, value: Any) -> str:
    """Why `value` is not a valid `container.<field>` (seccomp, userns), or ""."""
    allowed = {"seccomp": SECCOMP, "userns": USERNS}[field]
    if value is None or value in allowed:
        return ""
    return f"'{str(value)[:40]}' is not {' or '.join(allowed)}"


def parse_user(value: Any) -> tuple[int | str, int | str | None]:
    """`container.user` "UID[:GID]" (numbers, or names the image's /etc/passwd and /etc/group
    resolve) -> (user, group or None); ValueError saying why not."""
    if not isinstance(value, str):
        raise ValueError("must be a string \"UID[:GID]\" (e.g. \"1000:1000\")")
    user, sep, group = value.partition(":")
    if not user or (sep and not group):
        raise ValueError(f"'{value[:40]}' is not UID[:GID] (e.g. \"1000\", \"1000:1000\", \"nobody:nogroup\")")
    parsed_user = _id(user, value)
    return parsed_user, (_id(group, value) if sep else None)


def _id(part: str, whole: str) -> int | str:
    if part.isascii() and part.isdigit():
        n = int(part)
        if n > MAX_ID:
            raise ValueError(f"{n} is more than the largest id ({MAX_ID})")
        return n
    if not NAME.match(part):
        raise ValueError(f"'{whole[:40]}' is not UID[:GID]: '{part[:40]}' is neither a number nor a user "
                         "or group name")
    return part
