"""scheduler.changes: which topics a batch of etcd keys touches, and who wakes up."""
import asyncio

import pytest

from packyard import keys
from scheduler.changes import EVERYTHING, JOBS, NODES, ChangeFeed, topics_of


@pytest.mark.parametrize("key,topics", [
    (keys.node("h1"), {NODES}),
    (keys.usage("h1"), {NODES}),
    (keys.job("shop"), {JOBS, "shop"}),
    (keys.deployment("shop"), {JOBS, "shop"}),
    (keys.instance("shop", "shop.web.0-ab12"), {NODES, JOBS, "shop"}),
    (keys.state("h1", "shop.web.0-ab12"), {NODES, JOBS, "shop"}),
    (keys.version("shop", 3), {"shop"}),
    (keys.profile("container"), set()),
    (keys.LEADER, set()),
], ids=["node", "usage", "job", "deployment", "instance", "report", "version", "profile", "leader"])
def test_topics_of_a_key(key, topics):
    assert topics_of([key]) == topics
    assert topics_of([key.encode()]) == topics


async def wakes(sub) -> bool:
    try:
        await asyncio.wait_for(sub.changed(), 0.05)
        return True
    except TimeoutError:
        return False


async def test_only_subscribers_of_a_touched_topic_wake_and_a_burst_is_one_wakeup():
    feed = ChangeFeed()
    shop, other, nodes = feed.subscribe("shop"), feed.subscribe("other"), feed.subscribe(NODES)
    for _ in range(5):
        feed.publish(topics_of([keys.job("shop")]))
    assert [await wakes(shop), await wakes(other), await wakes(nodes)] == [True, False, False]
    assert not await wakes(shop)                 # five publishes, one wake-up
    feed.publish({EVERYTHING})                   # a relist after compaction: everyone looks again
    assert [await wakes(shop), await wakes(other), await wakes(nodes)] == [True, True, True]
    shop.close()
    assert len(feed) == 2
