"""The agent's etcd loops across a real etcd outage: state reports are queued and written once etcd
is back (the latest per instance), and the node's registration keeps its lease through the outage,
replacing it only when etcd says it expired."""
import asyncio

import pytest

from agent.registration import Registration
from agent.reporter import Reporter
from packyard import keys, records
from packyard.etcd import Etcd
from packyard.records import NodeRecord, StateRecord
from scheduler.embedded_etcd import EtcdCluster
from tests.conftest import eventually


@pytest.fixture
def one_member(tmp_path):
    with EtcdCluster(tmp_path, (23904,), tie_to_parent=True) as c:
        yield c


@pytest.fixture
async def client(one_member):
    etcd = Etcd(one_member.endpoints, retry_for=0.5)
    await etcd.connect()
    yield etcd
    await etcd.close()


async def stored_state(etcd: Etcd, node: str, iid: str) -> str | None:
    raw = await etcd.get(keys.state(node, iid))
    return records.loads(StateRecord, raw).state if raw else None


async def test_reports_during_an_outage_are_written_afterwards(one_member, client):
    reporter = Reporter(client, "n1", retry_every=0.2)
    await reporter.report(StateRecord(id="a", state="starting"))
    assert await stored_state(client, "n1", "a") == "starting"
    one_member.kill()
    await reporter.report(StateRecord(id="a", state="running"))      # must not raise
    await reporter.report(StateRecord(id="a", state="exited"), StateRecord(id="b", state="starting"))
    assert set(reporter.queued) == {"a", "b"}
    one_member.start()
    await eventually(lambda: not reporter.queued, timeout=20, what="the queue written")
    assert await stored_state(client, "n1", "a") == "exited"         # the latest, not "running"
    assert await stored_state(client, "n1", "b") == "starting"
    await reporter.close()


async def test_registration_keeps_its_lease_through_an_outage(one_member, client):
    reg = Registration(client, NodeRecord(name="n1", address="127.0.0.1:1", capacity={}), ttl=3)
    await reg.start()
    first = reg.lease_id
    one_member.kill()
    await asyncio.sleep(4)                   # longer than the TTL: etcd restores leases on restart
    one_member.start()
    await reg.keep()
    assert reg.lease_id == first
    assert await client.get(keys.node("n1")) is not None
    await reg.close()


async def test_expired_lease_is_replaced_and_node_put_again(client):
    reg = Registration(client, NodeRecord(name="n1", address="127.0.0.1:1", capacity={}), ttl=3)
    await reg.start()
    first = reg.lease_id
    await client.revoke_lease(first)         # as if it expired: the node record went with it
    assert await client.get(keys.node("n1")) is None
    await reg.keep()
    assert reg.lease_id != first
    assert await client.get(keys.node("n1")) is not None
    await reg.close()
