"""The scheduler's index of which ready hosts hold a registry image, from the agents' node records."""
from __future__ import annotations

import itertools

from packyard import keys, records
from packyard.etcd import Event
from packyard.records import NodeRecord
from scheduler.images import ImageIndex
from scheduler.state import ClusterState

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
REF = "10.213.0.1:5000/team/app:1"
revision = itertools.count(1)


def put_node(state: ClusterState, name: str, images) -> set[str]:
    record = NodeRecord(name=name, address=f"{name}:1", capacity={"cpu_milli": 1000}, images=images)
    return state.apply(Event("put", keys.node(name), records.dumps(record), next(revision)))


def test_a_tag_matches_the_hosts_whose_last_pull_of_it_is_kept_with_their_bytes():
    state, index = ClusterState(), None
    put_node(state, "a", [{"digest": D1, "references": [REF], "bytes": 30}])
    put_node(state, "b", [{"digest": D2, "references": [REF], "bytes": 50},
                          {"digest": D1, "references": [], "bytes": 30}])
    put_node(state, "c", [])
    index = ImageIndex(state)
    assert index.holders(REF) == {"a": 30, "b": 50}
    assert index.holders(f"10.213.0.1:5000/team/app@{D1}") == {"a": 30, "b": 30}   # a digest pin
    assert index.holders(f"10.213.0.1:5000/team/app:1@{D2}") == {"b": 50}
    assert index.holders("10.213.0.1:5000/team/app:2") == {}
    assert index.holders("/srv/rootfs") == {}         # a host path is no registry image


def test_the_index_follows_node_records_and_a_changed_image_list_disturbs_no_job():
    state = ClusterState()
    put_node(state, "a", [])
    index = ImageIndex(state)
    assert index.holders(REF) == {}
    # the agent pulled: its record changes, no job has to look again (it is only a tie-break)
    assert put_node(state, "a", [{"digest": D1, "references": [REF], "bytes": 7}]) == set()
    assert index.holders(REF) == {"a": 7}
    state.apply(Event("delete", keys.node("a"), b"", next(revision)))     # down: holds nothing usable
    assert index.holders(REF) == {}


def test_a_malformed_image_list_is_ignored_not_fatal():
    state = ClusterState()
    put_node(state, "a", [{"digest": D1, "references": "not-a-list", "bytes": "big"}, "junk", 3])
    put_node(state, "b", {"not": "a list"})
    assert ImageIndex(state).holders(f"r.example:5000/x@{D1}") == {"a": 1}
