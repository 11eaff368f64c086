"""Bulk writes into Elasticsearch that retry until accepted, and the index templates."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elasticsearch import (
    ApiError,
    AsyncElasticsearch,
    ConnectionTimeout,
    Elasticsearch,
    TransportError,
)
from elasticsearch import ConnectionError as EsConnectionError

from streams.runtime import metrics
from streams.runtime.outage import outages
from streams.settings import Settings

log = logging.getLogger(__name__)

TEMPLATE_NAMES = ("alerts", "accounts", "campaigns", "actions")
_RETRYABLE_STATUSES = {408, 429, 500, 502, 503, 504}


class TemplatesMissingError(RuntimeError):
    """The index templates are not installed: run `misuse setup`."""


@dataclass(frozen=True, slots=True)
class Document:
    index: str
    id: str
    source: dict[str, Any]
    # A partial update (created if missing) leaves the fields it does not name alone: an
    # analyst's review on an account document survives the worker's next update.
    partial: bool = False


@dataclass(frozen=True, slots=True)
class Rejected:
    document: Document
    reason: str


def client_options(settings: Settings) -> dict[str, Any]:
    options: dict[str, Any] = {"hosts": [settings.elasticsearch_url], "request_timeout": 30}
    if settings.elasticsearch_api_key is not None:
        options["api_key"] = settings.elasticsearch_api_key.get_secret_value()
    elif settings.elasticsearch_username and settings.elasticsearch_password is not None:
        options["basic_auth"] = (settings.elasticsearch_username,
                                 settings.elasticsearch_password.get_secret_value())
    if settings.elasticsearch_ca_certs is not None:
        options["ca_certs"] = str(settings.elasticsearch_ca_certs)
    return options


def index_templates(settings: Settings) -> dict[str, dict[str, Any]]:
    """The composable templates from ops/elasticsearch, with the configured index prefix."""
    templates = {}
    for name in TEMPLATE_NAMES:
        text = Path(settings.templates_dir, f"{name}.json").read_text(encoding="utf-8")
        templates[settings.index(name)] = json.loads(text.replace("{prefix}",
                                                                   settings.index_prefix))
    return templates


def install_templates(client: Elasticsearch, settings: Settings) -> list[str]:
    """Idempotent: putting a template again replaces it with the same content."""
    installed = []
    for name, body in index_templates(settings).items():
        client.indices.put_index_template(name=name, **body)
        installed.append(name)
    return installed


def check_templates(client: Elasticsearch, settings: Settings) -> None:
    for name in index_templates(settings):
        if not client.indices.exists_index_template(name=name):
            raise TemplatesMissingError(
                f"index template {name!r} is missing in {settings.elasticsearch_address}: "
                "run `misuse setup` first")


def search_sources(client: Elasticsearch, settings: Settings, index: str,
                   query: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The `_source` of up to 10,000 matching documents of one index (name without prefix):
    what the demo, `misuse eval` and the tests read back."""
    response = client.search(index=settings.index(index), query=query or {"match_all": {}},
                             size=10_000, ignore_unavailable=True)
    return [hit["_source"] for hit in response["hits"]["hits"]]


def _unreachable(exc: TransportError | ApiError) -> bool:
    """Elasticsearch away or overloaded (an outage, logged as one), rather than a request it
    refuses (credentials, a bad request: logged at every retry, as somebody must act)."""
    if isinstance(exc, ApiError):
        return exc.status_code in _RETRYABLE_STATUSES
    return isinstance(exc, EsConnectionError | ConnectionTimeout)


class ElasticsearchSink:
    """Writes documents with their deterministic ids; a replay overwrites instead of adding.

    `write` returns only when every document was accepted or rejected for good (a mapping
    error, say): transient failures (connection, 429, 5xx) are retried with capped backoff,
    so the caller does not acknowledge its Kafka batch before Elasticsearch has it. While
    Elasticsearch cannot be reached, the log says so once (streams/runtime/outage.py), not per
    retry. """

    def __init__(self, client: AsyncElasticsearch, max_backoff_seconds: float = 30.0) -> None:
        self.client = client
        self.max_backoff_seconds = max_backoff_seconds

    async def write(self, documents: list[Document]) -> list[Rejected]:
        pending = list(documents)
        rejected: list[Rejected] = []
        backoff = 0.5
        while pending:
            try:
                response = await self.client.bulk(operations=self._operations(pending))
            except (TransportError, ApiError) as exc:
                if _unreachable(exc):
                    outages.failed("elasticsearch", "bulk", str(exc), held=len(pending))
                else:
                    log.warning("es_bulk_failed documents=%d error=%r retry_in=%.1fs",
                                len(pending), str(exc)[:200], backoff)
                metrics.elasticsearch_bulk_failures.inc()
                metrics.elasticsearch_retries.inc()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_seconds)
                continue
            outages.recovered("elasticsearch")
            retry = []
            for document, item in zip(pending, response["items"], strict=True):
                result = next(iter(item.values()))
                status = result.get("status", 500)
                if status < 300:
                    continue
                if status in _RETRYABLE_STATUSES:
                    retry.append(document)
                else:
                    rejected.append(Rejected(document, json.dumps(result.get("error"))[:1000]))
            if retry:
                log.warning("es_bulk_partial retrying=%d retry_in=%.1fs", len(retry), backoff)
                metrics.elasticsearch_bulk_failures.inc()
                metrics.elasticsearch_retries.inc()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_seconds)
            pending = retry
        return rejected

    @staticmethod
    def _operations(documents: list[Document]) -> list[dict[str, Any]]:
        operations: list[dict[str, Any]] = []
        for document in documents:
            if document.partial:
                operations.append({"update": {"_index": document.index, "_id": document.id}})
                operations.append({"doc": document.source, "doc_as_upsert": True})
            else:
                operations.append({"index": {"_index": document.index, "_id": document.id}})
                operations.append(document.source)
        return operations
