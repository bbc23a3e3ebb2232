"""ctl's own config file, named contexts as kubeconfig has them:

    # ~/.config/packyard/ctl.toml  (or the file PACKYARD_CTL_CONFIG names)
    current-context = "local"
    [contexts.local]
    scheduler = "10.213.0.1:7070"          # HOST:PORT[,HOST:PORT...]
    tls = "/tmp/packyard-local/tls"        # optional: ctl's certificate directory

PACKYARD_CONFIG already names the scheduler's and agent's flag file (`--config`), which a host may
export for them; ctl reads the file it names only when it is a ctl file (it has `contexts` or
`current-context`), so a scheduler's flag file in the environment never turns into ctl's.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

CTL_ENV = "PACKYARD_CTL_CONFIG"
SHARED_ENV = "PACKYARD_CONFIG"
KEYS = ("scheduler", "tls")


class ContextError(ValueError):
    """The config file or a context in it cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Context:
    name: str
    scheduler: str
    tls: str | None = None


def default_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "packyard" / "ctl.toml"


def _is_ctl_file(path: Path) -> bool:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return False
    return "contexts" in data or "current-context" in data


def path() -> Path:
    """Where ctl's config lives: PACKYARD_CTL_CONFIG, else PACKYARD_CONFIG when that is a ctl file,
    else ~/.config/packyard/ctl.toml."""
    if os.environ.get(CTL_ENV):
        return Path(os.environ[CTL_ENV])
    shared = os.environ.get(SHARED_ENV)
    # a file named ctl.toml is ctl's even before it exists or while it does not parse: a typo in
    # it is then said, not skipped over for the default file
    if shared and (shared.endswith("ctl.toml") or _is_ctl_file(Path(shared))):
        return Path(shared)
    return default_path()


def load(file: Path) -> dict:
    """The file as a mapping ({} when it does not exist yet), checked key by key."""
    try:
        text = file.read_text()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise ContextError(f"{file}: {e.strerror or e}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ContextError(f"{file}: not valid TOML: {e}") from None
    unknown = sorted(set(data) - {"current-context", "contexts"})
    if unknown:
        raise ContextError(f"{file}: unknown key '{unknown[0]}' (known: contexts, current-context)")
    contexts = data.get("contexts", {})
    if not isinstance(contexts, dict):
        raise ContextError(f"{file}: contexts: expected a table of named contexts")
    for name, ctx in contexts.items():
        if not isinstance(ctx, dict):
            raise ContextError(f"{file}: contexts.{name}: expected a table")
        for key, value in ctx.items():
            if key not in KEYS:
                raise ContextError(f"{file}: contexts.{name}.{key}: unknown key (known: {', '.join(KEYS)})")
            if not isinstance(value, str) or not value:
                raise ContextError(f"{file}: contexts.{name}.{key}: expected a non-empty string")
        if "scheduler" not in ctx:
            raise ContextError(f"{file}: contexts.{name}.scheduler: missing")
    current = data.get("current-context")
    if current is not None and not isinstance(current, str):
        raise ContextError(f"{file}: current-context: expected a string")
    return data


def get(file: Path, name: str | None) -> Context | None:
    """The context NAME (an error if the file has none by that name), or the current one, or None."""
    data = load(file)
    contexts = data.get("contexts", {})
    chosen = name or data.get("current-context")
    if chosen is None:
        return None
    if chosen not in contexts:
        known = ", ".join(sorted(contexts)) or "none"
        where = "--context" if name else f"{file}: current-context"
        raise ContextError(f"{where}: no context named '{chosen}' (known: {known})")
    entry = contexts[chosen]
    return Context(chosen, entry["scheduler"], entry.get("tls"))


def save(file: Path, data: dict) -> None:
    """Write DATA whole, atomically (a reader never sees half a file); 0600: it names TLS keys."""
    import tomli_w
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        tomli_w.dump(data, f)
    os.replace(tmp, file)


def put(file: Path, name: str, scheduler: str, tls: str | None = None, select: bool = False) -> None:
    data = load(file)
    entry = {"scheduler": scheduler}
    if tls:
        entry["tls"] = tls
    data.setdefault("contexts", {})[name] = entry
    if select:
        data["current-context"] = name
    save(file, data)


def select(file: Path, name: str) -> None:
    data = load(file)
    if name not in data.get("contexts", {}):
        known = ", ".join(sorted(data.get("contexts", {}))) or "none"
        raise ContextError(f"no context named '{name}' in {file} (known: {known})")
    data["current-context"] = name
    save(file, data)


def delete(file: Path, name: str) -> None:
    data = load(file)
    if name not in data.get("contexts", {}):
        raise ContextError(f"no context named '{name}' in {file}")
    del data["contexts"][name]
    if data.get("current-context") == name:
        del data["current-context"]
    save(file, data)
