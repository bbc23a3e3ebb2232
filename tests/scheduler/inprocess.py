"""A scheduler and agents in the test's own event loop, on 127.0.0.1 ports, with real etcd and the
real gRPC services; agents use the FakeDriver. For fast tests of control-plane logic."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from agent.drivers.fake import FakeDriver
from agent.manager import InstanceManager
from agent.registration import Registration
from agent.reporter import Reporter
from agent.server import AgentService
from packyard.etcd import Etcd
from packyard.records import NodeRecord
from packyard.v1 import agent_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc
from scheduler.agents import AgentClients
from scheduler.controller import Controller, ControllerConfig
from scheduler.service import SchedulerService


@dataclass
class FakeAgent:
    name: str
    driver: FakeDriver
    manager: InstanceManager
    registration: Registration
    server: grpc.aio.Server

    async def kill(self) -> None:
        """Like SIGKILL: no more heartbeats or answers; the lease is left to expire."""
        await self.registration.close()
        await self.server.stop(grace=0)
        await self.manager.shutdown()


async def start_agent(etcd: Etcd, name: str, state_dir: Path, cpu=2000, memory=2 << 30,
                      labels=None, ttl=10, kinds=("container",), gpu=0) -> FakeAgent:
    drivers = {kind: FakeDriver(kind, state_dir) for kind in kinds}
    driver = drivers[kinds[0]]
    manager = InstanceManager(name, state_dir, drivers, Reporter(etcd, name))
    server = grpc.aio.server()
    holder: list[Registration] = []
    agent_pb2_grpc.add_AgentServicer_to_server(
        AgentService(name, manager, epoch=lambda: holder[0].lease_id if holder else None), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    record = NodeRecord(name=name, address=f"127.0.0.1:{port}",
                        capacity={"cpu_milli": cpu, "memory_bytes": memory, "gpu_milli": gpu * 1000},
                        labels=labels or {},
                        attributes={k: v for d in drivers.values() for k, v in (await d.fingerprint()).items()},
                        started_at=time.time())
    registration = Registration(etcd, record, ttl=ttl)
    holder.append(registration)
    await registration.start()
    return FakeAgent(name, driver, manager, registration, server)


@dataclass
class InProcessScheduler:
    controller: Controller
    server: grpc.aio.Server
    channel: grpc.aio.Channel
    stub: scheduler_pb2_grpc.SchedulerStub

    async def close(self) -> None:
        await self.channel.close()
        await self.server.stop(grace=0)
        await self.controller.stop()
        await self.controller.agents.close()

    async def submit(self, spec) -> scheduler_pb2.SubmitResponse:
        return await self.stub.Submit(scheduler_pb2.SubmitRequest(spec_json=spec.to_json()))

    async def status(self, name: str) -> scheduler_pb2.JobStatus:
        return await self.stub.Status(scheduler_pb2.StatusRequest(name=name))


async def start_scheduler(etcd: Etcd, config: ControllerConfig | None = None) -> InProcessScheduler:
    controller = Controller(etcd, AgentClients(timeout=2), config or ControllerConfig())
    await controller.start()
    server = grpc.aio.server()
    scheduler_pb2_grpc.add_SchedulerServicer_to_server(SchedulerService(controller), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    return InProcessScheduler(controller, server, channel, scheduler_pb2_grpc.SchedulerStub(channel))
