"""The lines of a JSONL file of usage events, checked before any is sent (`misuse produce`).

Each line is checked by the parser ingest uses (`detectors.events`), so a line is sent only if
the worker would take it, and a refused line is reported with its number and the reason its dead
letter would have carried. No line can stop the file halfway: a line nested 10,000 deep, a lone
surrogate or broken UTF-8 is a reason like any other. Pure: the caller passes the time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from detectors.events import InvalidEventError, parse_usage_event


@dataclass(frozen=True, slots=True)
class Line:
    number: int  # 1-based, as an editor shows it
    value: bytes
    key: bytes | None = None  # the account, as api.usage is keyed
    problem: str = ""  # why it is not sent; "" for a line that is


def checked_lines(lines: Iterable[bytes], now_ms: int, max_future_skew_ms: int
                  ) -> Iterator[Line]:
    """Every non-blank line, with its key, or with the reason ingest would refuse it."""
    for number, value in enumerate(lines, 1):
        if not value.strip():
            continue
        try:
            event = parse_usage_event(value, now_ms, max_future_skew_ms)
        except InvalidEventError as exc:
            yield Line(number, value, problem=str(exc))
            continue
        yield Line(number, value, event.account_id.encode() if event.account_id else None)


def keyed_lines(lines: Iterable[bytes]) -> Iterator[Line]:
    """Every non-blank line, unchecked, keyed by its account when one can be read: for
    generated traffic, and for tests that send bad lines on purpose to be dead-lettered."""
    for number, value in enumerate(lines, 1):
        if not value.strip():
            continue
        try:
            account = json.loads(value).get("account_id")
            key = account.encode() if isinstance(account, str) else None
        except (ValueError, AttributeError, RecursionError):  # UnicodeError is a ValueError
            key = None
        yield Line(number, value, key)
