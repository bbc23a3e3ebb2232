"""The job spec: what `ctl submit FILE` accepts, validated once, here, for ctl and scheduler alike.

Errors name the field by its path in the YAML (`groups[0].resources.memory`) and say why, so a user
can fix a spec without reading code. Unknown fields are errors: a typo must not be silently ignored.
"""
from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from packyard.quantity import DNS_LABEL, QuantityError, parse_bytes, parse_cpu_milli

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Limits that catch typos ("64Gi" meant "64Mi" x 1000 instances) before they become pending forever.
MAX_CPU_MILLI = 1024 * 1000
MAX_MEMORY = 16 << 40
MAX_DISK = 1 << 50
MAX_GPU_MILLI = 64 * 1000
MAX_COUNT = 1_000_000
OPTIONAL_WHEN_EMPTY = ("spread", "affinity")   # group fields added later: not in to_json when empty


class SpecError(ValueError):
    """A job spec that cannot be accepted. `errors` holds one `path: reason` line per problem."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("; ".join(errors))


def _cpu(value: Any) -> int:
    try:
        milli = parse_cpu_milli(value)
    except QuantityError as e:
        raise ValueError(str(e)) from None
    if milli > MAX_CPU_MILLI:
        raise ValueError(f"{milli / 1000:g} cores is more than any host has (max {MAX_CPU_MILLI // 1000})")
    return milli


def _bytes(limit: int):
    def parse(value: Any) -> int:
        try:
            n = parse_bytes(value)
        except QuantityError as e:
            raise ValueError(str(e)) from None
        if n > limit:
            raise ValueError(f"{value} is more than any host has (max {limit >> 30}Gi)")
        return n
    return parse


def _gpu(value: Any) -> int:
    # GPUs as a number: 1 = one whole GPU, 0.5 = half of one; kept in milli-GPUs.
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("expected a number of GPUs (1, 2, or 0.5 for a share of one)")
    try:
        milli = round(float(value) * 1000)
    except ValueError:
        raise ValueError(f"'{value}' is not a number of GPUs") from None
    if milli < 0:
        raise ValueError("must not be negative")
    if milli > 1000 and milli % 1000:
        raise ValueError("more than one GPU must be a whole number of GPUs")
    if milli > MAX_GPU_MILLI:
        raise ValueError(f"more than {MAX_GPU_MILLI // 1000} GPUs")
    return milli


# Parsed to exact integers; serialised back in a form that parses to the same integers, so a
# spec stored as JSON in etcd validates to the same JobSpec ("250m", bytes, GPUs as a number).
CpuMilli = Annotated[int, BeforeValidator(_cpu), PlainSerializer(lambda v: f"{v}m", return_type=str)]
MemoryBytes = Annotated[int, BeforeValidator(_bytes(MAX_MEMORY))]
DiskBytes = Annotated[int, BeforeValidator(_bytes(MAX_DISK))]
GpuMilli = Annotated[int, BeforeValidator(_gpu), PlainSerializer(lambda v: v / 1000, return_type=float)]


def _dns_label(v: str) -> str:
    if not DNS_LABEL.match(v):
        raise ValueError("must be a DNS label: lowercase letters, digits and '-', at most 63")
    return v


DnsLabel = Annotated[str, AfterValidator(_dns_label)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Resources(Strict):
    cpu: CpuMilli
    memory: MemoryBytes
    disk: DiskBytes = 0
    gpu: GpuMilli = 0

    @model_validator(mode="after")
    def _nonzero(self) -> Resources:
        if self.cpu == 0:
            raise ValueError("cpu must be more than 0")
        if self.memory < (1 << 20):
            raise ValueError("memory must be at least 1Mi")
        return self


class ContainerSpec(Strict):
    image: str | None = None
    command: list[str] = Field(default_factory=lambda: ["/bin/sleep", "infinity"], min_length=1)
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("image")
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError("must be an absolute path on the host (a rootfs directory or a .tar)")
        return v

    @field_validator("env")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not ENV_NAME.match(name):
                raise ValueError(f"'{name}' is not a valid environment variable name")
        return v


class VMSpec(Strict):
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str = "console=ttyS0"
    disk: str | None = None

    @model_validator(mode="after")
    def _boot_source(self) -> VMSpec:
        if bool(self.kernel) == bool(self.disk):
            raise ValueError("give either kernel (with optional initrd, cmdline) or disk")
        for field in ("kernel", "initrd", "disk"):
            path = getattr(self, field)
            if path is not None and not path.startswith("/"):
                raise ValueError(f"{field} must be an absolute path on the host")
        return self


class Constraint(Strict):
    attribute: str = Field(min_length=1)
    operator: Literal["=", "!=", "in", "not_in", "exists"] = "="
    value: str | list[str] | None = None

    @model_validator(mode="after")
    def _value_shape(self) -> Constraint:
        if self.operator == "exists":
            if self.value is not None:
                raise ValueError("operator 'exists' takes no value")
        elif self.operator in ("in", "not_in"):
            if not isinstance(self.value, list) or not self.value:
                raise ValueError(f"operator '{self.operator}' needs a non-empty list as value")
        elif not isinstance(self.value, str):
            raise ValueError(f"operator '{self.operator}' needs a string value")
        return self


class Affinity(Constraint):
    """A soft constraint: hosts that match (same operators as a constraint) score higher by
    `weight` (1..100), or lower when `weight` is negative (-100..-1). A scorer, never a filter."""
    weight: int = Field(ge=-100, le=100)

    @field_validator("weight")
    @classmethod
    def _nonzero(cls, v: int) -> int:
        if v == 0:
            raise ValueError("must not be 0 (an affinity of weight 0 does nothing)")
        return v


class Spread(Strict):
    """Spread the group's instances evenly over the values of a host property (`label.zone`):
    a scorer favouring the value that holds the fewest of the group's instances, running ones
    included. `weight` (1..100) trades it against the packing score (weight 100)."""
    attribute: str = Field(min_length=1)
    weight: int = Field(default=50, ge=1, le=100)


class Group(Strict):
    name: DnsLabel
    count: int = Field(default=1, ge=0, le=MAX_COUNT)
    kind: Literal["container", "vm"] = "container"
    resources: Resources
    container: ContainerSpec | None = None
    vm: VMSpec | None = None
    constraints: list[Constraint] = Field(default_factory=list)
    spread: list[Spread] = Field(default_factory=list)
    affinity: list[Affinity] = Field(default_factory=list)

    @field_validator("spread")
    @classmethod
    def _spread_once(cls, v: list[Spread]) -> list[Spread]:
        seen: set[str] = set()
        for s in v:
            if s.attribute in seen:
                raise ValueError(f"attribute '{s.attribute}' is spread over twice")
            seen.add(s.attribute)
        return v


    @model_validator(mode="after")
    def _driver_block(self) -> Group:
        if self.kind == "vm":
            if self.vm is None:
                raise ValueError("kind 'vm' needs a 'vm' block (kernel or disk)")
            if self.container is not None:
                raise ValueError("kind 'vm' takes a 'vm' block, not 'container'")
        elif self.vm is not None:
            raise ValueError("kind 'container' takes a 'container' block, not 'vm'")
        return self

    def driver_config(self) -> dict[str, Any]:
        """The block the agent's driver reads (`container:` or `vm:`), defaults filled in."""
        block = self.vm if self.kind == "vm" else (self.container or ContainerSpec())
        return block.model_dump()


class JobSpec(Strict):
    name: DnsLabel
    priority: int = Field(default=50, ge=0, le=100)
    groups: list[Group] = Field(min_length=1)


    @field_validator("groups")
    @classmethod
    def _unique(cls, v: list[Group]) -> list[Group]:
        seen: set[str] = set()
        for g in v:
            if g.name in seen:
                raise ValueError(f"group name '{g.name}' is used twice")
            seen.add(g.name)
        return v

    def to_json(self) -> str:
        data = self.model_dump(mode="json")
        for group in data["groups"]:
            # left out when empty: a spec stored before these fields existed serialises the same,
            # so resubmitting it is not a change
            for key in OPTIONAL_WHEN_EMPTY:
                if not group.get(key):
                    group.pop(key, None)
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    def group(self, name: str) -> Group:
        return next(g for g in self.groups if g.name == name)


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and part.startswith(("function-", "constrained-")):
            continue  # pydantic's internal validator step names: not a field
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _reason(err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field is missing"
    msg = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    return msg[0].lower() + msg[1:] if msg else kind


def validate(data: Any) -> JobSpec:
    """A parsed document -> JobSpec, or SpecError listing every problem as `path: reason`."""
    if not isinstance(data, dict):
        raise SpecError(["(top level): a job spec must be a mapping with name and groups"])
    try:
        return JobSpec.model_validate(data)
    except ValidationError as e:
        errors = []
        for err in e.errors():
            # a union (str | list) reports one error per member; the first says enough
            loc = tuple(p for p in err["loc"] if p not in ("str", "list[str]"))
            line = f"{_path(loc)}: {_reason(err)}"
            if line not in errors:
                errors.append(line)
        raise SpecError(errors) from None


def load_yaml(text: str) -> JobSpec:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise SpecError([f"(yaml) {where}{problem}"]) from None
    return validate(data)


def load_json(text: str) -> JobSpec:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SpecError([f"(json) {e}"]) from None
    return validate(data)
