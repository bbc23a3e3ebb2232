"""`--config FILE` for the long-running programs: a YAML or TOML file whose keys are the command's
long flag names (`state-dir`, or `state_dir`), loaded into click's `default_map`, so a flag (or its
environment variable) given as well overrides the file.

    # /etc/packyard/agent.yaml
    etcd: http://10.0.0.1:2379,http://10.0.0.2:2379
    node: host1
    drivers: [container, vm]          # a list is joined with commas
    labels: {zone: a, disk: ssd}      # a mapping becomes k=v,k=v
    capacity: {cpu: 4, memory: 8Gi}

A key that is not a flag of the command is an error naming the file, not silently ignored.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the key."""


def read(path: Path) -> dict[str, Any]:
    """The file's top-level mapping: TOML for a `.toml` name, YAML otherwise (an empty file is {})."""
    # imported here, not at the top: a program started without --config never loads them
    # (~1.3 MiB of the agent's 60 MiB budget, issue 5)
    import tomllib

    import yaml
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror or e}") from None
    try:
        data = tomllib.loads(text) if str(path).endswith(".toml") else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: not valid {'TOML' if str(path).endswith('.toml') else 'YAML'}: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of flag names to values")
    return data


def flag_names(command: click.Command) -> dict[str, str]:
    """Each long flag of COMMAND (`state-dir`, also spelled `state_dir`) -> its parameter's name."""
    names: dict[str, str] = {}
    for param in command.params:
        if not isinstance(param, click.Option) or param.name == "config":
            continue
        for opt in param.opts + param.secondary_opts:
            if opt.startswith("--"):
                names[opt[2:]] = param.name
                names[opt[2:].replace("-", "_")] = param.name
    return names


def _value(key: str, value: Any, path: Path) -> Any:
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict) and all(isinstance(v, str | int | float) for v in value.values()):
        return ",".join(f"{k}={v}" for k, v in value.items())
    raise ConfigError(f"{path}: {key}: expected a string, number, boolean, list or flat mapping")


def default_map(command: click.Command, path: Path) -> dict[str, Any]:
    """The file at PATH as click's default_map for COMMAND (parameter name -> value)."""
    names = flag_names(command)
    result: dict[str, Any] = {}
    for key, value in read(path).items():
        if str(key) not in names:
            known = ", ".join(sorted(k for k in names if "_" not in k))
            raise ConfigError(f"{path}: '{key}' is not a flag of {command.name} (known: {known})")
        if value is not None:
            result[names[str(key)]] = _value(str(key), value, path)
    return result


def click_option():
    """`--config FILE` (env PACKYARD_CONFIG): read before every other option, so their values from
    the command line or environment win over the file's."""
    def load(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        if value is None or ctx.resilient_parsing:
            return value
        try:
            ctx.default_map = {**(ctx.default_map or {}), **default_map(ctx.command, Path(value))}
        except ConfigError as e:
            raise click.BadParameter(str(e), ctx=ctx, param=param) from None
        return value
    return click.option("--config", envvar="PACKYARD_CONFIG", default=None, metavar="FILE",
                        is_eager=True, expose_value=False, callback=load,
                        help="YAML or TOML file of flag values (keys: long flag names); flags override it.")
