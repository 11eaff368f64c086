"""Input alignment: which partitions to pause so that none is read far ahead, in event time,
of the slowest one still being read."""

from dataclasses import dataclass

from streams.runtime.alignment import Alignment, InputOrder, Reorder

SKEW = 5_000


def aligned(**latest: tuple[int, int]) -> Alignment[str]:
    """Partitions named by keyword: (event time read up to, offset read up to)."""
    alignment: Alignment[str] = Alignment(SKEW)
    for partition, (event_ms, offset) in latest.items():
        alignment.observe(partition, offset, event_ms)
    return alignment


def test_a_partition_far_ahead_of_the_slowest_one_still_being_read_is_paused() -> None:
    alignment = aligned(a=(100_000, 9), b=(104_000, 9), c=(130_000, 9))
    ends = {"a": 50, "b": 50, "c": 50}
    assert alignment.ahead(ends, ends.get) == {"c"}


def test_the_slowest_partition_is_never_paused_so_reading_goes_on() -> None:
    alignment = aligned(a=(100_000, 9), b=(900_000, 9))
    assert alignment.ahead(["a", "b"], lambda p: 50) == {"b"}
    alignment.observe("a", 10, 2_000_000)  # a leaps ahead: now b is the slowest
    assert alignment.ahead(["a", "b"], lambda p: 50) == {"a"}


def test_a_partition_read_to_its_end_is_not_waited_for() -> None:
    # Live traffic, or a key range gone quiet: nothing is left to read on "a", so "b" runs on.
    alignment = aligned(a=(100_000, 49), b=(900_000, 9))
    assert alignment.ahead(["a", "b"], {"a": 50, "b": 50}.get) == set()
    assert alignment.ahead(["a", "b"], {"a": None, "b": 50}.get) == set()


def test_partitions_not_read_yet_and_revoked_ones_are_left_alone() -> None:
    alignment = aligned(a=(100_000, 9), b=(900_000, 9))
    assert alignment.ahead(["a", "b", "new"], lambda p: 50) == {"b"}
    alignment.forget(["b"])  # a went to another worker
    assert alignment.ahead(["b"], lambda p: 50) == set()
    assert "a" not in alignment.latest_ms


def test_the_watermark_is_the_slowest_partition_still_being_read_or_none_when_all_is_read(
) -> None:
    alignment = aligned(a=(100_000, 9), b=(130_000, 9))
    assert alignment.watermark_ms(["a", "b"], lambda p: 50) == 100_000
    assert alignment.watermark_ms(["a", "b"], {"a": 10, "b": 50}.get) == 130_000
    assert alignment.watermark_ms(["a", "b"], lambda p: 10) is None


def test_a_partition_read_to_its_end_holds_the_watermark_until_it_has_been_idle_a_while(
) -> None:
    """The end a stage knows is the broker's of up to a second before, while the stage before
    it writes on: "a" read to that end may have its next records on their way, so "b"'s later
    records wait for them, or for "a" to have delivered nothing for `idle_seconds`."""
    alignment: Alignment[str] = Alignment(SKEW, idle_seconds=2.0)
    alignment.observe("a", 9, 100_000, now_s=10.0)
    alignment.observe("b", 9, 130_000, now_s=10.0)
    ends = {"a": 10, "b": 50}.get  # a read to its end as last known
    assert alignment.watermark_ms(["a", "b"], ends, now_s=11.0) == 100_000
    assert alignment.ahead(["a", "b"], ends, now_s=11.0) == {"b"}
    alignment.observe("a", 10, 131_000, now_s=11.5)  # its next record came: in order
    assert alignment.watermark_ms(["a", "b"], ends, now_s=12.0) == 130_000
    assert alignment.watermark_ms(["a", "b"], ends, now_s=13.6) == 130_000  # a idle now
    assert alignment.watermark_ms(["a", "b"], {"a": 11, "b": 10}.get, now_s=13.6) is None


def test_a_partition_assigned_that_never_delivers_holds_back_only_until_it_is_idle() -> None:
    order: InputOrder[str, str] = InputOrder.within(SKEW, max_hold_seconds=60.0,
                                                    idle_seconds=2.0)
    order.take("a", 0, [100_000], "a0", "a0", now_s=0.0)
    ends = {"a": 1, "b": 0}.get  # b has nothing yet, as far as anyone knows
    assert order.release(["a", "b"], lambda p: 0, ends, now_s=1.0) == []
    order.take("b", 0, [90_000], "b0", "b0", now_s=1.5)  # it had: written meanwhile
    assert order.release(["a", "b"], lambda p: 0, {"a": 1, "b": 1}.get, now_s=1.6) == ["b0"]
    assert order.release(["a", "b"], lambda p: 0, {"a": 1, "b": 1}.get, now_s=3.6) == ["a0"]


def test_held_records_come_out_in_event_time_order_once_the_watermark_passes_them() -> None:
    reorder: Reorder[int, str] = Reorder(max_hold_seconds=2.0)
    for key, (event_ms, name) in enumerate([(300, "c"), (100, "a"), (200, "b"), (900, "z")]):
        assert reorder.hold(key, event_ms, name, name, now_s=0.0)
    assert not reorder.hold(0, 300, "c", "c again", now_s=0.0)  # read again: held once
    assert reorder.release(250, now_s=0.5) == ["a", "b"]
    assert reorder.release(250, now_s=1.0) == []
    assert reorder.release(None, now_s=1.0) == ["c", "z"]  # everything is read: all go


def test_what_is_held_goes_without_the_watermark_once_the_input_stalls_or_over_the_limit(
        ) -> None:
    reorder: Reorder[int, str] = Reorder(max_hold_seconds=2.0, max_held=2)
    reorder.hold(1, 500, "late", "late", now_s=0.0)
    reorder.hold(2, 600, "later", "later", now_s=1.5)
    assert reorder.release(100, now_s=3.4) == []  # held 3.4 s, but the input still delivers
    assert reorder.release(100, now_s=3.5) == ["late", "later"]  # nothing read for 2 s
    reorder.hold(6, 650, "w", "w", now_s=3.6)
    reorder.waiting(now_s=9.0)  # a batch ran from 3.6 to 9.0: the input had no chance
    assert reorder.release(100, now_s=10.9) == []
    assert reorder.release(100, now_s=11.0) == ["w"]
    reorder.hold(3, 700, "x", "x", now_s=12.0)
    reorder.hold(4, 800, "y", "y", now_s=12.0)
    reorder.hold(5, 900, "z", "z", now_s=12.0)
    assert reorder.release(100, now_s=12.1) == ["x"]  # three held, two allowed


def test_a_slow_reader_holds_one_partitions_records_until_the_others_reach_it() -> None:
    """The consumer hands over one partition's fetched records before the next's; a stage
    that reads slowly (the model's) must not let the first partition's go ahead while the
    others' are still to come, however long that takes."""
    order: InputOrder[str, str] = InputOrder.within(5_000, max_hold_seconds=10.0)
    ends = {"a": 100, "b": 100}
    released = []
    for n in range(60):  # a's fetched chunk: one record a second, 60 s of wall time
        order.take("a", n, [n * 10_000], f"a{n}", f"a{n}", now_s=float(n))
        released += order.release(["a", "b"], lambda p: 0, ends.get, now_s=float(n))
    assert released == []
    for n in range(60):  # then b's
        order.take("b", n, [n * 10_000 + 1], f"b{n}", f"b{n}", now_s=60.0 + n)
        released += order.release(["a", "b"], lambda p: 0, ends.get, now_s=60.0 + n)
    assert released == sorted(released, key=lambda name: (int(name[1:]), name[0]))
    assert len(released) == 119  # b's last holds a's last back: b has records left


def test_records_of_revoked_partitions_are_given_up_not_released() -> None:
    reorder: Reorder[tuple[str, int], str] = Reorder(max_hold_seconds=2.0)
    reorder.hold(("a", 1), 100, "a1", "a1", now_s=0.0)
    reorder.hold(("b", 1), 50, "b1", "b1", now_s=0.0)
    assert reorder.abandon(lambda key: key[0] == "b") == ["b1"]
    assert reorder.release(None, now_s=0.0) == ["a1"]


def test_a_partition_with_records_left_that_has_delivered_none_yet_holds_everything_back(
) -> None:
    # At start, or after a rebalance, the first fetch may bring one partition only: what it
    # brings must wait for the others' first records, or they would all arrive late.
    alignment = aligned(a=(100_000, 9))
    alignment.seed("b", 40)  # its committed offset
    assert alignment.watermark_ms(["a", "b"], lambda p: 50) == -1
    assert alignment.ahead(["a", "b"], lambda p: 50) == set()  # only held, never paused for it
    assert alignment.watermark_ms(["a", "b"], {"a": 50, "b": 40}.get) == 100_000  # b: all read


def test_a_start_learnt_late_replaces_the_one_guessed(
) -> None:
    """Records arrive before the worker's seek to the committed offsets: a partition is first
    seeded with 0 (its start not known yet), or with where the last assignment started. Kept,
    a partition whose committed offset is its end would hold the watermark at -1 for good,
    with nothing left to read that could move it (1,280 records held, seen after a SIGKILL)."""
    alignment = aligned(a=(100_000, 1450))
    ends = {"a": 1451, "b": 2580}
    alignment.seed("b", 0)  # not known yet
    assert alignment.watermark_ms(["a", "b"], ends.get) == -1
    alignment.seed("b", 2580)  # the seek: committed to its end by the worker before
    assert alignment.watermark_ms(["a", "b"], ends.get) is None  # nothing left to read
    alignment.seed("b", 0)  # a start never moves a partition back
    assert alignment.watermark_ms(["a", "b"], ends.get) is None


def test_the_records_of_messages_spanning_minutes_come_out_interleaved_in_event_time() -> None:
    """A replay's messages each hold a stage's batch of a backlog: minutes of event time. Each
    record is held on its own, so two partitions' messages over the same minutes come out as
    one sequence in event time, not one message's block after the other's."""
    @dataclass(frozen=True)
    class Rec:
        event_id: str
        ts_ms: int

    order: InputOrder[str, tuple[str, list]] = InputOrder.within(5_000, max_hold_seconds=10.0)
    a = [(Rec(f"a{n}", n * 60_000), f"item a{n}") for n in range(5)]  # 0..4 min
    b = [(Rec(f"b{n}", n * 60_000 + 30_000), f"item b{n}") for n in range(5)]  # 0.5..4.5 min
    assert order.take_records("a", 0, a, "message a", now_s=0.0)
    assert order.release(["a", "b"], lambda p: 0, {"a": 1, "b": 1}.get, now_s=0.0) == []
    assert order.take_records("b", 0, b, "message b", now_s=0.0)
    assert not order.take_records("b", 0, b, "message b read again", now_s=0.0)
    released = order.release(["a", "b"], lambda p: 0, {"a": 1, "b": 1}.get, now_s=0.0)
    assert [items[0][0].event_id for _, items in released] == [
        "a0", "b0", "a1", "b1", "a2", "b2", "a3", "b3", "a4", "b4"]
    assert {message for message, _ in released} == {"message a", "message b"}
