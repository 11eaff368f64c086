"""Bulk-write alerts, campaigns, accounts and actions into Elasticsearch; a batch is
acknowledged only once Elasticsearch has it."""

from __future__ import annotations

import asyncio
import logging

from elasticsearch import AsyncElasticsearch
from faust.types import AppT, EventT

from streams.runtime import clock, metrics
from streams.runtime.messages import (
    AlertRecord,
    DocumentRecord,
    MessageError,
    Record,
    UnverifiedRecordError,
    decode_batch,
    encode_batch,
    records_of,
)
from streams.runtime.sealing import KeyRing
from streams.runtime.stage_agent import Topics, refuse_unverified, register_sink
from streams.sinks.documents import alert_document
from streams.sinks.elasticsearch import Document, ElasticsearchSink, client_options

log = logging.getLogger(__name__)
STAGE = "index_documents"
INDEXES = {"campaigns", "accounts", "actions"}


def records(value: bytes | None, ring: KeyRing) -> list[Record]:
    batch = decode_batch(value, ring)
    kind = AlertRecord if batch.type == AlertRecord.TYPE else DocumentRecord
    return list(records_of(batch, kind))


class Indexer:
    def __init__(self, topics: Topics, sink: ElasticsearchSink) -> None:
        self.topics, self.settings, self.sink = topics, topics.settings, sink
        self.ring = self.settings.internal_keys

    async def close(self) -> None:
        await self.sink.client.close()

    def to_document(self, record: Record) -> Document:
        if isinstance(record, AlertRecord):
            return alert_document(record.alert, self.settings)
        assert isinstance(record, DocumentRecord)
        if record.index not in INDEXES:
            raise ValueError(f"unknown index {record.index!r}")
        return Document(self.settings.index(record.index), record.id, record.source,
                        partial=True)

    async def reject(self, value: bytes, source: str, reason: str) -> None:
        log.error("document_rejected topic=%s reason=%r", source, reason[:200])
        await (await self.topics.dead_letter(None, value, reason, {"topic": source},
                                             stage=STAGE))

    async def write(self, batch: list[EventT]) -> None:
        # A document updated several times in one batch is written once, in its last
        # version; partial updates of one document are merged in order.
        latest: dict[tuple[str, str], tuple[Document, Record, str]] = {}
        for event in batch:
            source, value = event.message.topic, event.message.value
            try:
                decoded = records(value, self.ring)
            except UnverifiedRecordError as exc:
                await asyncio.gather(*await refuse_unverified(
                    self.topics, event, exc, f"undecodable batch: {exc}", stage=STAGE))
                continue
            except MessageError as exc:
                await self.reject(value or b"", source, f"undecodable batch: {exc}")
                continue
            for record in decoded:
                try:
                    document = self.to_document(record)
                except (ValueError, KeyError, TypeError) as exc:
                    await self.reject(encode_batch(record.TYPE, [record], self.ring), source,
                                      f"undecodable document: {exc!r}")
                    continue
                key = (document.index, document.id)
                if document.partial and key in latest:
                    document = merge(latest[key][0], document)
                latest[key] = (document, record, source)
        refused = await self.sink.write([doc for doc, _, _ in latest.values()])
        for rejected in refused:
            _, record, source = latest[(rejected.document.index, rejected.document.id)]
            await self.reject(encode_batch(record.TYPE, [record], self.ring), source,
                              f"elasticsearch refused the document: {rejected.reason}")
        observe_alert_latency(
            [record for key, (_, record, _) in latest.items()
             if key not in {(r.document.index, r.document.id) for r in refused}])


def register_indexer(app: AppT, topics: Topics) -> None:
    settings = topics.settings

    def open_indexer() -> Indexer:
        return Indexer(topics, ElasticsearchSink(AsyncElasticsearch(**client_options(settings))))

    register_sink(app, topics, STAGE, ("misuse.alerts", "misuse.documents"),
                  open_indexer, settings.index_batch_size, settings.index_batch_seconds)


def observe_alert_latency(written: list[Record]) -> None:
    """Event time to searchable: the wall clock now (the alert is in Elasticsearch) minus the
    end of the alert's window, the time of the event that made it fire."""
    now_s = clock.now_ms() / 1000
    for record in written:
        if isinstance(record, AlertRecord):
            metrics.event_to_alert_latency.observe(
                max(0.0, now_s - record.alert.window_end_ms / 1000))


def merge(first: Document, second: Document) -> Document:
    """Two partial updates as one: the second wins field by field, as it would in order."""
    def deep(a: dict, b: dict) -> dict:  # type: ignore[type-arg]
        out = dict(a)
        for key, value in b.items():
            out[key] = deep(out[key], value) if isinstance(value, dict) and isinstance(
                out.get(key), dict) else value
        return out
    return Document(second.index, second.id, deep(first.source, second.source), partial=True)
