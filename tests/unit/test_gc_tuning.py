"""The serving process's collector settings (``__main__._tune_gc``)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from tmcp_storage_server.__main__ import GC_YOUNG_THRESHOLD, _tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_startup_objects_are_frozen_and_young_collections_wait_longer(restored_gc: None) -> None:
    _, older, oldest = gc.get_threshold()
    kept = [[index] for index in range(100)]  # made before serving starts
    _tune_gc()
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, older, oldest)
    assert GC_YOUNG_THRESHOLD > 700  # Python's default, which batches overran constantly
    assert gc.get_freeze_count() >= len(kept)


def test_garbage_in_cycles_is_still_collected(restored_gc: None) -> None:
    _tune_gc()
    collected: list[str] = []

    class Node:
        def __init__(self) -> None:
            self.peer: object = self

        def __del__(self) -> None:
            collected.append("node")

    Node()
    gc.collect()
    assert collected == ["node"]
