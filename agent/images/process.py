"""What a registry image's container runs: its config merged with the spec, as Docker does.

Entrypoint + Cmd, the spec's `command` replacing Cmd (not Entrypoint); the image's Env with the
spec's `env` winning; WorkingDir; User unless the spec sets `user`.
"""
from __future__ import annotations

from dataclasses import dataclass

from agent.drivers.base import DriverError


class ProcessError(DriverError):
    """The image and the spec together name nothing to run."""


@dataclass(frozen=True)
class Process:
    args: list[str]
    env: dict[str, str]
    cwd: str
    user: str | None


def merged(image: dict, spec: dict) -> Process:
    entrypoint = list(image.get("Entrypoint") or [])
    command = spec.get("command")
    args = entrypoint + list(command if command else image.get("Cmd") or [])
    if not args:
        raise ProcessError("container.command: the image has no Entrypoint or Cmd; give a command")
    env: dict[str, str] = {}
    for item in image.get("Env") or []:
        name, sep, value = str(item).partition("=")
        if sep:
            env[name] = value
    env.update(spec.get("env") or {})
    cwd = str(image.get("WorkingDir") or "/")
    if not cwd.startswith("/"):
        cwd = "/" + cwd
    user = spec.get("user") if spec.get("user") is not None else (image.get("User") or None)
    return Process(args=args, env=env, cwd=cwd, user=user)
