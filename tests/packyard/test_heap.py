"""packyard/heap.py: what is alive gets frozen out of the collector's sight, a cycle dropped
after it was frozen is still collected at the next full pass, and pauses are observed."""
import asyncio
import gc
import weakref

from packyard.heap import HeapKeeper


class Node:
    def __init__(self):
        self.other = None


async def test_freezes_then_collects_cycles_frozen_in_use():
    pauses = []
    keeper = HeapKeeper(freeze_every=0.05, full_every=0.3, observe=lambda gen, s: pauses.append((gen, s)))
    a, b = Node(), Node()
    a.other, b.other = b, a          # a cycle, alive while frozen
    gone = weakref.ref(a)
    try:
        keeper.start()
        await asyncio.sleep(0.12)
        assert gc.get_freeze_count() > 0
        del a, b
        gc.collect()                 # frozen: an ordinary collection cannot see the cycle
        assert gone() is not None
        for _ in range(40):          # the next full pass unfreezes and collects it
            await asyncio.sleep(0.05)
            if gone() is None:
                break
        assert gone() is None
        assert any(gen == 2 for gen, _ in pauses)
    finally:
        await keeper.stop()
    assert gc.get_freeze_count() == 0


async def test_a_keeper_stopped_at_exit_leaves_the_heap_frozen():
    """The collection at the interpreter's exit would scan the whole cache; frozen, it does not."""
    alive = [Node() for _ in range(100)]
    keeper = HeapKeeper(freeze_every=10)
    try:
        keeper.start()
        await keeper.stop(exiting=True)
        assert gc.get_freeze_count() >= len(alive)
        assert not any(o is alive for o in gc.get_objects())      # out of every generation's sight
    finally:
        gc.unfreeze()
