"""The leader's garbage-collection policy: frozen cache, periodic full collection."""

import gc
import time
import weakref

from operatord.manager import refreeze_heap


class Node:
    def __init__(self):
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_cycles_that_die_after_the_freeze_are_freed_by_the_periodic_collection():
    try:
        node = Node()
        ref = weakref.ref(node)
        gc.freeze()
        frozen_at = time.monotonic() - 10
        del node
        gc.collect()
        assert ref() is not None  # frozen: ordinary collections never look at it
        assert refreeze_heap(frozen_at, every=60) == frozen_at  # not due yet
        assert ref() is not None
        again = refreeze_heap(frozen_at, every=5)
        assert again is not None and again > frozen_at
        assert ref() is None
        assert gc.get_freeze_count() > 0  # frozen again afterwards
        assert refreeze_heap(None, every=0) is None  # never frozen: nothing to do
    finally:
        gc.unfreeze()
