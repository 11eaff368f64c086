"""The worker's log: text (mode's format) or one JSON object a line, and no floods.

Our own messages are `event key=value ...` with ids and hashes, never prompt text (DESIGN.md);
the JSON format keeps that message and lifts its key=value pairs into fields, so a log
pipeline can filter on `event_id` or `account` without parsing.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from streams.runtime.outage import Outages, outages

# Faust warns on every send while its producer buffer is past `max_messages`: hundreds a
# minute under back-pressure, each saying the same thing.
RATE_LIMITED = {"faust.transport.producer": "producer buffer full"}
_PAIR = re.compile(r"(\w[\w.]*)=('[^']*'|\"[^\"]*\"|\S+)")


class RateLimitFilter(logging.Filter):
    """Lets one record whose message starts with `prefix` through per `interval_s`; the next
    one let through says how many were held back since."""

    def __init__(self, prefix: str, interval_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.prefix = prefix
        self.interval_s = interval_s
        self.clock = clock
        self._last: float | None = None
        self._held = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith(self.prefix):
            return True
        now = self.clock()
        if self._last is not None and now - self._last < self.interval_s:
            self._held += 1
            return False
        if self._held:
            record.msg = (f"{record.getMessage()} (… {self._held} more in the last "
                          f"{self.interval_s:.0f} s)")
            record.args = ()
        self._last, self._held = now, 0
        return True


def install_rate_limits(interval_s: float = 60.0) -> None:
    """On the loggers themselves, so they hold whichever handlers the worker sets up."""
    for name, prefix in RATE_LIMITED.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, RateLimitFilter) for f in logger.filters):
            logger.addFilter(RateLimitFilter(prefix, interval_s))


@dataclass(frozen=True, slots=True)
class Expected:
    """A record a client logs while its service is away. Only `begins` records start an
    outage (they say the service cannot be reached); the rest are its consequences, folded
    while one is known and logged as usual otherwise."""

    logger: str
    template: str  # the record's `msg`: the template before its arguments are filled in
    service: str
    kind: str
    begins: bool = True
    # For a client that fills in its template before logging: what the message must contain.
    filled: str = ""


_COORDINATOR = "aiokafka.consumer.group_coordinator"
EXPECTED = (
    Expected("aiokafka", "Unable connect to node with id %s: %s", "kafka", "connect"),
    Expected("aiokafka", 'Unable connect to "%s:%s": %s', "kafka", "connect"),
    Expected("aiokafka", "Unable to update metadata from %s", "kafka", "metadata"),
    Expected("aiokafka", 'Unable to request metadata from "%s:%s": %s', "kafka", "metadata"),
    Expected("aiokafka", "Unable to request metadata from node with id %s: %r", "kafka",
             "metadata"),
    Expected(_COORDINATOR, "Group Coordinator Request failed: %s", "kafka", "coordinator"),
    Expected(_COORDINATOR, "Error sending %s to node %s [%s] -- marking coordinator dead",
             "kafka", "coordinator"),
    Expected(_COORDINATOR, "Heartbeat send request failed: %s. Will retry.", "kafka",
             "heartbeat"),
    Expected("aiokafka.consumer.fetcher", "Failed fetch messages from %s: %s", "kafka", "fetch"),
    Expected("aiokafka.producer.sender", "Got error produce response: %s", "kafka", "produce"),
    Expected(_COORDINATOR, "Marking the coordinator dead (node %s)for group %s.", "kafka",
             "coordinator", begins=False),
    Expected(_COORDINATOR, "Heartbeat session expired - marking coordinator dead", "kafka",
             "heartbeat", begins=False),
    Expected(_COORDINATOR, "Heartbeat failed for group %s: coordinator (node %s) is either "
             "not started or not valid", "kafka", "heartbeat", begins=False),
    Expected("aiokafka.producer.sender", "Got error produce response on topic-partition %s, "
             "retrying. Error: %s", "kafka", "produce_retry", begins=False),
    # Timers wait on the broker too (the lag gauge, commits).
    Expected("mode.timers", "Timer %s is overlapping (interval=%r runtime=%r)", "kafka",
             "timer_overlap", begins=False),
    # The transport's own retries log a traceback each; ElasticsearchSink retries anyway.
    Expected("elastic_transport.transport", "Retrying request after failure (attempt %d of %d)",
             "elasticsearch", "request"),
    Expected("elastic_transport.transport",
             "Request failure, sleeping for %.1fs before retrying", "elasticsearch", "request"),
    Expected("elastic_transport.node_pool",
             "Node %r has failed for %i times in a row, putting on %i second timeout",
             "elasticsearch", "node_dead"),
    Expected("elastic_transport.node_pool",
             "Node %r has been marked alive after a successful request", "elasticsearch",
             "node_alive", begins=False),
    # At INFO, but one a request: a failed one, and the node tried again after its timeout.
    Expected("elastic_transport.transport", "%s %s%s [status:%s duration:%.3fs]",
             "elasticsearch", "request_line", begins=False, filled=" [status:N/A duration:"),
    Expected("elastic_transport.node_pool", "Resurrected node %r (force=%s)", "elasticsearch",
             "node_retry", begins=False),
)
# The errors that mean "not reachable (yet)", by class name: anything else (an authentication
# failure, a message too large) is not an outage and is logged as it comes.
UNREACHABLE_ERRORS = frozenset({
    "NodeNotReadyError", "KafkaConnectionError", "RequestTimedOutError", "KafkaTimeoutError",
    "GroupCoordinatorNotAvailableError", "NotCoordinatorForGroupError",
    "NotLeaderForPartitionError", "LeaderNotAvailableError", "ConnectionError",
    "ConnectionTimeout", "ConnectionRefusedError", "ConnectionResetError", "TimeoutError",
    "OSError"})


class OutageFilter(logging.Filter):
    """Folds the records of `EXPECTED` into `outages`: none of them reaches a handler (nor its
    traceback); the outage's own lines say what they would have said."""

    def __init__(self, outages: Outages = outages) -> None:
        super().__init__()
        self.outages = outages
        self._by_template = {(e.logger, e.template): e for e in EXPECTED if not e.filled}
        self._filled = [e for e in EXPECTED if e.filled]

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        expected = self._by_template.get((record.name, message)) or next(
            (e for e in self._filled if e.logger == record.name and e.filled in message), None)
        if expected is None or not _unreachable(record):
            return True
        if not expected.begins and not self.outages.ongoing(expected.service):
            return True
        self.outages.failed(expected.service, expected.kind, record.getMessage())
        return False


def _unreachable(record: logging.LogRecord) -> bool:
    """Every error the record names (in its arguments or its exc_info) is one of
    `UNREACHABLE_ERRORS`; a record that names none is expected by its template alone."""
    errors = [a for a in (record.args if isinstance(record.args, tuple) else ())
              if isinstance(a, BaseException)
              or (isinstance(a, type) and issubclass(a, BaseException))]
    if record.exc_info and record.exc_info[1] is not None:
        errors.append(record.exc_info[1])
    classes = [e if isinstance(e, type) else type(e) for e in errors]
    return all(c.__name__ in UNREACHABLE_ERRORS or issubclass(c, OSError) for c in classes)


def install_outage_filter() -> None:
    """On each client logger named in `EXPECTED` (a logger's filters see only its own
    records, not its children's)."""
    for name in {e.logger for e in EXPECTED}:
        logger = logging.getLogger(name)
        if not any(isinstance(f, OutageFilter) for f in logger.filters):
            logger.addFilter(OutageFilter())


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and the message's key=value pairs."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "pid": record.process,
            "message": message,
        }
        for key, value in _PAIR.findall(message):
            entry.setdefault(key, value.strip("'\""))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def worker_logging_config(log_format: str) -> dict[str, Any] | None:
    """What the Faust worker is given as `logging_config`: None keeps mode's text format;
    "json" replaces the formatter of mode's console handler (merged into mode's config)."""
    if log_format != "json":
        return None
    return {"merge": True, "formatters": {"colored": {"()": "streams.logs.JsonFormatter"},
                                          "default": {"()": "streams.logs.JsonFormatter"}}}
