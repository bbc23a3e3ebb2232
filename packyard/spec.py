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
    StrictBool,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from packyard import imageref
from packyard.lifecycle import Check, Reschedule, Restart, check_problems
from packyard.privilege import DEFAULTS, HOST_ACCESS, SECCOMP, USERNS, parse_user
from packyard.quantity import (  # noqa: F401  (the caps are part of this module's interface)
    DNS_LABEL,
    MAX_CPU_MILLI,
    MAX_DISK,
    MAX_GPU_MILLI,
    MAX_MEMORY,
    QuantityError,
    parse_bytes,
    parse_cpu_milli,
    shown,
)
from packyard.update import Update, update_problems

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
CONTROL_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")   # and line separators
MAX_COUNT = 1_000_000     # instances per group (resources per instance: MAX_* in quantity.py)
# Limits on the document itself: a spec is one etcd value (etcd refuses requests over 1.5 MiB) and
# must stay cheap to parse and validate however it was written (deep nesting, YAML alias bombs).
MAX_SPEC_BYTES = 1 << 20
MAX_DEPTH = 32            # nesting of the parsed document; a real spec needs about 6
MAX_VALUES = 100_000      # values in the parsed document, YAML aliases counted each time they are used
MAX_GROUPS = 100
MAX_RULES = 64            # constraints, spread and affinity entries, each, per group
MAX_ARGS = 4096           # command arguments
MAX_ENV = 4096            # environment variables
MAX_STRING = 64 << 10     # one argument, env value, attribute or value: a certificate fits
MAX_ATTRIBUTE = 253       # a label key or host property name
MAX_PATH = 4096           # PATH_MAX
MAX_CMDLINE = 2048        # the kernel's COMMAND_LINE_SIZE on x86
MAX_ERRORS = 20           # problems listed; the rest are counted
OPTIONAL_WHEN_EMPTY = ("spread", "affinity")   # group fields added later: not in to_json when empty
LIFECYCLE_BLOCKS = ("restart", "reschedule", "check", "update")   # left out of to_json and group hashes when absent


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
            raise ValueError(f"{shown(value)} is more than any host has (max {limit >> 30}Gi)")
        return n
    return parse


def _gpu(value: Any) -> int:
    # GPUs as a number: 1 = one whole GPU, 0.5 = half of one; kept in milli-GPUs.
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("expected a number of GPUs (1, 2, or 0.5 for a share of one)")
    try:
        milli = round(float(value) * 1000)
    except (ValueError, OverflowError):     # 'x', NaN, inf, a 400-digit integer
        raise ValueError(f"'{shown(value)}' is not a number of GPUs (0 to {MAX_GPU_MILLI // 1000})") from None
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


def _text(v: str) -> str:
    if "\x00" in v:
        raise ValueError("must not contain NUL characters")
    return v


def _one_line(v: str) -> str:
    if CONTROL_CHARS.search(v):
        raise ValueError("must not contain control characters")
    return v


def _host_path(what: str):
    """A file or directory on the host: absolute and plain, so that what the agent resolves is what
    was written (the agent still checks the resolved path is in a directory the operator allowed)."""
    def check(v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"must be an absolute path on the host ({what})")
        if CONTROL_CHARS.search(v):
            raise ValueError("must not contain NUL or control characters")
        if ".." in v.split("/"):
            raise ValueError("must not contain '..'")
        return v
    return check


Text = Annotated[str, Field(max_length=MAX_STRING), AfterValidator(_text)]
Attribute = Annotated[str, Field(min_length=1, max_length=MAX_ATTRIBUTE), AfterValidator(_one_line)]
Value = Annotated[str, Field(max_length=MAX_STRING), AfterValidator(_one_line)]
def _image(v: str) -> str:
    """A rootfs directory or .tar on the host (absolute), or an image reference (issue 16)."""
    if not imageref.is_reference(v):
        return _host_path("a rootfs directory or a .tar")(v)
    try:
        imageref.parse(v)
    except imageref.ReferenceError as e:
        raise ValueError(f"is neither an absolute path on the host nor an image reference "
                         f"({imageref.SYNTAX}): {e}") from None
    return v


ImagePath = Annotated[str, Field(max_length=MAX_PATH), AfterValidator(_image)]
DEFAULT_COMMAND = ("/bin/sleep", "infinity")
PULL = ("always", "if-not-present", "never")
BootPath = Annotated[str, Field(max_length=MAX_PATH), AfterValidator(_host_path("a file the agent can read"))]


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
    image: ImagePath | None = None
    # None only with an image reference: the image's Entrypoint + Cmd run (a command given replaces
    # Cmd, as Docker's does); a host image or none runs DEFAULT_COMMAND, as before issue 16
    command: Annotated[list[Text], Field(min_length=1, max_length=MAX_ARGS)] | None = None
    pull: Literal[PULL] = "if-not-present"   # type: ignore[valid-type]  (registry images only)
    env: dict[str, Text] = Field(default_factory=dict, max_length=MAX_ENV)
    privileged: StrictBool = False     # every capability, no masked /proc paths, all devices
    host_network: StrictBool = False   # the host's network namespace instead of its own
    user: Annotated[str, Field(max_length=80)] | None = None   # "UID[:GID]": who runs the command
    seccomp: Literal[SECCOMP] = "default"   # type: ignore[valid-type]  (the tuple's values)
    userns: Literal[USERNS] = "default"     # type: ignore[valid-type]

    @field_validator("user")
    @classmethod
    def _user(cls, v: str | None) -> str | None:
        if v is not None:
            parse_user(v)
        return v

    @model_validator(mode="after")
    def _default_command(self) -> ContainerSpec:
        if self.command is None and not (self.image and imageref.is_reference(self.image)):
            object.__setattr__(self, "command", list(DEFAULT_COMMAND))   # frozen: set once, here
        return self

    @field_validator("env")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not ENV_NAME.match(name):
                raise ValueError(f"'{shown(name)}' is not a valid environment variable name")
        return v

    @model_serializer(mode="wrap")
    def _omit_defaults(self, handler) -> dict[str, Any]:
        # specs (and the group hashes derived from them) stored before these fields existed
        # must serialise the same, or every running container would be replaced
        data = handler(self)
        for key, default in DEFAULTS.items():
            if data.get(key) == default:
                data.pop(key, None)
        if data.get("command") is None:
            data.pop("command", None)
        if data.get("pull") == "if-not-present":
            data.pop("pull", None)
        return data


class VMSpec(Strict):
    kernel: BootPath | None = None
    initrd: BootPath | None = None
    cmdline: Annotated[str, Field(max_length=MAX_CMDLINE), AfterValidator(_one_line)] = "console=ttyS0"
    disk: BootPath | None = None

    @model_validator(mode="after")
    def _boot_source(self) -> VMSpec:
        if bool(self.kernel) == bool(self.disk):
            raise ValueError("give either kernel (with optional initrd, cmdline) or disk")
        return self


class Constraint(Strict):
    attribute: Attribute
    operator: Literal["=", "!=", "in", "not_in", "exists"] = "="
    value: Value | Annotated[list[Value], Field(max_length=MAX_RULES * 16)] | None = None

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
    attribute: Attribute
    weight: int = Field(default=50, ge=1, le=100)


class Group(Strict):
    name: DnsLabel
    count: int = Field(default=1, ge=0, le=MAX_COUNT)
    kind: Literal["container", "vm"] = "container"
    resources: Resources
    container: ContainerSpec | None = None
    vm: VMSpec | None = None
    constraints: list[Constraint] = Field(default_factory=list, max_length=MAX_RULES)
    spread: list[Spread] = Field(default_factory=list, max_length=MAX_RULES)
    affinity: list[Affinity] = Field(default_factory=list, max_length=MAX_RULES)
    restart: Restart | None = None          # packyard/lifecycle.py: the defaults, per job type
    reschedule: Reschedule | None = None
    check: Check | None = None
    update: Update | None = None            # packyard/update.py: how a change is rolled out

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
    type: Literal["service", "batch", "system"] = "service"
    priority: int = Field(default=50, ge=0, le=100)
    groups: list[Group] = Field(min_length=1, max_length=MAX_GROUPS)


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
        if data["type"] == "service":
            del data["type"]
        for group in data["groups"]:
            # left out when empty: a spec stored before these fields existed serialises the same,
            # so resubmitting it is not a change
            for key in OPTIONAL_WHEN_EMPTY:
                if not group.get(key):
                    group.pop(key, None)
            for key in LIFECYCLE_BLOCKS:
                if group.get(key) is None:
                    group.pop(key, None)
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    def group(self, name: str) -> Group:
        return next(g for g in self.groups if g.name == name)

    def host_access(self) -> list[str]:
        """The fields asking for more than an ordinary container (privileged mode, the host's
        network, no seccomp filter, the host's user ids), by path: what --allow-privileged must
        permit."""
        return [f"groups[{i}].container.{key}" for i, g in enumerate(self.groups)
                if g.container is not None for key, asks in HOST_ACCESS.items()
                if getattr(g.container, key) == asks]


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and part.startswith(("function-", "constrained-")):
            continue  # pydantic's internal validator step names: not a field
        else:
            # an unknown key is quoted back: keep it short and on one line; a key that is empty
            # or blank is shown in quotes, or the message would name no field at all
            part = shown(part)
            if not str(part).strip():
                part = repr(part)
            out += f".{part}" if out else part
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


def _check_shape(data: Any) -> None:
    """Refuse documents too deep or too big to validate cheaply, before pydantic walks them.
    Aliased YAML nodes are counted every time they are used: that is what a bomb multiplies."""
    budget = MAX_VALUES
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        budget -= 1
        if budget < 0:
            raise SpecError([f"(top level): more than {MAX_VALUES} values (YAML aliases included)"])
        if depth > MAX_DEPTH:
            raise SpecError([f"(top level): nested more than {MAX_DEPTH} levels deep"])
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def validate(data: Any) -> JobSpec:
    """A parsed document -> JobSpec, or SpecError listing every problem as `path: reason`."""
    if not isinstance(data, dict):
        raise SpecError(["(top level): a job spec must be a mapping with name and groups"])
    _check_shape(data)
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as e:
        errors: list[str] = []
        for err in e.errors():
            # a union (str | list) reports one error per member; the first says enough
            loc = tuple(p for p in err["loc"] if not _is_union_member(p))
            line = f"{_path(loc)}: {_reason(err)}"
            if line not in errors:
                errors.append(line)
        if len(errors) > MAX_ERRORS:
            errors[MAX_ERRORS:] = [f"(top level): and {len(errors) - MAX_ERRORS} more problems"]
        raise SpecError(errors) from None
    if errors := _across_fields(spec):
        raise SpecError(errors)
    return spec


def _across_fields(spec: JobSpec) -> list[str]:
    """Rules that join a group's fields to the job's: one `path: reason` line each."""
    errors = []
    for i, g in enumerate(spec.groups):
        if spec.type == "system" and "count" in g.model_fields_set and g.count > 1:
            errors.append(f"groups[{i}].count: a system job runs one instance on every eligible node; "
                          "leave count out (or 0 to run none)")
        if g.check is not None:
            errors += [f"groups[{i}].check.{name}: {why}" for name, why in check_problems(g.check)]
            if g.kind == "vm" and g.check.type == "exec":
                errors.append(f"groups[{i}].check.type: VMs take tcp and http checks, not exec")
        if g.update is not None:
            if spec.type == "batch":
                errors.append(f"groups[{i}].update: batch instances run to completion and are not rolled; "
                              "leave update out")
            elif spec.type == "system" and g.update.canary:
                errors.append(f"groups[{i}].update.canary: a system job has one instance per node and no "
                              "room for a canary beside it; leave canary out")
            errors += [f"groups[{i}].update.{name}: {why}" for name, why in update_problems(g.update)]
    return errors


def _is_union_member(part: Any) -> bool:
    return isinstance(part, str) and (part in ("str", "list[str]") or part.startswith("list[")
                                      or part.startswith(("function-after[", "constrained-str")))


def _text_of(document: str | bytes, kind: str) -> str:
    """The document as text, refused when too big to be one job (checked before any parsing)."""
    if len(document) > MAX_SPEC_BYTES:
        raise SpecError([f"({kind}) document: larger than {MAX_SPEC_BYTES >> 20} MiB"])
    if isinstance(document, bytes):
        try:
            return document.decode("utf-8")
        except UnicodeDecodeError as e:
            raise SpecError([f"({kind}) byte {e.start + 1}: not UTF-8 text (is this a job spec?)"]) from None
    return document


def load_yaml(text: str | bytes) -> JobSpec:
    text = _text_of(text, "yaml")
    try:
        data = yaml.load(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as e:
        raise SpecError([f"(yaml) {_yaml_problem(e)}"]) from None
    except RecursionError:
        raise SpecError([f"(yaml) document: nested more than {MAX_DEPTH} levels deep"]) from None
    except ValueError as e:      # an integer of more than 4300 digits
        raise SpecError([f"(yaml) document: {_one_line_of(e)}"]) from None
    return validate(data)


def _yaml_problem(e: yaml.YAMLError) -> str:
    """One line: where and what (a ReaderError, for a control character, has no mark but a position)."""
    mark = getattr(e, "problem_mark", None)
    if mark is not None:
        where = f"line {mark.line + 1}, column {mark.column + 1}: "
    elif isinstance(getattr(e, "position", None), int):
        where = f"character {e.position + 1}: "
    else:
        where = "document: "
    problem = getattr(e, "problem", None) or getattr(e, "reason", None) or str(e)
    return where + _one_line_of(problem)


def _one_line_of(e: Exception, limit: int = 160) -> str:
    return " ".join(str(e).split())[:limit]


def load_json(text: str | bytes) -> JobSpec:
    text = _text_of(text, "json")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SpecError([f"(json) line {e.lineno}, column {e.colno}: {e.msg}"]) from None
    except RecursionError:
        raise SpecError([f"(json) document: nested more than {MAX_DEPTH} levels deep"]) from None
    except ValueError as e:      # an integer of more than 4300 digits
        raise SpecError([f"(json) document: {_one_line_of(e)}"]) from None
    return validate(data)


# libyaml's loader when PyYAML has it: a 1 MiB spec parses in milliseconds instead of seconds
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
