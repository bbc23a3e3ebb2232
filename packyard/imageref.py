"""Image references: `REGISTRY[:PORT]/NAME[:TAG][@sha256:DIGEST]` (issue 16), checked the same way by
ctl, the scheduler and the agent.

The grammar is the distribution project's (github.com/distribution/reference, `reference.go`),
narrowed as the issue asks: the registry is always written (no implicit docker.io, no short names
resolved through a search list: what a spec names is what a host pulls), a digest is sha256, and no
IPv6 address as the registry (the agents' skopeo cannot parse one).
A value starting with `/` is not a reference but a path on the host (packyard/spec.py).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from packyard.quantity import shown

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*|\[[0-9a-fA-F:.]+\])"
REFERENCE = re.compile(
    rf"^(?P<registry>{_HOST}(?::[0-9]{{1,5}})?)/(?P<name>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?\Z",
    re.ASCII)   # the grammar's \w is Go's, [A-Za-z0-9_]: a tag of non-ASCII letters or digits is no tag
# a repository written without its registry (`busybox`, `team/app:1`): said so, with Docker's spelling
_SHORT = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?\Z", re.ASCII)
MAX_NAME = 255            # the distribution spec's limit on registry + name
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}\Z")
SYNTAX = "REGISTRY[:PORT]/NAME[:TAG][@sha256:DIGEST]"


class ReferenceError(ValueError):
    """Not an image reference; the message says what is wrong, for the field that holds it."""


@dataclass(frozen=True)
class Reference:
    registry: str          # host[:port], as written
    name: str              # the repository: lowercase components separated by '/'
    tag: str | None
    digest: str | None     # sha256:<64 hex>

    @property
    def repository(self) -> str:
        return f"{self.registry}/{self.name}"

    @property
    def host(self) -> str:
        """The registry's host without its port (brackets of an IPv6 literal removed)."""
        host = self.registry
        if host.startswith("["):
            return host[1:host.index("]")]
        return host.rsplit(":", 1)[0] if ":" in host else host

    def pinned(self, digest: str) -> str:
        """The reference for exactly `digest` in this repository (what is pulled once resolved)."""
        return f"{self.repository}@{digest}"

    def __str__(self) -> str:
        return (self.repository + (f":{self.tag}" if self.tag else "")
                + (f"@{self.digest}" if self.digest else ""))


def is_reference(value: str) -> bool:
    """A value that is meant as a reference rather than a host path (which starts with '/')."""
    return not value.startswith("/")


def parse(value: str) -> Reference:
    """The reference `value`; ReferenceError saying why it is not one. A reference without tag or
    digest means tag `latest`, as `docker pull` does."""
    m = REFERENCE.match(value)
    if m is None and _SHORT.match(value):
        library = "" if "/" in value else "library/"
        raise ReferenceError(f"'{shown(value)}' names no registry (write the registry out, e.g. "
                             f"docker.io/{library}{shown(value)})")
    if m is None:
        raise ReferenceError(f"'{shown(value)}' does not match it (lowercase repository, e.g. "
                             "registry.example:5000/team/app:1.2)")
    registry = m["registry"]
    if registry.startswith("["):
        # the grammar has them since 2023, but the agents' pull client (skopeo 1.9, Debian 12)
        # answers "invalid reference format": refused here, not as a failed instance on every node
        raise ReferenceError(f"'{shown(registry)}': a registry given as an IPv6 address cannot be pulled from "
                             "(give it a host name)")
    if not ("." in registry or ":" in registry or registry == "localhost"):
        # Docker's rule for telling a registry from a repository's first component
        raise ReferenceError(f"'{registry}' is not a registry host (write the registry out, e.g. "
                             f"docker.io/{shown(value)})")
    if len(m["registry"]) + 1 + len(m["name"]) > MAX_NAME:
        raise ReferenceError(f"the repository name is longer than {MAX_NAME} characters")
    port = m["registry"].rsplit(":", 1)[1] if m["registry"].count(":") == 1 else None
    if port is not None and not 1 <= int(port) <= 65535:
        raise ReferenceError(f"registry port {port} is outside 1..65535")
    tag = m["tag"] if m["tag"] or m["digest"] else "latest"
    return Reference(registry=m["registry"], name=m["name"], tag=tag, digest=m["digest"])
