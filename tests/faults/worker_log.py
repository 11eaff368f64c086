"""What a fault costs in the worker's log: its records at WARNING or above, and tracebacks,
between two offsets of the log file (issue 23: a few lines an outage, not thousands).

Reads both formats: mode's text (`[time] [pid] [LEVEL] message`, continuation lines such as a
traceback's belong to the record above) and one JSON object a line (`MISUSE_LOG_FORMAT=json`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

_TEXT_RECORD = re.compile(r"^\[[^\]]+\] \[\d+\] \[([A-Z]+)\] ")
LOUD = frozenset({"WARNING", "ERROR", "CRITICAL"})


def loud_lines(path: Path, start: int = 0, end: int | None = None) -> dict[str, int]:
    """{"lines": records at WARNING or above, "tracebacks": tracebacks} in bytes
    [start, end) of the log."""
    with path.open("rb") as log:
        log.seek(start)
        chunk = log.read() if end is None else log.read(max(0, end - start))
    lines = tracebacks = 0
    for line in chunk.decode("utf-8", errors="replace").splitlines():
        level = _TEXT_RECORD.match(line)
        if level:
            lines += level.group(1) in LOUD
        elif line.startswith("Traceback (most recent call last):"):
            tracebacks += 1
        elif line.startswith("{"):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            lines += entry.get("level") in LOUD
            tracebacks += "exc" in entry
    return {"lines": lines, "tracebacks": tracebacks}
