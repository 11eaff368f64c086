"""The worker's garbage-collector settings: startup objects frozen, cycles still reclaimed."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from streams.runtime.heap import STREAM_THRESHOLDS, settle_for_streaming


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def settled() -> Iterator[None]:
    """Settled from CPython's own start (the test session settles too, tests/conftest.py),
    and left settled, as the session runs."""
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    settle_for_streaming()
    yield


def test_what_exists_at_startup_is_frozen_out_of_later_collections(settled: None) -> None:
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == STREAM_THRESHOLDS


def test_a_cycle_made_afterwards_is_still_reclaimed_without_an_explicit_collection(
        settled: None) -> None:
    a, b = Node(), Node()
    a.other, b.other = b, a
    alive = weakref.ref(a)
    del a, b
    assert alive() is not None  # a cycle: reference counting alone never frees it
    churn = [[] for _ in range(2 * STREAM_THRESHOLDS[0])]  # tracked allocations
    del churn
    assert alive() is None
