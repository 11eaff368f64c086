import asyncio
import logging
from typing import Any

import pytest
from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig
from elasticsearch import ApiError
from elasticsearch import ConnectionError as EsConnectionError

from streams.runtime.outage import Outages
from streams.sinks import elasticsearch
from streams.sinks.elasticsearch import Document, ElasticsearchSink


class FlakyClient:
    """Fails the first `failures` bulk requests with the errors given, then accepts all."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def bulk(self, operations: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return {"items": [{"index": {"status": 201}}] * (len(operations) // 2)}


def api_error(status: int) -> ApiError:
    meta = ApiResponseMeta(status, "1.1", HttpHeaders(), 0.01,
                           NodeConfig("http", "127.0.0.1", 9200))
    return ApiError(f"status {status}", meta, {"error": "x"})


@pytest.fixture
def outages(monkeypatch: pytest.MonkeyPatch) -> Outages:
    async def no_wait(seconds: float) -> None:
        pass

    monkeypatch.setattr(elasticsearch.asyncio, "sleep", no_wait)
    now = iter(range(0, 1000, 10))
    fresh = Outages(lambda: float(next(now)), logging.getLogger("test.outage"))
    monkeypatch.setattr(elasticsearch, "outages", fresh)
    return fresh


DOCS = [Document("misuse-alerts", f"id-{n}", {"n": n}) for n in range(3)]


def test_an_unreachable_elasticsearch_is_one_warning_and_one_info(
        outages: Outages, caplog: pytest.LogCaptureFixture) -> None:
    refused = EsConnectionError("Cannot connect to host 127.0.0.1:9200")
    client = FlakyClient(refused, refused, api_error(503), refused)
    with caplog.at_level(logging.INFO):
        assert asyncio.run(ElasticsearchSink(client).write(DOCS)) == []  # type: ignore[arg-type]
    assert client.calls == 5
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "elasticsearch_unreachable first=bulk "
                    "error='Connection error' held_documents=3"),
        ("INFO", "elasticsearch_reachable down_for=40s failures=bulk:4 seen=request")]


def test_a_request_elasticsearch_refuses_is_logged_at_every_retry(
        outages: Outages, caplog: pytest.LogCaptureFixture) -> None:
    client = FlakyClient(api_error(401), api_error(401))
    with caplog.at_level(logging.INFO):
        asyncio.run(ElasticsearchSink(client).write(DOCS))  # type: ignore[arg-type]
    assert [r.getMessage().split()[0] for r in caplog.records] == ["es_bulk_failed"] * 2
    assert not outages.ongoing("elasticsearch")
