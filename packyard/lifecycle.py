"""What keeps a group's instances up (issue 13): the job's `type`, and each group's `restart`,
`reschedule` and `check` blocks as the spec writes them, with the defaults a block left out (or a
field left out of it) takes — Nomad's, which differ for services and batch jobs:

    restart     service: attempts 2, interval 30m, delay 15s, mode fail
                batch:   attempts 3, interval 24h, delay 15s, mode fail
                (system: as service)
    reschedule  service: unlimited, delay 30s, growing to max_delay 1h
                batch:   attempts 1 per interval 24h, delay 5s, max_delay 1h
                system:  never (a system instance belongs to its node)
    check       none unless given; interval 10s, timeout 2s, failures 3, grace 10s

`restart` is the agent's (in place, without the scheduler); `reschedule` the scheduler's (a new
instance elsewhere once restarts are exhausted). Delays double with each attempt. A field left out
stays out of the stored spec, so that filling a default in later does not change the spec.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    model_serializer,
)

from packyard.durations import DurationError, format_duration, parse_duration
from packyard.policies import CheckPolicy, ReschedulePolicy, RestartPolicy

JOB_TYPES = ("service", "batch", "system")
CHECK_TYPES = ("exec", "tcp", "http")
MAX_ATTEMPTS = 1000


def _duration(value: Any) -> float:
    try:
        return parse_duration(value)
    except DurationError as e:
        raise ValueError(str(e)) from None


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError("must be more than 0")
    return value


Duration = Annotated[float, BeforeValidator(_duration), PlainSerializer(format_duration, return_type=str)]
PositiveDuration = Annotated[float, BeforeValidator(lambda v: _positive(_duration(v))),
                             PlainSerializer(format_duration, return_type=str)]
Attempts = Annotated[int, Field(ge=0, le=MAX_ATTEMPTS)]


class Block(BaseModel):
    """A spec block of policy fields (here and packyard/update.py): unknown fields refused, and
    serialised as written."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_serializer(mode="wrap")
    def _as_written(self, handler) -> dict[str, Any]:
        # fields left out stay out: the defaults are this version's, not the stored spec's
        return {k: v for k, v in handler(self).items() if k in self.model_fields_set}


class Restart(Block):
    attempts: Attempts = 0
    interval: PositiveDuration = 0.0
    delay: Duration = 0.0
    mode: Literal["fail", "delay"] = "fail"


class Reschedule(Block):
    attempts: Attempts = 0
    interval: PositiveDuration = 0.0
    delay: Duration = 0.0
    max_delay: Duration = 0.0
    unlimited: bool = False


class Check(Block):
    type: Literal["exec", "tcp", "http"]
    command: Annotated[list[Annotated[str, Field(max_length=64 << 10)]], Field(min_length=1, max_length=4096)] | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    path: Annotated[str, Field(max_length=4096)] | None = None
    interval: PositiveDuration = 0.0
    timeout: PositiveDuration = 0.0
    failures: int = Field(default=3, ge=1, le=MAX_ATTEMPTS)
    grace: Duration = 0.0


def check_problems(check: Check) -> list[tuple[str, str]]:
    """(field, reason) for each field that does not fit the check's type (the spec names them
    by their path, so these are not a model validator, which could only name the block)."""
    out = []
    if check.type == "exec":
        if not check.command:
            out.append(("command", "check type 'exec' needs a command"))
        for name in ("port", "path"):
            if getattr(check, name) is not None:
                out.append((name, "check type 'exec' takes a command, not a port or path"))
    else:
        if check.port is None:
            out.append(("port", f"check type '{check.type}' needs a port (1..65535)"))
        if check.command is not None:
            out.append(("command", f"check type '{check.type}' takes a port, not a command"))
        if check.type == "http" and not check.path:
            out.append(("path", "check type 'http' needs a path (such as /healthz)"))
        elif check.type == "tcp" and check.path is not None:
            out.append(("path", "check type 'tcp' takes no path"))
        elif check.path is not None and not check.path.startswith("/"):
            out.append(("path", "must start with '/'"))
        elif check.path is not None and any(c in check.path for c in " \r\n\t\x00"):
            out.append(("path", "must not contain spaces or control characters"))
    policy = check_policy(check)
    if policy.timeout > policy.interval:
        out.append(("timeout", f"{format_duration(policy.timeout)} is longer than the check's interval "
                               f"({format_duration(policy.interval)})"))
    return out


RESTART_DEFAULTS = {"service": RestartPolicy(2, 1800.0, 15.0), "batch": RestartPolicy(3, 86400.0, 15.0),
                    "system": RestartPolicy(2, 1800.0, 15.0)}
RESCHEDULE_DEFAULTS = {"service": ReschedulePolicy(0, 3600.0, 30.0, 3600.0, True),
                       "batch": ReschedulePolicy(1, 86400.0, 5.0, 3600.0, False),
                       "system": ReschedulePolicy(0, 3600.0, 0.0, 0.0, False)}
CHECK_DEFAULTS = {"interval": 10.0, "timeout": 2.0, "failures": 3, "grace": 10.0}


def filled(default: Any, block: Block | None) -> dict[str, Any]:
    """The default policy's fields, overridden by those the block gives."""
    given = {k: getattr(block, k) for k in block.model_fields_set} if block is not None else {}
    return {**vars(default), **given}


def restart_policy(job_type: str, block: Restart | None) -> RestartPolicy:
    return RestartPolicy(**filled(RESTART_DEFAULTS[job_type], block))


def reschedule_policy(job_type: str, block: Reschedule | None) -> ReschedulePolicy:
    return ReschedulePolicy(**filled(RESCHEDULE_DEFAULTS[job_type], block))


def check_policy(block: Check | None) -> CheckPolicy | None:
    if block is None:
        return None
    given = {k: getattr(block, k) for k in block.model_fields_set}
    if "command" in given:
        given["command"] = tuple(given["command"])
    return CheckPolicy(**{**CHECK_DEFAULTS, **given})
