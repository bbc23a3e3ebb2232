"""A scheduler client that fails over between the addresses given to --scheduler."""
from __future__ import annotations

from collections.abc import Iterator

import grpc

from packyard import tls
from packyard.v1 import scheduler_pb2_grpc

# Errors that mean "this replica can't answer", so another may: try the next address.
FAILOVER = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


class SchedulerUnreachable(Exception):
    pass


def unreachable(errors: list[str]) -> str:
    """What went wrong with every address tried: the scheduler itself, or the etcd behind it."""
    if errors and all("etcd unavailable" in e for e in errors):
        return "the scheduler cannot reach etcd; try again (" + "; ".join(errors) + ")"
    return "cannot reach the scheduler (" + "; ".join(errors) + ")"


class Client:
    def __init__(self, addresses: str, timeout: float = 10.0, identity: tls.Identity | None = None):
        """identity: ctl's certificate for mutual TLS (None: plaintext)."""
        self.addresses = [a.strip() for a in addresses.split(",") if a.strip()]
        self.timeout = timeout
        self.identity = identity
        self._channels: dict[str, grpc.Channel] = {}

    def _stub(self, address: str) -> scheduler_pb2_grpc.SchedulerStub:
        if address not in self._channels:
            self._channels[address] = tls.dial(address, self.identity, "scheduler")
        return scheduler_pb2_grpc.SchedulerStub(self._channels[address])

    def call(self, method: str, request, timeout: float | None = None):
        errors = []
        for address in self.addresses:
            try:
                return getattr(self._stub(address), method)(request, timeout=timeout or self.timeout)
            except grpc.RpcError as e:
                if e.code() not in FAILOVER:
                    raise
                errors.append(f"{address}: {e.details() or e.code().name}")
        raise SchedulerUnreachable(unreachable(errors))

    def stream(self, method: str, request, timeout: float | None = None) -> Iterator:
        errors = []
        for address in self.addresses:
            it = getattr(self._stub(address), method)(request, timeout=timeout)
            try:
                first = next(it)
            except StopIteration:
                return
            except grpc.RpcError as e:
                if e.code() not in FAILOVER:
                    raise
                errors.append(f"{address}: {e.details() or e.code().name}")
                continue
            yield first
            yield from it
            return
        raise SchedulerUnreachable(unreachable(errors))

    def close(self) -> None:
        for ch in self._channels.values():
            ch.close()
