"""Simulated hosts (issue 7): `packyard-agent --simulate N --node PREFIX` registers N nodes
(`PREFIX-00000`...) and serves the agent API for all of them from one process, so tests and benchmarks
can run a 5,000-host cluster on one machine.

It is the real agent with three things shared instead of repeated per host, because per-host copies
are what would swamp etcd at scale:
- one lease for all N node records (one keepalive every ttl/3, not N), records put 128 at a time;
- one etcd writer for every node's Reporter, which coalesces the state reports of all nodes into
  128-op transactions (etcd does ~1,000 single puts/s but ~24,000 keys/s batched, FIELD-NOTES);
- one gRPC server: every Start/Stop names its node, so it is handed to that node's AgentService.
Each node keeps its own InstanceManager (the real one) over a FakeDriver shared by all nodes, with no
handle store (nothing outlives the process) and `instant` starts: instances "run" at once, so a Start
is confirmed with `running` (no `starting` first); the end (stopped, exited) is written as a real
agent writes it. Every etcd call goes through packyard.etcd.Etcd's methods, and so through its
failover. What a simulated host does not do: usage reports (one per node every 5 s would be 1,000
puts/s at 5,000 hosts) and surviving a restart (nothing runs, so there is nothing to reattach to).
"""
from __future__ import annotations

import asyncio
import logging
import signal
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import grpc

from agent.drivers.fake import FakeDriver
from agent.handles import NoHandleStore
from agent.manager import InstanceManager
from agent.registration import Registration
from agent.reporter import Reporter
from agent.server import AgentService
from packyard import keys, records, tls
from packyard.etcd import KV, MAX_TXN_OPS, Etcd
from packyard.heap import HeapKeeper
from packyard.records import NodeRecord
from packyard.v1 import agent_pb2, agent_pb2_grpc

log = logging.getLogger("packyard.agent.simulate")

KINDS = ("container", "vm")


def node_names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i:05d}" for i in range(count)]


class CoalescingWriter:
    """Stands in for Etcd in every simulated node's Reporter: puts from all nodes that arrive while a
    write is in flight go out together in the next one, 128 per transaction, a few transactions at a
    time. A later put of a key replaces an earlier one not yet written (starting, then running: only
    running is written), and every caller returns once its value, or a newer one, is in etcd."""

    def __init__(self, etcd: Etcd, in_flight: int = 4):
        self.etcd = etcd
        self.in_flight = in_flight
        self._pending: dict[str, bytes] = {}
        self._waiters: list[asyncio.Future] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.keys_written = 0
        self.transactions = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task:
            self._task.cancel()

    async def put_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        self._pending.update(items)
        done = asyncio.get_running_loop().create_future()
        self._waiters.append(done)
        self._wake.set()
        await done

    async def get_prefix(self, prefix: str) -> tuple[int, list[KV]]:
        return await self.etcd.get_prefix(prefix)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            items, self._pending = list(self._pending.items()), {}
            waiters, self._waiters = self._waiters, []
            try:
                await self._write(items)
            except Exception as e:  # etcd away: every caller sees it (the manager retries its reports)
                for w in waiters:
                    if not w.done():
                        w.set_exception(e)
                continue
            for w in waiters:
                if not w.done():
                    w.set_result(None)

    async def _write(self, items: list[tuple[str, bytes]]) -> None:
        chunks = [items[i:i + MAX_TXN_OPS] for i in range(0, len(items), MAX_TXN_OPS)]
        for i in range(0, len(chunks), self.in_flight):
            group = chunks[i:i + self.in_flight]
            await asyncio.gather(*(self.etcd.put_many(c) for c in group))
            self.transactions += len(group)
        self.keys_written += len(items)


class FleetRegistration(Registration):
    """Registration (its keepalive and re-registration included) of many node records under one
    lease: 5,000 hosts cost etcd one lease refresh every ttl/3 instead of 1,500 per second."""

    def __init__(self, etcd: Etcd, node_records: list[NodeRecord], ttl: int = 10):
        super().__init__(etcd, node_records[0], ttl)
        self.records = node_records

    async def register(self) -> None:
        lease_id = await self.etcd.grant_lease(self.ttl)
        for r in self.records:
            r.epoch = lease_id
        # in transactions: one per MAX_TXN_OPS records (5,000 single puts took ~1.4 s, and the
        # scheduler read 5,000 watch events instead of 40)
        await self.etcd.put_many(((keys.node(r.name), records.dumps(r)) for r in self.records), lease=lease_id)
        self.lease_id = lease_id     # only now, as Registration does: a failed round registers again


class FleetService(agent_pb2_grpc.AgentServicer):
    """One gRPC server for N simulated nodes: each request goes to its node's AgentService."""

    def __init__(self, services: dict[str, AgentService]):
        self.services = services
        self.start_calls = self.specs_received = 0   # specs received again = the scheduler re-sent

    async def _service(self, node: str, context) -> AgentService:
        svc = self.services.get(node)
        if svc is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"node '{node}' is not simulated by this agent")
        return svc

    async def Start(self, request, context):
        self.start_calls += 1
        self.specs_received += len(request.instances)
        return await (await self._service(request.node, context)).Start(request, context)

    async def Stop(self, request, context):
        return await (await self._service(request.node, context)).Stop(request, context)

    async def Inventory(self, request, context):
        if request.node:
            return await (await self._service(request.node, context)).Inventory(request, context)
        # no node named: one list of every simulated node's instances
        entries = []
        for svc in self.services.values():
            entries += (await svc.Inventory(request, context)).instances
        return agent_pb2.InventoryResponse(node="", instances=entries)

    async def Logs(self, request, context):
        # a LogsRequest names the instance only; an instance runs on at most one node
        owner = next((s for s in self.services.values() if s.manager.is_active(request.instance_id)),
                     next(iter(self.services.values())))
        async for chunk in owner.Logs(request, context):
            yield chunk


class Fleet:
    """N simulated nodes on one etcd connection, one lease, one writer and one gRPC server."""

    def __init__(self, etcd: Etcd, names: list[str], state_dir: Path):
        self.etcd = etcd
        self.writer = CoalescingWriter(etcd)
        self.drivers = {kind: FakeDriver(kind, state_dir, write_logs=False) for kind in KINDS}
        self.managers = {n: InstanceManager(n, state_dir, self.drivers, Reporter(self.writer, n),
                                            store=NoHandleStore(), instant=True) for n in names}
        self.service = FleetService({n: AgentService(n, m) for n, m in self.managers.items()})
        self.registration: FleetRegistration | None = None

    async def attributes(self) -> dict[str, str]:
        attrs = {"simulated": "true"}
        for driver in self.drivers.values():
            attrs.update(await driver.fingerprint())
        return attrs

    async def register(self, address: str, capacity: dict[str, int], labels: dict[str, str],
                       ttl: int) -> None:
        attrs = await self.attributes()
        now = time.time()
        recs = [NodeRecord(name=n, address=address, capacity=capacity, labels=labels, attributes=attrs,
                           started_at=now) for n in self.managers]
        self.registration = FleetRegistration(self.etcd, recs, ttl=ttl)
        await self.registration.start()

    def running(self) -> int:
        return sum(len(m.instances) for m in self.managers.values())

    async def close(self) -> None:
        if self.registration:
            await self.registration.close()
        for m in self.managers.values():
            await m.shutdown()
        await self.writer.close()


async def serve(opts: dict, count: int) -> None:
    """`packyard-agent --simulate N`: the simulated nodes until SIGTERM / SIGINT."""
    heap = HeapKeeper()     # 100,000 instances are a million objects: see packyard/heap.py
    heap.start()
    etcd = Etcd(opts["etcd"], identity=opts["tls_identity"])
    await etcd.connect()
    state_dir = Path(tempfile.mkdtemp(prefix="packyard-sim-"))
    fleet = Fleet(etcd, node_names(opts["node"], count), state_dir)
    fleet.writer.start()
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20)],
                             interceptors=tls.server_interceptors(opts["tls_identity"]))
    agent_pb2_grpc.add_AgentServicer_to_server(fleet.service, server)
    port = tls.secure_server_port(server, opts["listen"], opts["tls_identity"])
    await server.start()
    address = opts["advertise"] or f"{opts['listen'].rpartition(':')[0]}:{port}"
    await fleet.register(address, vars(opts["capacity"]), opts["labels"], opts["lease_ttl"])
    log.info("simulating %d nodes %s-00000.. on %s", count, opts["node"], address)
    if opts["ready_file"]:
        opts["ready_file"].write_text(address)

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    svc = fleet.service
    log.info("simulated nodes stopping: %d instances running; received %d Start calls, %d instance specs; "
             "wrote %d keys in %d transactions", fleet.running(), svc.start_calls, svc.specs_received,
             fleet.writer.keys_written, fleet.writer.transactions)
    await server.stop(grace=1)
    await fleet.close()
    await etcd.close()
    await heap.stop(exiting=True)
