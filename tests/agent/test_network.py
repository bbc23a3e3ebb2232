"""agent/network.py: naming and address allocation, then a real bridge and namespaces."""
from __future__ import annotations

import ipaddress
import os
import subprocess
import time

import pytest
from pyroute2 import IPRoute

from agent import network as net
from tests.agent.conftest import needs_root

# -- pure parts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [net.bridge_name, net.veth_name], ids=["bridge", "veth"])
def test_interface_names_fit_and_differ(make):
    names = {make(f"node-{i}-with-a-rather-long-name.example.org") for i in range(200)}
    assert len(names) == 200
    assert all(len(n) <= net.IFNAMSIZ for n in names)
    assert make("a") == make("a")


def test_netns_names_from_node_and_instance():
    assert net.netns_name("n1/job.g.0-ab") != net.netns_name("n2/job.g.0-ab")
    assert net.netns_path("n1/x") == f"/var/run/netns/{net.netns_name('n1/x')}"


def test_addresses_skip_gateway_and_survive_restart(tmp_path):
    pool = net.AddressPool("10.213.7.0/29", tmp_path)
    assert pool.gateway == "10.213.7.1"
    a, b = pool.allocate("a"), pool.allocate("b")
    assert (a, b) == ("10.213.7.2", "10.213.7.3")
    assert pool.allocate("a") == a                          # idempotent per key
    again = net.AddressPool("10.213.7.0/29", tmp_path)      # agent restart
    assert again.lookup("a") == a and again.allocate("c") == "10.213.7.4"
    again.release("a")
    assert again.allocate("d") == a                         # freed addresses are reused
    for key in ("e", "f"):
        again.allocate(key)
    with pytest.raises(net.NetworkError, match="no free address"):
        again.allocate("g")


@pytest.mark.parametrize("subnet", ["10.213.0.0/30", "fd00::/64"], ids=["too-small", "ipv6"])
def test_unusable_subnets(tmp_path, subnet):
    with pytest.raises(net.NetworkError):
        net.AddressPool(subnet, tmp_path)


# -- real bridge and namespaces -------------------------------------------------------------------

def links(prefix: str) -> set[str]:
    with IPRoute() as ipr:
        return {link.get("ifname") for link in ipr.get_links() if link.get("ifname", "").startswith(prefix)}


def ping(address: str) -> bool:
    return subprocess.run(["/bin/busybox", "ping", "-c1", "-W1", address],
                          capture_output=True).returncode == 0


@pytest.fixture
def host_network(node, subnet, state_dir):
    hn = net.HostNetwork(net.bridge_name(node), subnet, state_dir)
    keys: list[str] = []
    yield hn, keys
    for key in keys:
        hn.detach(key)
    hn.teardown()


@pytest.mark.integration
@needs_root()
def test_bridge_namespaces_and_veths(host_network, node, subnet, state_dir):
    hn, keys = host_network
    t0 = time.perf_counter()
    hn.setup()
    hn.setup()                                               # idempotent (agent restart)
    keys += [f"{node}/a", f"{node}/b"]
    a, b = hn.attach(keys[0]), hn.attach(keys[1])
    print(f"setup + 2 attaches: {(time.perf_counter() - t0) * 1000:.1f} ms")
    assert a.address != b.address
    assert {ipaddress.ip_address(x.address) in ipaddress.ip_network(subnet) for x in (a, b)} == {True}
    assert os.path.exists(a.netns_path) and links(a.veth) == {a.veth}
    assert ping(a.address) and ping(b.address)               # host -> bridge -> veth -> eth0
    # a second network object on the same state dir (agent restart) knows the allocations
    again = net.HostNetwork(net.bridge_name(node), subnet, state_dir)
    assert again.pool.lookup(keys[0]) == a.address and again.attached(keys[0])
    hn.detach(keys[0])
    hn.detach(keys[0])                                       # idempotent
    assert not os.path.exists(a.netns_path) and not links(a.veth)
    assert not ping(a.address) and ping(b.address)
    hn.detach(keys[1])
    hn.teardown()
    assert not links(hn.bridge)


@pytest.mark.integration
@needs_root()
def test_overlapping_subnet_refused(host_network, subnet, state_dir):
    hn, _ = host_network
    hn.setup()
    other = net.HostNetwork("pybtestover", subnet, state_dir / "other")
    with pytest.raises(net.NetworkError, match="overlaps"):
        other.setup()
    assert not links("pybtestover")
