"""Live progress of a worker run (`misuse demo`, `misuse eval`, `make bench`) on stderr.

A run can take minutes on two cores; a silent wait looks like a hang. One line every few
seconds says how far the worker is: usage events it committed out of those produced, the lag
over every topic it reads, and the alerts it has written. On a terminal the line is rewritten
in place; otherwise (CI, a log file) each is a line of its own, so the log stays readable.
"""

from __future__ import annotations

import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from prometheus_client.parser import text_string_to_metric_families

from streams.runtime.broker import group_offsets
from streams.settings import CONSUMED_TOPICS, Settings

ALERTS_WRITTEN = "misuse_event_to_alert_latency_seconds"  # one observation per alert written
PENDING_RECORDS = "misuse_stage_pending_records"  # per stage: taken in, outcome not sent yet
WORKER_READY = "misuse_worker_ready"  # 1 once up, tables recovered
WORKER_CRASHES = "misuse_worker_crashes"  # a counter: its samples end in _total


@dataclass(frozen=True, slots=True)
class Offsets:
    committed: int  # of api.usage, by the worker's group
    end: int  # of api.usage
    lag: int  # over every topic the worker reads


@dataclass(frozen=True, slots=True)
class Snapshot:
    processed: int  # usage events committed by the worker's group since the run began
    produced: int  # usage events in this run, known or so far
    lag: int  # messages not yet committed, over every topic the worker reads
    alerts: int | None  # alert documents written; None when the worker did not answer
    elapsed_s: float


def progress_line(snapshot: Snapshot) -> str:
    parts = [f"processed {snapshot.processed:,} / {snapshot.produced:,} events",
             f"lag {snapshot.lag:,}"]
    if snapshot.alerts is not None:
        parts.append(f"alerts {snapshot.alerts:,}")
    parts.append(f"{snapshot.elapsed_s:.0f} s")
    return "  " + " · ".join(parts)


def alerts_written(metrics_url: str, timeout_s: float = 2.0) -> int | None:
    """From the worker's own /metrics: it counts this process's writes, whatever else the
    alert index holds from earlier runs. None while the worker's web server is not up."""
    written = worker_metric(metrics_url, ALERTS_WRITTEN, "_count", timeout_s)
    return None if written is None else int(written)


def worker_metric(metrics_url: str, family: str, sample_suffix: str = "",
                  timeout_s: float = 2.0) -> float | None:
    """The sum of a metric family's samples (those whose name ends with `sample_suffix`) on
    the worker's /metrics; None while its web server is not up or the family is not there."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=timeout_s) as response:
            text = response.read().decode("utf-8")
    except OSError:
        return None
    for found in text_string_to_metric_families(text):
        if found.name == family:
            return sum(s.value for s in found.samples if s.name.endswith(sample_suffix))
    return None


class Progress:
    """Call it as often as you like (`WorkerProcess.wait_drained` does, every poll); it
    measures and prints at most once every `interval_s`. Create it before the run's events
    are produced, or before the worker starts: what the group has committed by then is the
    baseline, so a shared topic's earlier runs are not counted."""

    def __init__(self, offsets: Callable[[], Offsets], alerts: Callable[[], int | None],
                 expected: int | None = None, stream: TextIO | None = None,
                 interval_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.offsets, self.alerts, self.expected = offsets, alerts, expected
        self.stream = sys.stderr if stream is None else stream
        self.interval_s, self.clock = interval_s, clock
        self.began = self.last = clock()
        self.in_place = self.stream.isatty()
        self.baseline = offsets().committed

    @classmethod
    def of_worker(cls, settings: Settings, metrics_url: str, expected: int | None = None
                  ) -> Progress:
        """For the worker of `settings` (its consumer group) serving `metrics_url`."""
        return cls(lambda: worker_offsets(settings), lambda: alerts_written(metrics_url),
                   expected)

    def __call__(self) -> None:
        if self.clock() - self.last >= self.interval_s:
            self.show(self.measure())

    def finish(self) -> None:
        """The final figures, and the line ended, before the summary is printed."""
        self.show(self.measure())
        if self.in_place:
            self.stream.write("\n")
            self.stream.flush()

    def measure(self) -> Snapshot:
        offsets = self.offsets()
        produced = self.expected if self.expected is not None else \
            offsets.end - self.baseline
        return Snapshot(processed=max(0, offsets.committed - self.baseline),
                        produced=produced, lag=offsets.lag, alerts=self.alerts(),
                        elapsed_s=self.clock() - self.began)

    def show(self, snapshot: Snapshot) -> None:
        self.last = self.clock()
        line = progress_line(snapshot)
        # \x1b[K clears what a longer earlier line left on the terminal.
        self.stream.write(f"\r{line}\x1b[K" if self.in_place else f"{line}\n")
        self.stream.flush()


def worker_offsets(settings: Settings) -> Offsets:
    topics = [settings.topic(name) for name in CONSUMED_TOPICS]
    offsets = group_offsets(settings, settings.app_id, topics)
    committed, end = offsets.get(settings.topic("api.usage"), (0, 0))
    return Offsets(committed, end, sum(max(0, e - c) for c, e in offsets.values()))
