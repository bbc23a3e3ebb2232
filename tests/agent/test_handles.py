"""agent/handles.py: the three handle stores keep one contract (save, forget, saved in id order)."""
from __future__ import annotations

import json
import os
import stat

import pytest

from agent.drivers.base import Handle, InstanceSpec
from agent.handles import FileHandleStore, MemoryHandleStore, NoHandleStore
from packyard.policies import CheckPolicy, RestartPolicy


def spec(instance_id: str, gpus: tuple[int, ...] = ()) -> InstanceSpec:
    return InstanceSpec(id=instance_id, job="j", group="g", kind="container", cpu_milli=100,
                        memory_bytes=1 << 20, config={"env": {"A": "1"}}, gpus=gpus)


@pytest.fixture(params=["file", "memory"])
def store(request, tmp_path):
    return FileHandleStore(tmp_path / "handles") if request.param == "file" else MemoryHandleStore()


def test_saved_in_id_order_until_forgotten(store):
    handle = Handle("b", "container", {"pid": 7, "gpus": [1, 3]})
    store.save(spec("b", gpus=(1, 3)), handle)
    store.save(spec("a"), Handle("a", "container"))
    handle.data["pid"] = 8                         # changed after saving: not saved
    assert list(store.saved()) == [(spec("a"), Handle("a", "container")),
                                   (spec("b", gpus=(1, 3)), Handle("b", "container", {"pid": 7, "gpus": [1, 3]}))]
    store.forget("a")
    store.forget("a")                              # idempotent
    assert [s.id for s, _ in store.saved()] == ["b"]


def test_policies_come_back_as_they_were_saved(store):
    kept = InstanceSpec(id="p", job="j", group="g", kind="container", cpu_milli=100, memory_bytes=1 << 20,
                        config={}, job_type="batch", restart=RestartPolicy(3, 60.0, 1.5, "delay"),
                        check=CheckPolicy("exec", ("/bin/check", "-q"), interval=2.0, timeout=1.0))
    store.save(kept, Handle("p", "container"))
    assert list(store.saved()) == [(kept, Handle("p", "container"))]


def test_forgetting_while_iterating(store):
    for i in "abc":
        store.save(spec(i), Handle(i, "container"))
    seen = []
    for s, _ in store.saved():
        seen.append(s.id)
        store.forget(s.id)
    assert seen == ["a", "b", "c"] and list(store.saved()) == []


def test_file_store_keeps_the_agents_layout_and_drops_unreadable_files(tmp_path):
    store = FileHandleStore(tmp_path / "handles")
    store.save(spec("a", gpus=(2,)), Handle("a", "container", {"netns": "pyn-x"}))
    data = json.loads((tmp_path / "handles" / "a.json").read_text())
    assert data["handle"]["data"] == {"netns": "pyn-x"} and data["spec"]["gpus"] == [2]
    del data["spec"]["gpus"]                        # written by an agent before GPU devices
    (tmp_path / "handles" / "old.json").write_text(json.dumps(
        {**data, "spec": {**data["spec"], "id": "old"}}))
    (tmp_path / "handles" / "bad.json").write_text("{not json")
    (tmp_path / "handles" / "odd.json").write_text(json.dumps({"spec": {"id": "odd"}, "handle": {}}))
    assert [(s.id, s.gpus) for s, _ in store.saved()] == [("a", (2,)), ("old", ())]
    assert sorted(p.name for p in (tmp_path / "handles").iterdir()) == ["a.json", "old.json"]


def test_no_store_keeps_nothing():
    store = NoHandleStore()
    store.save(spec("a"), Handle("a", "container"))
    store.forget("b")
    assert list(store.saved()) == []


def test_saved_handles_hold_the_env_and_are_0600_whatever_the_umask(tmp_path):
    store = FileHandleStore(tmp_path / "handles")
    old = os.umask(0)
    try:
        store.save(spec("a"), Handle("a", "container"))
    finally:
        os.umask(old)
    path = tmp_path / "handles" / "a.json"
    assert json.loads(path.read_text())["spec"]["config"]["env"] == {"A": "1"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
