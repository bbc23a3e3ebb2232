"""The installed packyard's version, as `ctl version` shows it for the client and the scheduler."""
from importlib.metadata import PackageNotFoundError, version


def packyard_version() -> str:
    try:
        return version("packyard")
    except PackageNotFoundError:      # run from a source tree that was never installed
        return "unknown"
