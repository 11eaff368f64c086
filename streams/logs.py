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
from datetime import UTC, datetime
from typing import Any

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
