"""What the agent accepts from its gRPC callers, checked before anything reaches a driver.

Instance ids become file names (handles/<id>.json, logs/<id>.log), runc container ids, cgroup paths
and etcd keys (/packyard/state/<node>/<id>): an id with `/` or `..` could climb out of all of them.
The scheduler only sends well-formed ids, but the agent trusts no caller. Each problem is a
ValueError naming the field, which the server answers with INVALID_ARGUMENT.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re

from agent.drivers.base import InstanceSpec
from packyard.policies import CheckPolicy, RestartPolicy
from packyard.quantity import DNS_LABEL, MAX_CPU_MILLI, MAX_DISK, MAX_GPU_MILLI, MAX_MEMORY, shown

# `<job>.<group>.<index>-<generation>` from the scheduler; tests use other readable ids, so any
# runc-safe name, but never "..", "/" or a leading dot
INSTANCE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}\Z")
DRIVER_KIND = re.compile(r"^[a-z][a-z0-9_-]{0,31}\Z")
MAX_DRIVER_JSON = 1 << 20          # the whole job spec is capped at this size
MAX_GRACE_SECONDS = 3600.0
DEFAULT_GRACE_SECONDS = 10.0
# enforced limits are request + the kind's overhead: allow the request caps twice over
MAX_LIMIT_CPU_MILLI = 2 * MAX_CPU_MILLI
MAX_LIMIT_MEMORY = 2 * MAX_MEMORY
MAX_GPUS = MAX_GPU_MILLI // 1000   # devices one instance may hold, as many as it may ask for
MAX_GPU_INDEX = 1023
JOB_TYPES = ("", "service", "batch", "system")     # "": from a scheduler before issue 13, a service
MAX_ATTEMPTS = 1000
MAX_SECONDS = 366 * 24 * 3600.0
MAX_CHECK_ARGS = 4096


def instance_id(value: str, field: str = "id") -> str:
    if not INSTANCE_ID.match(value) or ".." in value:
        raise ValueError(f"{field}: '{shown(value)}' is not an instance id (letters, digits, '.', '_', '-'; "
                         "no '..', at most 200)")
    return value


def grace_seconds(value: float) -> float:
    """A Stop's grace period: unset (0) means the default; NaN, inf and negatives are not a period."""
    if not math.isfinite(value) or value <= 0:
        return DEFAULT_GRACE_SECONDS
    return min(value, MAX_GRACE_SECONDS)


class CheckedSpecs:
    """`to_spec`, with what the instances of one group version share checked once.

    The scheduler sends every instance of a group version the same spec but for its id and GPU
    devices; checking and converting all of it again for each (the restart policy, the check, the
    amounts, a frozen InstanceSpec made field by field) was most of a simulated agent's Start. Here
    a spec whose every other field is byte for byte one checked before (the key: the message
    serialised without id and gpus, so a field added to the message later is in it too) has only
    its id and devices checked, and shares that spec's frozen values. A spec seen for the first
    time, or differing in anything, is checked whole, in the same order as always (so a bad one
    is refused naming the same field). Each instance still gets its own `config` dict, parsed
    from its own driver_json: drivers may hold on to it."""

    def __init__(self, size: int = 1024):
        self.size = size                       # kinds of spec remembered (the oldest forgotten)
        # key -> (field, value) of InstanceSpec in field order, _OWN for the instance's own fields
        self._shared: dict[bytes, tuple[tuple[str, object], ...]] = {}

    def __len__(self) -> int:
        return len(self._shared)

    def to_spec(self, p, field: str) -> InstanceSpec:
        """An agent_pb2.InstanceSpec -> InstanceSpec; ValueError `field.part: reason` if it is not one."""
        rest = type(p)()
        rest.CopyFrom(p)
        rest.ClearField("id")
        rest.ClearField("gpus")
        key = rest.SerializeToString(deterministic=True)
        shared = self._shared.get(key)
        if shared is None:
            spec = check_spec(p, field)
            if len(self._shared) >= self.size:
                del self._shared[next(iter(self._shared))]
            self._shared[key] = tuple((f, _OWN if f in ("id", "gpus", "config") else getattr(spec, f))
                                      for f in _SPEC_FIELDS)
            return spec
        instance_id(p.id, f"{field}.id")
        own = {"id": p.id, "gpus": gpus(p.gpus, f"{field}.gpus"), "config": json.loads(p.driver_json or "{}")}
        # frozen: set as its __init__ sets them, in field order (so that instances share the layout
        # of their attributes: 216 bytes a spec, where a copied __dict__ was 530), without the
        # keyword arguments' work (a third of the time)
        spec = object.__new__(InstanceSpec)
        for name, value in shared:
            _set(spec, name, own[name] if value is _OWN else value)
        return spec


_OWN = object()                  # a field each instance has its own value of
_SPEC_FIELDS = tuple(f.name for f in dataclasses.fields(InstanceSpec))
_set = object.__setattr__


_CHECKED = CheckedSpecs()


def to_spec(p, field: str) -> InstanceSpec:
    """An agent_pb2.InstanceSpec -> InstanceSpec; ValueError `field.part: reason` if it is not one."""
    return _CHECKED.to_spec(p, field)


def check_spec(p, field: str) -> InstanceSpec:
    """`to_spec`, every field checked."""
    instance_id(p.id, f"{field}.id")
    for name in ("job", "group"):
        if not DNS_LABEL.match(getattr(p, name)):
            raise ValueError(f"{field}.{name}: '{shown(getattr(p, name))}' is not a DNS label")
    if not DRIVER_KIND.match(p.kind):
        raise ValueError(f"{field}.kind: '{shown(p.kind)}' is not a driver name (container, vm)")
    _amount(p.limit.cpu_milli, 1, MAX_LIMIT_CPU_MILLI, f"{field}.limit.cpu_milli")
    _amount(p.limit.memory_bytes, 1 << 20, MAX_LIMIT_MEMORY, f"{field}.limit.memory_bytes")
    _amount(p.request.cpu_milli, 0, MAX_LIMIT_CPU_MILLI, f"{field}.request.cpu_milli")
    _amount(p.request.memory_bytes, 0, MAX_LIMIT_MEMORY, f"{field}.request.memory_bytes")
    _amount(p.request.disk_bytes, 0, MAX_DISK, f"{field}.request.disk_bytes")
    return InstanceSpec(id=p.id, job=p.job, group=p.group, kind=p.kind,
                        cpu_milli=p.limit.cpu_milli, memory_bytes=p.limit.memory_bytes,
                        request_cpu_milli=p.request.cpu_milli,
                        request_memory_bytes=p.request.memory_bytes, gpus=gpus(p.gpus, f"{field}.gpus"),
                        config=driver_config(p.driver_json, f"{field}.driver_json"),
                        job_type=job_type(p.job_type, f"{field}.job_type"),
                        restart=restart(p.restart, f"{field}.restart") if p.HasField("restart") else None,
                        check=check(p.check, f"{field}.check") if p.HasField("check") else None,
                        # resources.disk as the job asked (request, not limit: no overhead is added to it)
                        disk_bytes=p.request.disk_bytes)


def job_type(value: str, field: str) -> str:
    if value not in JOB_TYPES:
        raise ValueError(f"{field}: '{shown(value)}' is not a job type (service, batch, system)")
    return value or "service"


def restart(p, field: str) -> RestartPolicy:
    _amount(p.attempts, 0, MAX_ATTEMPTS, f"{field}.attempts")
    if p.mode not in ("fail", "delay"):
        raise ValueError(f"{field}.mode: '{shown(p.mode)}' is not fail or delay")
    return RestartPolicy(attempts=p.attempts, interval=_seconds(p.interval_seconds, f"{field}.interval_seconds"),
                         delay=_seconds(p.delay_seconds, f"{field}.delay_seconds", zero=True), mode=p.mode)


def check(p, field: str) -> CheckPolicy:
    if p.type not in ("exec", "tcp", "http"):
        raise ValueError(f"{field}.type: '{shown(p.type)}' is not exec, tcp or http")
    if p.type == "exec" and not 1 <= len(p.command) <= MAX_CHECK_ARGS:
        raise ValueError(f"{field}.command: an exec check needs 1..{MAX_CHECK_ARGS} arguments")
    if p.type != "exec":
        _amount(p.port, 1, 65535, f"{field}.port")
    if len(p.path) > 4096 or any(c in p.path for c in " \r\n\t\x00") or (p.path and not p.path.startswith("/")):
        raise ValueError(f"{field}.path: '{shown(p.path)}' is not a URL path")
    _amount(p.failures, 1, MAX_ATTEMPTS, f"{field}.failures")
    return CheckPolicy(type=p.type, command=tuple(p.command), port=p.port, path=p.path,
                       interval=_seconds(p.interval_seconds, f"{field}.interval_seconds"),
                       timeout=_seconds(p.timeout_seconds, f"{field}.timeout_seconds"),
                       failures=p.failures, grace=_seconds(p.grace_seconds, f"{field}.grace_seconds", zero=True))


def _seconds(value: float, field: str, zero: bool = False) -> float:
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero) or value > MAX_SECONDS:
        raise ValueError(f"{field}: {value} is not a duration in seconds (more than 0, at most a year)")
    return value


def gpus(values, field: str) -> tuple[int, ...]:
    """GPU device indices: distinct, each 0..MAX_GPU_INDEX, at most MAX_GPUS."""
    devices = tuple(values)
    if len(devices) > MAX_GPUS:
        raise ValueError(f"{field}: {len(devices)} devices, more than {MAX_GPUS}")
    if len(set(devices)) != len(devices):
        raise ValueError(f"{field}: a device named twice ({', '.join(map(str, devices))})")
    for d in devices:
        _amount(d, 0, MAX_GPU_INDEX, field)
    return devices


def driver_config(text: str, field: str) -> dict:
    if len(text) > MAX_DRIVER_JSON:
        raise ValueError(f"{field}: larger than {MAX_DRIVER_JSON >> 20} MiB")
    try:
        config = json.loads(text or "{}")
    except RecursionError:
        raise ValueError(f"{field}: nested too deep") from None
    except ValueError as e:
        raise ValueError(f"{field}: not JSON ({' '.join(str(e).split())[:120]})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{field}: must be a JSON object (the group's container or vm block)")
    return config


def _amount(value: int, low: int, high: int, field: str) -> None:
    if not low <= value <= high:
        raise ValueError(f"{field}: {value} is outside {low}..{high}")
