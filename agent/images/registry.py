"""`packyard-agent --registry-config FILE`: how to reach registries, never in job specs.

The file is Docker's `config.json` (`{"auths": {"host:port": {"auth": base64(user:pass)}}}`), so it
is handed to skopeo as its `--authfile` as it is, plus two keys of ours that Docker ignores:
    "certs":    {"host:port": "/path/ca.crt"}    a registry's CA (else the system's)
    "insecure": ["host:port"]                      plain HTTP / unverified TLS allowed
Plain HTTP is otherwise allowed only for a registry on a loopback address, as Docker does.
"""
from __future__ import annotations

import ipaddress
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from packyard.imageref import Reference


class RegistryConfigError(Exception):
    """The registry config file is unreadable or malformed."""


@dataclass(frozen=True)
class RegistryConfig:
    authfile: Path | None = None
    certs: dict[str, Path] = field(default_factory=dict)
    insecure: frozenset[str] = frozenset()

    @classmethod
    def load(cls, path: Path | None) -> RegistryConfig:
        if path is None:
            return cls()
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise RegistryConfigError(f"--registry-config {path}: {e}") from e
        if not isinstance(data, dict) or not isinstance(data.get("auths", {}), dict):
            raise RegistryConfigError(f"--registry-config {path}: not a Docker config.json (no 'auths' object)")
        certs, insecure = data.get("certs", {}), data.get("insecure", [])
        if not isinstance(certs, dict) or not isinstance(insecure, list) \
                or not all(isinstance(v, str) and v for v in certs.values()):
            raise RegistryConfigError(f"--registry-config {path}: 'certs' must map registries to CA files, "
                                      "'insecure' list registries")
        for registry, ca in certs.items():
            # read at every pull: one that is missing now would fail every pull from that registry
            try:
                with open(ca, "rb"):
                    pass
            except OSError as e:
                raise RegistryConfigError(f"--registry-config {path}: certs.{registry}: cannot read {ca}: "
                                          f"{e.strerror or e}") from None
        return cls(authfile=Path(path), certs={k: Path(v) for k, v in certs.items()},
                   insecure=frozenset(str(x) for x in insecure))

    def plain_allowed(self, ref: Reference) -> bool:
        """Whether TLS may be skipped (tried, then HTTP): loopback registries and listed ones."""
        if ref.registry in self.insecure or ref.host.lower() == "localhost":   # host names have no case
            return True
        try:
            return ipaddress.ip_address(ref.host).is_loopback
        except ValueError:
            return False

    def skopeo_args(self, ref: Reference, cert_root: Path, prefix: str = "src-") -> list[str]:
        """skopeo's options for `ref`'s registry (`prefix`: "src-" for copy, "" for inspect). A CA
        goes into a directory of its own (--cert-dir reads every *.crt in it)."""
        ca = self.certs.get(ref.registry)
        # a registry given a CA is verified with it, even on loopback
        plain = self.plain_allowed(ref) and ca is None
        args = [f"--{prefix}tls-verify={'false' if plain else 'true'}"]
        args.append(f"--{prefix}authfile={self.authfile}" if self.authfile else f"--{prefix}no-creds")
        if ca is not None:
            d = cert_root / ref.registry.replace(":", "_").replace("/", "_")
            d.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ca, d / "ca.crt")
            args.append(f"--{prefix}cert-dir={d}")
        return args
