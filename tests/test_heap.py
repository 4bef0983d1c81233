"""The driver's heap while a queue runs (``pipeline.heap``): what is alive at the start
stays out of full collections, and is given back afterwards, so nothing is kept for good."""

from __future__ import annotations

import gc
import weakref

from saxs_pipeline.pipeline import heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


def test_frozen_garbage_is_collected_after_thaw() -> None:
    node = _Node()
    ref = weakref.ref(node)
    heap.freeze()
    try:
        assert gc.get_freeze_count() > 0
        del node
        gc.collect()
        assert ref() is not None  # frozen: out of the collector's reach
    finally:
        heap.thaw()
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert ref() is None  # given back: collected as usual


def test_objects_made_after_freeze_are_collected_while_frozen() -> None:
    heap.freeze()
    try:
        node = _Node()
        ref = weakref.ref(node)
        del node
        gc.collect()
        assert ref() is None
    finally:
        heap.thaw()
