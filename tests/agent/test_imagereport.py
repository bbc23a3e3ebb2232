"""Publishing the image store's contents with the node record: the latest list wins, one put at a
time, retried while etcd is away; and Registration.update keeps the old values if the put failed."""
from __future__ import annotations

import asyncio

import pytest

from agent import imagereport
from agent.imagereport import ImageReport
from agent.registration import Registration
from packyard import keys, records
from packyard.records import NodeRecord
from tests.conftest import eventually

A = [{"digest": "sha256:" + "a" * 64, "references": ["r.example:5000/a:1"], "bytes": 5}]
B = [*A, {"digest": "sha256:" + "b" * 64, "references": ["r.example:5000/b:1"], "bytes": 7}]


class FlakyEtcd:
    """put() fails `failures` times, then keeps what it was given."""

    def __init__(self, failures: int = 0):
        self.failures = failures
        self.puts: list[NodeRecord] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def put(self, key, value, lease=None):
        await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise ConnectionError("etcd away")
        assert key == keys.node("n1") and lease == 9
        self.puts.append(records.loads(NodeRecord, value))


def registration(etcd) -> Registration:
    r = Registration(etcd, NodeRecord(name="n1", address="x:1", capacity={"cpu_milli": 1}))
    r.lease_id = 9
    return r


async def test_the_latest_list_is_published_and_a_failed_put_is_tried_again(monkeypatch):
    monkeypatch.setattr(imagereport, "RETRY", 0.01)
    etcd = FlakyEtcd(failures=2)
    report = ImageReport(registration(etcd))
    task = asyncio.get_running_loop().create_task(report.run())
    try:
        report.changed(A)
        await eventually(lambda: etcd.puts, timeout=2, what="a put")
        assert etcd.puts[-1].images == A
        etcd.gate.clear()                  # a put in flight while two more changes come
        report.changed(B)
        await asyncio.sleep(0.01)
        report.changed(A)
        report.changed(B)
        etcd.gate.set()
        await eventually(lambda: len(etcd.puts) >= 2 and etcd.puts[-1].images == B, timeout=2, what="B")
        await asyncio.sleep(0.05)
        assert [p.images for p in etcd.puts][-1] == B and len(etcd.puts) <= 3   # coalesced, latest last
    finally:
        task.cancel()


async def test_a_failed_update_keeps_the_old_values():
    etcd = FlakyEtcd(failures=1)
    r = registration(etcd)
    with pytest.raises(ConnectionError):
        await r.update(images=A, attributes={"k": "v"})
    assert r.record.images == [] and r.record.attributes == {}
    await r.update(images=A)
    assert etcd.puts[-1].images == A and r.record.images == A
