"""Integration fixtures: the real local Kafka and Elasticsearch (ops/stack up) and a real worker
process, isolated from other runs by a topic and index prefix of its own."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from elasticsearch import Elasticsearch
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streams.runtime.broker import connection_options
from streams.runtime.messages import encode_batch, feedback_batch
from streams.settings import REPO_ROOT, Settings
from streams.sinks.elasticsearch import search_sources
from streams.tooling.runner import WorkerProcess, isolated_environment, remove_run
from tests.faults.harness import WORKER_ENV

pytestmark = pytest.mark.integration


class Pipeline:
    """Produce into, and look at, the pipeline under test."""

    def __init__(self, settings: Settings, worker: WorkerProcess) -> None:
        self.settings = settings
        self.worker = worker
        self.es = Elasticsearch(settings.elasticsearch_url, request_timeout=30)
        self.producer = KafkaProducer(**connection_options(settings), linger_ms=5)

    def produce(self, events: list[Any], topic: str = "api.usage") -> None:
        """Usage events (dicts, or raw bytes to test bad input) into api.usage; records into
        an internal topic, each as a batch of one, as a stage would send it."""
        futures = []
        for event in events:
            if topic == "misuse.feedback":  # as `misuse review` writes it: not sealed
                raw, key = feedback_batch([event]), None
            elif topic != "api.usage":
                raw, key = encode_batch(event.TYPE, [event], self.settings.internal_keys), None
            else:
                raw = event if isinstance(event, bytes) else json.dumps(event).encode()
                key = event.get("account_id") if isinstance(event, dict) else None
            futures.append(self.producer.send(self.settings.topic(topic), value=raw,
                                              key=key.encode() if isinstance(key, str) else None))
        self.producer.flush()
        for future in futures:
            future.get(timeout=30)  # a send that failed fails the test, not the assertion later

    def wait_drained(self, timeout_s: float = 300) -> None:
        self.worker.wait_drained(timeout_s)
        self.es.indices.refresh(index=f"{self.settings.index_prefix}*", ignore_unavailable=True)

    def alerts(self, **term: Any) -> list[dict[str, Any]]:
        query = {"bool": {"filter": [{"term": {k: v}} for k, v in term.items()]}}
        response = self.es.search(index=self.settings.index("alerts"), query=query, size=1000,
                                  ignore_unavailable=True)
        return list(response["hits"]["hits"])

    def search(self, index: str, query: dict[str, Any]) -> list[dict[str, Any]]:
        return search_sources(self.es, self.settings, index, query)

    def wait_for_alerts(self, count: int, timeout_s: float = 60, **term: Any
                        ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while True:
            self.es.indices.refresh(index=f"{self.settings.index_prefix}*",
                                    ignore_unavailable=True)
            hits = self.alerts(**term)
            if len(hits) >= count or time.monotonic() > deadline:
                return hits
            time.sleep(1.0)

    def dead_letter_mark(self) -> dict[TopicPartition, int]:
        """Where the dead-letter topic ends now: a test reading from here sees its own letters
        only, not those of the files that used this session's pipeline before it."""
        consumer = KafkaConsumer(**connection_options(self.settings))
        try:
            topic = self.settings.topic("misuse.deadletter")
            parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
            return dict(consumer.end_offsets(parts))
        finally:
            consumer.close()

    def dead_letters(self, expected: int, timeout_s: float = 60,
                     since: dict[TopicPartition, int] | None = None) -> list[Any]:
        """The dead letters, all of them or those after `since` (`dead_letter_mark`)."""
        topic = self.settings.topic("misuse.deadletter")
        consumer = KafkaConsumer(**connection_options(self.settings),
                                 auto_offset_reset="earliest", enable_auto_commit=False,
                                 consumer_timeout_ms=2000)
        if since:
            consumer.assign(list(since))
            for partition, offset in since.items():
                consumer.seek(partition, offset)
        else:
            consumer.subscribe([topic])
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        try:
            while len(records) < expected and time.monotonic() < deadline:
                records.extend(consumer)
        finally:
            consumer.close()
        return records


def open_pipeline(name: str, data_root: Path, log_path: Path, partitions: int = 3,
                  env_overrides: dict[str, str] | None = None,
                  before_start: Callable[[Settings], None] | None = None) -> Pipeline:
    """A worker with topics, indices, consumer group and state of its own, started.
    `before_start`: what to write to its topics once they exist, before the worker starts
    (a changelog record, say, which a running worker would not read)."""
    settings, env = isolated_environment(name, data_root)
    env.update({**WORKER_ENV, "MISUSE_TOPIC_PARTITIONS": str(partitions),
                # The analysts' decisions the tests make are signed with this key.
                "MISUSE_REVIEW_KEYS": json.dumps({"test-analyst": uuid.uuid4().hex}),
                **(env_overrides or {})})
    settings = settings.model_copy(update={"topic_partitions": partitions})
    setup = subprocess.run([sys.executable, "-m", "streams.cli", "setup"], env=env,
                           cwd=REPO_ROOT, capture_output=True, text=True)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    if before_start is not None:
        before_start(settings)
    worker = WorkerProcess(settings, log_path, env)
    worker.start()
    return Pipeline(settings, worker)


def close_pipeline(pipeline: Pipeline) -> None:
    # Tests that kill and restart the worker replace pipeline.worker: stop the one running now.
    pipeline.worker.stop()
    remove_run(pipeline.settings)


def pipeline_fixture(name: str, scope: Literal["session", "module"]) -> Any:
    """A `pipeline` fixture: a worker of its own, for the session or for one test file."""

    @pytest.fixture(scope=scope, name="pipeline")
    def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
        pipeline = open_pipeline(name, tmp_path_factory.mktemp(f"{name}-data"),
                                 tmp_path_factory.mktemp(f"{name}-logs") / "worker.log")
        yield pipeline
        close_pipeline(pipeline)

    return pipeline


# Shared by the test files that leave the worker running. A file whose tests kill and
# restart it takes its own (`pipeline = pipeline_fixture(<file>, "module")`): a restarted
# worker recovers every table and rebuilds the campaign clusters from all its topics hold,
# which on the session's worker can be the whole full mix of the detection tests.
pipeline = pipeline_fixture("test", "session")
