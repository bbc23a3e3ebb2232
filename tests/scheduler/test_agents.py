"""AgentClients: which calls share a gRPC channel. In plaintext the nodes at one address share
one (a channel is ~11 kB of gRPC's memory: a simulated fleet's 5,000 nodes at one address held
56 MiB of them); under TLS each node has its own, since the agent must prove it is that node."""
import random

import grpc
import pytest

from packyard import tls
from packyard.v1 import agent_pb2, agent_pb2_grpc
from scheduler.agents import AgentClients


def fleet(seed: int) -> list[tuple[str, str]]:
    """(node, address) pairs: some addresses shared by several nodes, some nodes at several."""
    rng = random.Random(seed)
    addresses = [f"127.0.0.1:{rng.randrange(1024, 65536)}" for _ in range(rng.randint(1, 6))]
    nodes = [f"n{i}" for i in range(rng.randint(1, 30))]
    return [(rng.choice(nodes), rng.choice(addresses)) for _ in range(rng.randint(1, 60))]


@pytest.mark.parametrize("seed", range(8))
async def test_plaintext_nodes_at_one_address_share_its_channel(seed):
    clients = AgentClients()
    pairs = fleet(seed)
    stubs = {pair: clients.stub(*pair) for pair in pairs}
    for (node, address), stub in stubs.items():
        assert clients.stub(node, address) is stub
    assert len({id(s) for s in stubs.values()}) == len({address for _, address in pairs})
    await clients.close()


@pytest.mark.parametrize("seed", range(4))
async def test_under_tls_each_node_has_its_channel(seed, tmp_path):
    tls.init(tmp_path)
    clients = AgentClients(identity=tls.load(tmp_path, "scheduler"))
    pairs = fleet(seed)
    stubs = {pair: clients.stub(*pair) for pair in pairs}
    for (node, address), stub in stubs.items():
        assert clients.stub(node, address) is stub
    assert len({id(s) for s in stubs.values()}) == len(set(pairs))
    await clients.close()


class Recording(agent_pb2_grpc.AgentServicer):
    def __init__(self):
        self.nodes: list[str] = []

    async def Inventory(self, request, context):
        self.nodes.append(request.node)
        return agent_pb2.InventoryResponse()


async def test_a_shared_channel_still_names_each_node_in_its_calls():
    server, agent = grpc.aio.server(), Recording()
    agent_pb2_grpc.add_AgentServicer_to_server(agent, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    clients = AgentClients()
    try:
        nodes = [f"n{i}" for i in random.Random(1).sample(range(1000), 12)]
        for node in nodes:
            await clients.inventory(node, f"127.0.0.1:{port}")
        assert agent.nodes == nodes
    finally:
        await clients.close()
        await server.stop(None)
