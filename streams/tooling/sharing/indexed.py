"""The documents of a time range, read from the indices analysts use: the export and the report
read nothing else, so they work for any range already indexed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from elasticsearch import Elasticsearch, helpers

from streams.settings import Settings
from streams.sinks.documents import iso

Doc = dict[str, Any]


@dataclass(frozen=True)
class Indexed:
    start_ms: int
    end_ms: int
    alerts: list[Doc]
    campaigns: list[Doc]
    accounts: list[Doc]
    actions: list[Doc]


def overlapping(start_field: str, end_field: str, start_ms: int, end_ms: int) -> Doc:
    """Documents whose own span [start_field, end_field] meets the range."""
    return {"bool": {"filter": [{"range": {start_field: {"lte": iso(end_ms)}}},
                                {"range": {end_field: {"gte": iso(start_ms)}}}]}}


def read_indexed(es: Elasticsearch, settings: Settings, start_ms: int, end_ms: int) -> Indexed:
    """Every alert, campaign and account active in the range and every action taken in it.
    Scrolled, so a long range is read whole (a plain search stops at 10,000 hits)."""
    def read(index: str, query: Doc) -> list[Doc]:
        return [hit["_source"] for hit in helpers.scan(
            es, index=settings.index(index), query={"query": query}, ignore_unavailable=True,
            size=1000)]

    return Indexed(
        start_ms, end_ms,
        alerts=read("alerts-*", overlapping("event.start", "@timestamp", start_ms, end_ms)),
        campaigns=read("campaigns", overlapping("misuse.first_seen", "misuse.last_seen",
                                                start_ms, end_ms)),
        accounts=read("accounts", overlapping("misuse.first_flagged", "@timestamp",
                                              start_ms, end_ms)),
        actions=read("actions", overlapping("@timestamp", "@timestamp", start_ms, end_ms)),
    )
