"""Bulk-write alerts, campaigns, accounts and actions into Elasticsearch; a batch is
acknowledged only once Elasticsearch has it."""

from __future__ import annotations

import logging

from elasticsearch import AsyncElasticsearch
from faust.types import EventT, StreamT

from detectors.alerts import Alert
from streams import clock, codec
from streams.app import app
from streams.settings import get_settings
from streams.sinks.documents import alert_document
from streams.sinks.elasticsearch import Document, ElasticsearchSink, client_options
from streams.topics import alerts_topic, deadletter_topic, documents_topic

log = logging.getLogger(__name__)
_settings = get_settings()
INDEXES = {"campaigns", "accounts", "actions"}
alerts_and_documents = app.topic(alerts_topic.get_topic_name(), documents_topic.get_topic_name(),
                                 key_type=bytes, value_type=bytes)


async def reject(value: bytes, topic: str, reason: str) -> None:
    log.error("document_rejected topic=%s reason=%r", topic, reason[:200])
    await deadletter_topic.send(value=value, headers={
        "misuse.reason": reason.encode("utf-8"),
        "misuse.source.topic": topic.encode(),
        "misuse.rejected_at_ms": str(clock.now_ms()).encode(),
    })


def to_document(topic: str, value: bytes) -> Document:
    record = codec.loads(value)
    if topic == alerts_topic.get_topic_name():
        return alert_document(Alert.from_dict(record), _settings)
    if record["index"] not in INDEXES:
        raise ValueError(f"unknown index {record['index']!r}")
    return Document(_settings.index(record["index"]), str(record["id"]), record["source"],
                    partial=True)


async def index_batch(sink: ElasticsearchSink, batch: list[EventT]) -> None:
    # A document updated several times in one batch is written once, in its last version;
    # partial updates of one document are merged in order.
    latest: dict[tuple[str, str], tuple[Document, bytes, str]] = {}
    for event in batch:
        topic, value = event.message.topic, event.message.value or b""
        try:
            document = to_document(topic, value)
        except (ValueError, KeyError, TypeError) as exc:
            await reject(value, topic, f"undecodable document: {exc!r}")
            continue
        key = (document.index, document.id)
        if document.partial and key in latest:
            document = merge(latest[key][0], document)
        latest[key] = (document, value, topic)
    for rejected in await sink.write([doc for doc, _, _ in latest.values()]):
        _, value, topic = latest[(rejected.document.index, rejected.document.id)]
        await reject(value, topic, f"elasticsearch refused the document: {rejected.reason}")


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
