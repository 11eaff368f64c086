from detectors.windows import ActivityCounter, SlidingWindow, drop_idle


def test_sliding_window_refuses_duplicates_and_late_events_and_evicts():
    window: SlidingWindow[int] = SlidingWindow(length_ms=1000)
    evicted: list[int] = []
    assert window.add(0, "a", 1, evicted.append)
    assert not window.add(0, "a", 1, evicted.append)  # redelivered
    assert window.add(900, "b", 2, evicted.append)
    assert window.add(1500, "c", 3, evicted.append)
    assert evicted == [1] and list(window) == [2, 3]
    assert not window.add(100, "d", 4)  # older than the window
    assert window.start_ms == 900


def test_activity_counter_counts_within_the_window_only():
    counter = ActivityCounter(length_ms=120_000, bin_ms=60_000)
    assert [counter.observe("a", t) for t in (0, 10_000, 70_000)] == [1, 2, 3]
    assert counter.observe("a", 250_000) == 1  # the first minutes fell out of the window
    assert counter.observe("b", 250_000) == 1
    assert counter.forget_idle(600_000) == 2 and not counter.bins


def test_activity_counter_counts_a_redelivered_event_once():
    counter = ActivityCounter(length_ms=120_000, bin_ms=60_000, max_recent_ids=2)
    assert [counter.observe("a", t, f"e{t}") for t in (0, 10_000, 20_000)] == [1, 2, 3]
    assert counter.observe("a", 20_000, "e20000") == 3  # redelivered after a restart
    assert counter.observe("a", 10_000, "e10000") == 3
    assert counter.observe("a", 0, "e0") == 4  # older than the ids it keeps: counted again
    assert counter.observe("b", 0, "e0") == 1  # ids are per entity
    assert counter.forget_idle(600_000) == 2 and not counter.recent_ids


def test_drop_idle_removes_only_entities_last_seen_before_the_horizon():
    states = {"old": 100, "edge": 500, "new": 900}
    assert drop_idle(states, lambda last: last, horizon_ms=500) == 1
    assert states == {"edge": 500, "new": 900}


def test_out_of_order_items_take_their_place_so_any_arrival_order_gives_one_window():
    events = [(ts, f"e{ts}") for ts in (100, 250, 400, 900, 1300, 1350, 2000)]
    contents = set()
    for order in (events, events[::-1][2:] + events[::-1][:2], sorted(events, key=lambda e: e[1])):
        window: SlidingWindow[int] = SlidingWindow(length_ms=1000)
        for ts, event_id in order:
            window.add(ts, event_id, ts)
        contents.add(tuple(window))
    # Arrivals older than the window at their arrival are refused; the rest sort themselves.
    assert (1300, 1350, 2000) in contents
    for content in contents:
        assert list(content) == sorted(content)


def test_a_run_starts_after_a_whole_window_without_items_and_late_items_extend_it_back():
    window: SlidingWindow[int] = SlidingWindow(length_ms=1000)
    window.add(5_000, "a", 0)
    window.add(5_800, "b", 0)
    window.add(6_700, "c", 0)  # "a" leaves the window, the run goes on
    assert (window.start_ms, window.run_start_ms) == (5_800, 5_000)
    window.add(6_500, "late", 0)
    assert window.run_start_ms == 5_000
    window.add(9_000, "d", 0)  # over a window after the newest item: a new run
    assert window.run_start_ms == 9_000
    window.add(8_500, "late-but-inside", 0)
    assert window.run_start_ms == 8_500
