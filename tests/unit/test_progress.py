"""The progress line of `misuse demo`, `misuse eval` and `make bench`: its wording, its pace, and
in place on a terminal versus a line each in a log."""

from __future__ import annotations

import io

from streams.tooling.progress import Offsets, Progress, Snapshot, progress_line


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_line_wording() -> None:
    line = progress_line(Snapshot(processed=12_340, produced=24_000, lag=1_203, alerts=41,
                                  elapsed_s=35.4))
    assert line == "  processed 12,340 / 24,000 events · lag 1,203 · alerts 41 · 35 s"


def test_line_without_alerts_when_the_worker_did_not_answer() -> None:
    line = progress_line(Snapshot(processed=0, produced=500, lag=0, alerts=None, elapsed_s=0))
    assert line == "  processed 0 / 500 events · lag 0 · 0 s"


def progress(stream: io.StringIO, clock: Clock, offsets: list[Offsets],
             expected: int | None = 1_000) -> Progress:
    readings = iter(offsets)
    return Progress(lambda: next(readings), lambda: 3, expected=expected, stream=stream,
                    interval_s=5.0, clock=clock)


def test_prints_at_most_every_interval_counting_from_the_baseline() -> None:
    log, clock = io.StringIO(), Clock()
    # A shared topic: the group had committed 5,000 before this run.
    run = progress(log, clock, [Offsets(5_000, 5_000, 0), Offsets(5_400, 6_000, 700),
                                Offsets(6_000, 6_000, 0)])
    clock.now += 1
    run()  # too soon: nothing measured, nothing printed
    assert log.getvalue() == ""
    clock.now += 4
    run()
    clock.now += 1
    run()
    run.finish()
    assert log.getvalue().splitlines() == [
        "  processed 400 / 1,000 events · lag 700 · alerts 3 · 5 s",
        "  processed 1,000 / 1,000 events · lag 0 · alerts 3 · 6 s",
    ]


def test_rewrites_in_place_on_a_terminal() -> None:
    terminal, clock = Terminal(), Clock()
    run = progress(terminal, clock, [Offsets(0, 0, 0), Offsets(10, 20, 10),
                                     Offsets(20, 20, 0)], expected=None)
    clock.now += 5
    run()
    run.finish()
    out = terminal.getvalue()
    assert out.count("\r") == 2 and out.endswith("\n") and out.count("\n") == 1
    assert "\r  processed 10 / 20 events · lag 10 · alerts 3 · 5 s\x1b[K" in out
