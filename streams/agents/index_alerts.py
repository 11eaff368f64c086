"""Bulk-write alerts into Elasticsearch; a batch is acknowledged only once Elasticsearch has it."""

from __future__ import annotations

import logging

from elasticsearch import AsyncElasticsearch
from faust.types import StreamT

from detectors.alerts import Alert
from streams import clock, codec
from streams.app import app
from streams.settings import get_settings
from streams.sinks.documents import alert_document
from streams.sinks.elasticsearch import Document, ElasticsearchSink, client_options
from streams.topics import alerts_topic, deadletter_topic

log = logging.getLogger(__name__)
_settings = get_settings()


async def reject(value: bytes, reason: str) -> None:
    log.error("alert_rejected reason=%r", reason[:200])
    await deadletter_topic.send(value=value, headers={
        "misuse.reason": reason.encode("utf-8"),
        "misuse.source.topic": alerts_topic.get_topic_name().encode(),
        "misuse.rejected_at_ms": str(clock.now_ms()).encode(),
    })


@app.agent(alerts_topic)
async def index_alerts(stream: StreamT) -> None:
    sink = ElasticsearchSink(AsyncElasticsearch(**client_options(_settings)))
    async for values in stream.take(_settings.index_batch_size,
                                    within=_settings.index_batch_seconds):
        # An alert that grew within one batch appears several times: the last version wins.
        latest: dict[str, tuple[Document, bytes]] = {}
        for value in values:
            try:
                document = alert_document(Alert.from_dict(codec.loads(value)), _settings)
            except (ValueError, KeyError, TypeError) as exc:
                await reject(value, f"undecodable alert: {exc!r}")
                continue
            latest[document.id] = (document, value)
        for rejected in await sink.write([doc for doc, _ in latest.values()]):
            await reject(latest[rejected.document.id][1],
                         f"elasticsearch refused the document: {rejected.reason}")
