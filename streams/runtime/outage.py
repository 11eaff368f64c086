"""Kafka or Elasticsearch unreachable, as three kinds of log line instead of thousands.

An outage is a WARNING when it begins, a summary every `summary_every_s` while it lasts (how
long, how many failures of each kind, what is held back) and an INFO when it ends. It ends
when the code that talks to the service says a request went through (`recovered`), or when no
failure was seen for `quiet_s`: the Kafka clients retry many times a second while the broker
is away, so a quiet stretch means it is back. The failures come from our own code (a bulk
write that failed) and from the clients' loggers (streams/logs.py folds their records here).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Line:
    level: int
    message: str


class Outage:
    """One service's outage as a state machine: time is passed in, lines are returned."""

    def __init__(self, service: str, held_unit: str = "", summary_every_s: float = 60.0,
                 quiet_s: float = 15.0) -> None:
        self.service, self.held_unit = service, held_unit
        self.summary_every_s, self.quiet_s = summary_every_s, quiet_s
        self.began: float | None = None
        self.last_failure = self.last_summary = 0.0
        self.failures: Counter[str] = Counter()
        self.held: int | None = None

    @property
    def ongoing(self) -> bool:
        return self.began is not None

    def failed(self, now: float, kind: str, error: str = "", held: int | None = None
               ) -> Line | None:
        """A failure of `kind`; the line that says the outage began, if it is the first."""
        self.failures[kind] += 1
        self.last_failure = now
        if held is not None:
            self.held = held
        if self.began is not None:
            return None
        self.began = self.last_summary = now
        return Line(logging.WARNING, f"{self.service}_unreachable first={kind} "
                                     f"error={error[:200]!r}{self._held()}")

    def recovered(self, now: float, seen: str = "request") -> Line | None:
        """A request went through; the line that says the outage ended, if there was one."""
        if self.began is None:
            return None
        line = Line(logging.INFO, f"{self.service}_reachable down_for={now - self.began:.0f}s "
                                  f"failures={self._counts()} seen={seen}")
        self.began, self.held = None, None
        self.failures.clear()
        return line

    def tick(self, now: float) -> Line | None:
        """The summary when one is due, or the end after a quiet stretch."""
        if self.began is None:
            return None
        if now - self.last_failure >= self.quiet_s:
            return self.recovered(self.last_failure, seen=f"no_failure_for_{self.quiet_s:.0f}s")
        if now - self.last_summary < self.summary_every_s:
            return None
        self.last_summary = now
        return Line(logging.WARNING, f"{self.service}_still_unreachable "
                                     f"for={now - self.began:.0f}s failures={self._counts()}"
                                     f"{self._held()}")

    def _counts(self) -> str:
        return ",".join(f"{kind}:{n}" for kind, n in self.failures.most_common())

    def _held(self) -> str:
        if self.held is None:
            return ""
        return f" held_{self.held_unit or 'back'}={self.held}"


class Outages:
    """The worker's outages, one per service, logged through `streams.runtime.outage`. The Kafka
    consumer logs from its own thread, hence the lock."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 logger: logging.Logger = log) -> None:
        self.clock, self.logger = clock, logger
        # The sink retries Elasticsearch every 30 s at most and says when a write went
        # through; the quiet stretch is only for an outage nobody writes through.
        self.services = {"kafka": Outage("kafka"),
                         "elasticsearch": Outage("elasticsearch", "documents", quiet_s=300.0)}
        self._lock = threading.Lock()

    def ongoing(self, service: str) -> bool:
        return self.services[service].ongoing

    def failed(self, service: str, kind: str, error: str = "", held: int | None = None
               ) -> None:
        with self._lock:
            line = self.services[service].failed(self.clock(), kind, error, held)
        self._log(line)

    def recovered(self, service: str) -> None:
        with self._lock:
            line = self.services[service].recovered(self.clock())
        self._log(line)

    def tick(self) -> None:
        with self._lock:
            now = self.clock()
            lines = [outage.tick(now) for outage in self.services.values()]
        for line in lines:
            self._log(line)

    def _log(self, line: Line | None) -> None:
        if line is not None:
            self.logger.log(line.level, line.message)


outages = Outages()
