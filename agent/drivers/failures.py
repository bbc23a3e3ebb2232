"""How the drivers' failures reach the agent: as DriverError, with nothing left behind.

- driver_error: an error met on the way (OS, runc, libvirt) as the DriverError users see, `what: why`;
- undone_on_failure: a start that fails half way is undone (the driver's destroy), and its own
  error, not the cleanup's, is what is reported; a cancelled start is undone too;
- Cleanup: destroy() tries every step whatever failed before it, and reports the failures together.
"""
from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

from agent.drivers.base import DriverError


def driver_error(what: str, e: BaseException, describe: Callable[[BaseException], str] = str) -> DriverError:
    """`e` as DriverError(`what: describe(e)`); a DriverError passes unchanged."""
    if isinstance(e, DriverError):
        return e
    return DriverError(f"{what}: {describe(e)}")


@contextlib.asynccontextmanager
async def undone_on_failure(undo: Callable[[], Awaitable[object]], what: str,
                            describe: Callable[[BaseException], str] = str) -> AsyncIterator[None]:
    """Run `undo` if the block fails or is cancelled; the block's error leaves as driver_error."""
    try:
        yield
    except BaseException as e:
        with contextlib.suppress(Exception):
            await undo()
        if isinstance(e, Exception):
            raise driver_error(what, e, describe) from e
        raise


class Cleanup:
    def __init__(self, instance_id: str):
        self.instance_id = instance_id
        self.errors: list[str] = []

    @contextlib.contextmanager
    def step(self, *expected: type[Exception]) -> Iterator[None]:
        """One step of the cleanup: an `expected` error is noted and the cleanup goes on."""
        try:
            yield
        except expected as e:
            self.errors.append(str(e))

    def done(self) -> None:
        """Raise what the steps noted, if anything."""
        if self.errors:
            raise DriverError(f"destroying {self.instance_id}: " + "; ".join(self.errors))
