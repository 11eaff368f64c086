"""Bulk-write alerts, campaigns, accounts and actions into Elasticsearch; a batch is
acknowledged only once Elasticsearch has it."""

from __future__ import annotations

import logging

from elasticsearch import AsyncElasticsearch
from faust.types import EventT, StreamT

from streams import clock
from streams.app import app
from streams.messages import (
    AlertRecord,
    DocumentRecord,
    MessageError,
    Record,
    decode_batch,
    encode_batch,
    records_of,
)
from streams.settings import get_settings
from streams.sinks.documents import alert_document
from streams.sinks.elasticsearch import Document, ElasticsearchSink, client_options
from streams.stage_agent import topic

log = logging.getLogger(__name__)
_settings = get_settings()
INDEXES = {"campaigns", "accounts", "actions"}
alerts_and_documents = app.topic(_settings.topic("misuse.alerts"),
                                 _settings.topic("misuse.documents"),
                                 key_type=bytes, value_type=bytes)


async def reject(value: bytes, source: str, reason: str) -> None:
    log.error("document_rejected topic=%s reason=%r", source, reason[:200])
    await topic("misuse.deadletter").send(value=value, headers={
        "misuse.reason": reason.encode("utf-8"),
        "misuse.source.topic": source.encode(),
        "misuse.rejected_at_ms": str(clock.now_ms()).encode(),
    })


def to_document(record: Record) -> Document:
    if isinstance(record, AlertRecord):
        return alert_document(record.alert, _settings)
    assert isinstance(record, DocumentRecord)
    if record.index not in INDEXES:
        raise ValueError(f"unknown index {record.index!r}")
    return Document(_settings.index(record.index), record.id, record.source, partial=True)


def records(value: bytes | None) -> list[Record]:
    batch = decode_batch(value)
    kind = AlertRecord if batch.type == AlertRecord.TYPE else DocumentRecord
    return list(records_of(batch, kind))


async def index_batch(sink: ElasticsearchSink, batch: list[EventT]) -> None:
    # A document updated several times in one batch is written once, in its last version;
    # partial updates of one document are merged in order.
    latest: dict[tuple[str, str], tuple[Document, Record, str]] = {}
    for event in batch:
        source, value = event.message.topic, event.message.value
        try:
            decoded = records(value)
        except MessageError as exc:
            await reject(value or b"", source, f"undecodable batch: {exc}")
            continue
        for record in decoded:
            try:
                document = to_document(record)
            except (ValueError, KeyError, TypeError) as exc:
                await reject(encode_batch(record.TYPE, [record]), source,
                             f"undecodable document: {exc!r}")
                continue
            key = (document.index, document.id)
            if document.partial and key in latest:
                document = merge(latest[key][0], document)
            latest[key] = (document, record, source)
    for rejected in await sink.write([doc for doc, _, _ in latest.values()]):
        _, record, source = latest[(rejected.document.index, rejected.document.id)]
        await reject(encode_batch(record.TYPE, [record]), source,
                     f"elasticsearch refused the document: {rejected.reason}")


@app.agent(alerts_and_documents)
async def index_documents(stream: StreamT) -> None:
    client = AsyncElasticsearch(**client_options(_settings))
    sink = ElasticsearchSink(client)
    try:
        async for batch in stream.take_events(  # type: ignore[attr-defined]
                _settings.index_batch_size, within=_settings.index_batch_seconds):
            await index_batch(sink, batch)
    finally:
        await client.close()


def merge(first: Document, second: Document) -> Document:
    """Two partial updates as one: the second wins field by field, as it would in order."""
    def deep(a: dict, b: dict) -> dict:  # type: ignore[type-arg]
        out = dict(a)
        for key, value in b.items():
            out[key] = deep(out[key], value) if isinstance(value, dict) and isinstance(
                out.get(key), dict) else value
        return out
    return Document(second.index, second.id, deep(first.source, second.source), partial=True)
