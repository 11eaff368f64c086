"""Incidents: when a detector whose condition keeps holding alerts again, and under which id."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Incident:
    """One entity's open incident (or none), kept in the detector's per-entity state.

    An incident opens when the detector's condition first holds, and its start time fixes the
    alert's id (`Alert.alert_id`): while the condition keeps holding, every alert about it is an
    update of the same one, which sinks overwrite instead of duplicating. The start must not
    depend on the order events arrived in, or a replay would duplicate instead (`anchor_ms`).
    Re-sending on every event would flood them, never re-sending would leave stale evidence,
    so the alert is re-sent only when the incident has grown materially: its size (failures,
    networks, accounts, ...) has at least doubled since the last report. It closes once the
    condition has not held for a whole window, and the next time it holds is a new incident
    with a new id.

    Plain data, stored with the state that holds it (detectors/state_codec).
    """

    start_ms: int | None = None
    last_ms: int = 0  # event time when the condition last held
    reported: int = 0  # size at the last alert
    # Times the condition held again without being news: repeats suppressed into the open
    # alert, which carries the count (`Alert.repeats`) at its next update.
    repeats: int = 0
    # When the last incident closed (event time): the next one starts no earlier, so it
    # never takes its predecessor's id.
    closed_ms: int = 0

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
            start = start_ms() if callable(start_ms) else start_ms
            self.start_ms = max(start, self.closed_ms)
            self.repeats = 0
        self.reported = size
        return True

    def close(self) -> None:
        self.start_ms = None

    def close_if_quiet(self, now_ms: int, window_ms: int) -> None:
        """Close the incident when the condition has not held for more than a whole window."""
        if self.is_open and now_ms - self.last_ms > window_ms:
            self.close()
            self.closed_ms = self.last_ms + window_ms


def anchor_ms(run_start_ms: int, held_ms: int, window_ms: int) -> int:
    """An incident's start that the order of arrival barely moves: the start of the
    window-long bucket (event time) holding the start of the entity's run of activity
    (`SlidingWindow.run_start_ms`), or, for an entity active for longer than a window before
    the condition held at `held_ms`, holding `held_ms - window_ms`.

    Keyed by the window's oldest event when the condition first held, as before, an incident
    on a busy range took another id whenever the partitions interleaved otherwise (issue 10:
    3-4 of 8 alert ids differed between replays of one file): which event makes the condition
    hold, and what the window holds then, depend on the arrival order; the bucket they fall
    in seldom does. It still can, when the disorder moves them across a bucket's edge."""
    since = max(run_start_ms, held_ms - window_ms)
    return since // window_ms * window_ms
