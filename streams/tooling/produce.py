"""Sending usage events from lines (`misuse produce`, the demo, replay, benchmarks)."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from tqdm import tqdm

from streams.runtime.broker import producer, require_topics
from streams.settings import Settings
from streams.tooling.event_lines import Line, keyed_lines


def produce_lines(settings: Settings, lines: Iterable[bytes], topic: str) -> int:
    """Send JSON lines keyed by their account; lines that are not JSON are sent as they are,
    so the worker dead-letters them with a reason."""
    return send_lines(settings, keyed_lines(lines), topic)


def send_lines(settings: Settings, lines: Iterable[Line], topic: str) -> int:
    """Send every line that has no problem (checked before anything is read: the topic);
    return how many were sent."""
    require_topics(settings, [topic])
    kafka = producer(settings)
    failures: list[Exception] = []  # a send the broker refused (a missing ACL, say)
    count = 0
    for line in tqdm(lines, unit="events", desc="producing", disable=not sys.stderr.isatty()):
        if not line.problem:
            kafka.send(topic, key=line.key, value=line.value).add_errback(failures.append)
            count += 1
    kafka.flush()
    kafka.close()
    if failures:
        raise failures[0]
    return count
