"""What the worker's consumer commits when acknowledgements come out of order or after a
rebalance (`streams/faust_wall.py`): offsets already committed are done, and a run of offsets that
was never delivered is found, so that it can be read again."""

from __future__ import annotations

from streams.faust_wall import drop_done, hole


def test_acknowledgements_below_the_committed_offset_are_done_and_dropped() -> None:
    """Records fetched before the seek to the committed offsets after a restart, and
    acknowledged before that offset was known: kept, offset 946 would stand at the head
    and the commit (next: 947) would never move again."""
    acked = [946, 947, 948, 950]
    assert drop_done(acked, 947) == [946]
    assert acked == [947, 948, 950]
    assert drop_done(acked, 947) == []  # nothing more to drop
    assert acked == [947, 948, 950]


def test_a_run_of_offsets_never_delivered_is_a_hole() -> None:
    assert hole([23, 24, 25], 22, in_flight=[]) == (22, 23)
    assert hole([5, 6], 2, in_flight=[7]) == (2, 5)  # what is in hand is after it


def test_offsets_in_hand_or_acknowledged_at_the_head_are_no_hole() -> None:
    assert hole([23, 24], 22, in_flight=[22]) is None  # delivered, being processed
    assert hole([22, 23, 25], 22, in_flight=[24]) is None  # the head is done: it commits
    assert hole([], 22, in_flight=[]) is None  # nothing acknowledged: nothing waits
    assert hole([23], None, in_flight=[]) is None  # where reading starts is not known yet
