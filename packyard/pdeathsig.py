"""Children that die with their parent, for the scheduler's embedded etcd and the agent's skopeo.

util-linux's `setpriv --pdeathsig SIG` sets PR_SET_PDEATHSIG and execs the command, so the kernel
signals the child when its parent dies, even by SIGKILL. Not a `preexec_fn`: that makes Python
fork() rather than vfork() and run the process's fork handlers in the child, where gRPC's (channels
busy in other threads) restart its poller on an epoll fd that `close_fds` then closes, and the
child aborted before exec now and then ("epoll_wait: Bad file descriptor"; grpc/grpc#43055).
"""
from __future__ import annotations

import shutil


def dies_with_parent(signal_name: str) -> list[str]:
    """The prefix that runs a command tied to its parent (`signal_name`: TERM, KILL...); none
    where setpriv is missing (util-linux is essential on Debian): the child then runs untied."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", signal_name, "--"] if setpriv else []
