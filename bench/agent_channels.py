"""What the scheduler's gRPC channels to agents cost in memory (issue 12: RSS at 100,000).

    python bench/agent_channels.py [--nodes 5000]

N nodes at one address (a simulated fleet: bench/scale.py's 5,000 hosts are one agent process),
one Inventory call each, in a process of its own per way of dialling them:
- `per node`: a channel per node (what AgentClients did for plaintext too, and does under TLS,
  where the agent must prove it is that node; also what N agents at N addresses cost);
- `AgentClients`: scheduler/agents.py's clients in plaintext (the nodes at one address share one).
Prints the RSS each way added (all of it outside Python's heap: gRPC's own memory).
"""
from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


async def one_way(way: str, nodes: int) -> None:
    import grpc

    from packyard import tls
    from packyard.v1 import agent_pb2, agent_pb2_grpc
    from scheduler.agents import AgentClients

    class Agent(agent_pb2_grpc.AgentServicer):
        async def Inventory(self, request, context):
            return agent_pb2.InventoryResponse()

    server = grpc.aio.server()
    agent_pb2_grpc.add_AgentServicer_to_server(Agent(), server)
    address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    await server.start()
    clients = AgentClients()
    await clients.inventory("warm-up", address)     # gRPC's own start-up is not counted
    before = rss_mib()
    channels = []
    for i in range(nodes):
        if way == "per node":
            channels.append(tls.dial(address, None, "agent", aio=True, node=f"n{i}"))
            await agent_pb2_grpc.AgentStub(channels[-1]).Inventory(agent_pb2.InventoryRequest(node=f"n{i}"))
        else:
            await clients.inventory(f"n{i}", address)
    added = rss_mib() - before
    print(f"{way:>12}: {nodes:,} nodes at one address, RSS +{added:.1f} MiB "
          f"({added * 2**20 / nodes / 1000:.1f} kB a node)", flush=True)
    for channel in channels:
        await channel.close()
    await clients.close()
    await server.stop(None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=5000)
    p.add_argument("--way", choices=["per node", "AgentClients"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.way:
        asyncio.run(one_way(args.way, args.nodes))
        return
    for way in ("per node", "AgentClients"):    # each in a fresh process: RSS is per process
        subprocess.run([sys.executable, __file__, "--nodes", str(args.nodes), "--way", way], check=True)


if __name__ == "__main__":
    main()
