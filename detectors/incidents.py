"""Incidents: when a detector whose condition keeps holding alerts again, and under which id."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Incident:
    """One entity's open incident (or none), kept in the detector's per-entity state.

    An incident opens when the detector's condition first holds, and its start time fixes the
    alert's id (`Alert.alert_id`): while the condition keeps holding, every alert about it is an
    update of the same one, which sinks overwrite instead of duplicating. Re-sending on every
    event would flood them, never re-sending would leave stale evidence, so the alert is re-sent
    only when the incident has grown materially: its size (failures, networks, accounts, ...)
    has at least doubled since the last report. It closes once the condition has not held for a
    whole window, and the next time it holds is a new incident with a new id.

    Plain data, stored with the state that holds it (detectors/state_codec).
    """

    start_ms: int | None = None
    last_ms: int = 0  # event time when the condition last held
    reported: int = 0  # size at the last alert
    # Times the condition held again without being news: repeats suppressed into the open
    # alert, which carries the count (`Alert.repeats`) at its next update.
    repeats: int = 0

    @property
    def is_open(self) -> bool:
        return self.start_ms is not None

    def is_news(self, size: int) -> bool:
        """Whether an alert at this size would be sent: it opens the incident, or the incident
        has doubled since the last report."""
        return self.start_ms is None or size >= 2 * self.reported

    def hold(self, now_ms: int) -> None:
        """The condition holds at `now_ms`: keep the incident open."""
        self.last_ms = now_ms

    def report(self, start_ms: int | Callable[[], int], size: int, now_ms: int) -> bool:
        """The condition holds at `now_ms` with this size; return True when an alert should be
        sent (and count it as reported). `start_ms` is used only when this opens the incident;
        pass a callable for a start that is costly to find."""
        self.hold(now_ms)
        if not self.is_news(size):
            self.repeats += 1
            return False
        if self.start_ms is None:
            self.start_ms = start_ms() if callable(start_ms) else start_ms
            self.repeats = 0
        self.reported = size
        return True

    def close(self) -> None:
        self.start_ms = None

    def close_if_quiet(self, now_ms: int, window_ms: int) -> None:
        """Close the incident when the condition has not held for more than a whole window."""
        if now_ms - self.last_ms > window_ms:
            self.close()
