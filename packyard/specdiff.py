"""What changed between two versions of a job spec, field by field (issue 14: `ctl history`, `ctl
plan`): `groups[web].container.command: ["/bin/sleep","1"] → ["/bin/sleep","2"]`. Groups are
matched by name, not position, so reordering them is no change.
"""
from __future__ import annotations

import json
from typing import Any

MAX_VALUE = 80          # characters of a value shown; longer ones are cut


def diff(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """One line per changed field of two specs (their JSON form); [] if the same."""
    if old is None:
        return ["(new job)"]
    out: list[str] = []
    _walk(_keyed(old), _keyed(new), "", out)
    return out


def _keyed(spec: dict[str, Any]) -> dict[str, Any]:
    data = dict(spec)
    data["groups"] = {g["name"]: {k: v for k, v in g.items() if k != "name"} for g in spec.get("groups", [])}
    return data


def _walk(old: Any, new: Any, path: str, out: list[str]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(old.keys() | new.keys()):
            sub = f"{path}[{key}]" if path == "groups" else (f"{path}.{key}" if path else key)
            if key not in new:
                out.append(f"{sub}: removed" if path == "groups" else f"{sub}: {_shown(old[key])} → (default)")
            elif key not in old:
                out.append(f"{sub}: added" if path == "groups" else f"{sub}: (default) → {_shown(new[key])}")
            else:
                _walk(old[key], new[key], sub, out)
    elif old != new:
        out.append(f"{path}: {_shown(old)} → {_shown(new)}")


def _shown(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text if len(text) <= MAX_VALUE else text[:MAX_VALUE - 1] + "…"
