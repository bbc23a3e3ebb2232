"""The seccomp filter every container gets unless it runs unconfined: a profile kept as data, in the
format Docker, Podman and containerd share (rules with `includes`/`excludes` by capability,
architecture and kernel version, an `archMap`), converted here to the OCI `linux.seccomp` runc
takes, for this machine's architecture and kernel and the container's capabilities.

The default profile is the one Debian's golang-github-containers-common installs
(/usr/share/containers/seccomp.json, Podman's), with seccomp-docker.json's rules in place of its own
for the system calls Docker refuses and Podman allows (new namespaces, mounts, the keyring...): so a
container cannot `unshare -U`, `keyctl`, `bpf`, `perf_event_open` or `userfaultfd`, as under Docker.
`packyard-agent --seccomp-profile FILE` takes another profile as it is.

A profile is read and checked once per agent (Profile.load); its OCI form is computed once per
capability set (privileged containers run unconfined, so in practice once), never per start.

The filter is compiled by libseccomp inside `runc init` at every start, and its size is most of
that cost: of ~50 ms per `runc create` on this 2-core machine, ~20 ms is the x32 sub-architecture's
copy of the rules. A kernel that does not run x32 programs (CONFIG_X86_X32_ABI off, or booted
without syscall.x32) refuses their calls whatever the filter says, so SCMP_ARCH_X32 is left out there
(`runs_x32`): x32 calls stay refused (by the filter's bad-architecture action rather than ENOSYS),
nothing another architecture may do changes.
"""
from __future__ import annotations

import ctypes
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_PROFILE = Path("/usr/share/containers/seccomp.json")
PACKAGE = "golang-github-containers-common"
DOCKER_RULES = Path(__file__).with_name("seccomp-docker.json")
MAX_PROFILE_BYTES = 1 << 20
# uname's machine -> (the name profiles' includes/excludes use, libseccomp's architecture)
ARCHES = {
    "x86_64": ("amd64", "SCMP_ARCH_X86_64"), "i686": ("x86", "SCMP_ARCH_X86"), "i386": ("x86", "SCMP_ARCH_X86"),
    "aarch64": ("arm64", "SCMP_ARCH_AARCH64"), "armv7l": ("arm", "SCMP_ARCH_ARM"),
    "ppc64le": ("ppc64le", "SCMP_ARCH_PPC64LE"), "s390x": ("s390x", "SCMP_ARCH_S390X"),
    "riscv64": ("riscv64", "SCMP_ARCH_RISCV64"), "loongarch64": ("loong64", "SCMP_ARCH_LOONGARCH64"),
}
RULE_FIELDS = ("names", "action", "errnoRet", "args")      # what OCI takes of a rule
X32 = "SCMP_ARCH_X32"
X32_SYSCALL_BIT, SYS_GETPID = 0x40000000, 39


class SeccompError(Exception):
    """A profile that cannot be read or used; the message names the file."""


@dataclass(frozen=True)
class Platform:
    arch: str                # as profiles name it: amd64, arm64...
    seccomp_arch: str        # SCMP_ARCH_X86_64...
    kernel: tuple[int, int]
    x32: bool = True         # the kernel runs x32 system calls (x86_64 only; True: assume it does)


def this_platform() -> Platform:
    u = os.uname()
    if u.machine not in ARCHES:
        raise SeccompError(f"no seccomp architecture known for machine {u.machine}")
    return Platform(*ARCHES[u.machine], kernel_version(u.release), x32=u.machine != "x86_64" or runs_x32())


def runs_x32() -> bool:
    """Whether this x86_64 kernel runs x32 system calls: getpid with the x32 bit set answers, or
    fails with ENOSYS. Probed only when this process has no seccomp filter of its own (one without
    x32 could kill it for trying); under one, assumed (the filter then keeps X32)."""
    try:
        with open("/proc/self/status") as f:
            filtered = any(line.split()[1:2] != ["0"] for line in f if line.startswith("Seccomp:"))
    except (OSError, IndexError):
        filtered = True
    if filtered:
        return True
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall(ctypes.c_long(X32_SYSCALL_BIT | SYS_GETPID)) == os.getpid()


def kernel_version(release: str) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


@dataclass
class Profile:
    """A profile in the Docker/Podman format and where it came from."""
    data: dict[str, Any]
    source: str
    _oci: dict[frozenset[str], dict[str, Any]] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, path: Path | None = None) -> Profile:
        """`path`, as it is; None: the default profile (DEFAULT_PROFILE with DOCKER_RULES)."""
        if path is not None:
            return cls(_read(Path(path)), str(path))
        base = _read(DEFAULT_PROFILE, missing=f" (install {PACKAGE}, or give packyard-agent --seccomp-profile)")
        return cls(with_rules(base, _read(DOCKER_RULES)["syscalls"]), f"{DEFAULT_PROFILE} with Docker's rules")

    def oci(self, capabilities: Iterable[str], platform: Platform | None = None) -> dict[str, Any]:
        """linux.seccomp for a container whose bounding set is `capabilities` (cached per set)."""
        caps = frozenset(capabilities)
        if platform is not None:
            return to_oci(self.data, caps, platform)
        if caps not in self._oci:
            self._oci[caps] = to_oci(self.data, caps, this_platform())
        return self._oci[caps]


def _read(path: Path, missing: str = "") -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            text = f.read(MAX_PROFILE_BYTES + 1)
    except FileNotFoundError:
        raise SeccompError(f"seccomp profile {path} does not exist{missing}") from None
    except OSError as e:
        raise SeccompError(f"cannot read seccomp profile {path}: {e.strerror}") from None
    if len(text) > MAX_PROFILE_BYTES:
        raise SeccompError(f"seccomp profile {path} is larger than {MAX_PROFILE_BYTES >> 20} MiB")
    try:
        data = json.loads(text)
    except ValueError as e:
        raise SeccompError(f"seccomp profile {path} is not JSON: {' '.join(str(e).split())[:120]}") from None
    problem = _shape_problem(data)
    if problem:
        raise SeccompError(f"seccomp profile {path}: {problem}")
    return data


def _shape_problem(data: Any) -> str:
    if not isinstance(data, dict) or not isinstance(data.get("syscalls", []), list):
        return "not a profile (an object with defaultAction and syscalls)"
    for i, rule in enumerate(data.get("syscalls", [])):
        names = rule.get("names", [rule.get("name")]) if isinstance(rule, dict) else None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names) \
                or not isinstance(rule.get("action"), str):
            return f"syscalls[{i}] is not a rule (names and action)"
    return ""


def with_rules(base: dict[str, Any], rules: list[dict[str, Any]]) -> dict[str, Any]:
    """`base` where the system calls `rules` name are governed by `rules` alone."""
    replaced = {n for r in rules for n in _names(r)}
    kept = []
    for rule in base.get("syscalls", []):
        names = [n for n in _names(rule) if n not in replaced]
        if names:
            kept.append({**{k: v for k, v in rule.items() if k != "name"}, "names": names})
    return {**base, "syscalls": kept + list(rules)}


def _names(rule: dict[str, Any]) -> list[str]:
    return list(rule.get("names") or ([rule["name"]] if rule.get("name") else []))


def to_oci(profile: dict[str, Any], caps: frozenset[str], platform: Platform) -> dict[str, Any]:
    """The OCI linux.seccomp of `profile` for this platform and capability set: rules whose
    includes do not all hold, or any of whose excludes holds, are left out (as Docker does)."""
    out: dict[str, Any] = {"defaultAction": profile.get("defaultAction", "SCMP_ACT_ERRNO")}
    if "defaultErrnoRet" in profile:
        out["defaultErrnoRet"] = profile["defaultErrnoRet"]
    arches = list(profile.get("architectures") or [])
    for entry in profile.get("archMap") or []:
        if entry.get("architecture") == platform.seccomp_arch:
            arches = [platform.seccomp_arch, *entry.get("subArchitectures", [])]
    if not platform.x32:
        arches = [a for a in arches if a != X32]    # the kernel refuses x32 calls itself (see above)
    if arches:
        out["architectures"] = arches
    if profile.get("flags"):
        out["flags"] = list(profile["flags"])
    out["syscalls"] = [_oci_rule(r) for r in profile.get("syscalls", []) if _applies(r, caps, platform)]
    return out


def _applies(rule: dict[str, Any], caps: frozenset[str], platform: Platform) -> bool:
    inc, exc = rule.get("includes") or {}, rule.get("excludes") or {}
    if inc.get("arches") and platform.arch not in inc["arches"]:
        return False
    if inc.get("caps") and not set(inc["caps"]) <= caps:
        return False
    if inc.get("minKernel") and platform.kernel < kernel_version(inc["minKernel"]):
        return False
    if exc.get("arches") and platform.arch in exc["arches"]:
        return False
    if exc.get("caps") and set(exc["caps"]) & caps:
        return False
    return not (exc.get("minKernel") and platform.kernel >= kernel_version(exc["minKernel"]))


def _oci_rule(rule: dict[str, Any]) -> dict[str, Any]:
    out = {k: rule[k] for k in RULE_FIELDS if rule.get(k)}
    out["names"] = _names(rule)
    if "errnoRet" in rule and rule["errnoRet"] is not None:
        out["errnoRet"] = rule["errnoRet"]       # 0 is a value here (the call "succeeds")
    if out.get("args"):
        out["args"] = [{k: a[k] for k in ("index", "value", "valueTwo", "op") if k in a} for a in out["args"]]
    return out
