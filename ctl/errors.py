"""ctl's single error mapping: every expected failure, click's usage errors included, becomes one
`error: ...` line on stderr and an exit code (2: the input was wrong; 1: the cluster failed us)."""
from __future__ import annotations

import sys

import click
import grpc
from click.exceptions import NoArgsIsHelpError

from ctl.client import SchedulerUnreachable
from packyard.spec import SpecError

# gRPC codes that mean the request itself was wrong (the user must change it): exit 2
BAD_INPUT = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
             grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS}


def fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


class Ctl(click.Group):
    """Turns every expected failure into `error: ...` and an exit code."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        # click would print its own "Usage: ...\nError: ..." block: the same one line as the rest instead
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError as e:      # bare `ctl` or `ctl certs`: the help is the answer
            click.echo(e.format_message(), err=True)
            sys.exit(2)
        except click.UsageError as e:
            fail(e.format_message(), 2)
        except click.ClickException as e:
            fail(e.format_message(), 2 if e.exit_code == 2 else 1)
        except click.Abort:
            fail("aborted", 1)
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SpecError as e:
            fail("invalid job spec: " + "; ".join(e.errors), 2)     # one line, however many problems
        except SchedulerUnreachable as e:
            fail(str(e), 1)
        except grpc.RpcError as e:
            # the scheduler lists several problems one a line: ctl's errors are one line
            fail("; ".join((e.details() or e.code().name).splitlines()), 2 if e.code() in BAD_INPUT else 1)
        except OSError as e:
            fail(str(e), 2)
