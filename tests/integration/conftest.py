"""Integration fixtures: the real local Kafka and Elasticsearch (ops/stack up) and a real worker
process, isolated from other runs by a topic and index prefix of its own."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch
from kafka import KafkaConsumer, KafkaProducer

from streams.broker import consumer_lag
from streams.settings import CONSUMED_TOPICS, REPO_ROOT, Settings

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Worker:
    """A `misuse worker` process with its own environment and log file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 120) -> None:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"],
                                            env=self.env, cwd=REPO_ROOT, stdout=log,
                                            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited at start:\n{self.log_tail()}")
            with self.log_path.open("rb") as log:
                log.seek(offset)
                if b"Ready" in log.read():
                    return
            time.sleep(0.5)
        raise RuntimeError(f"worker not ready in {timeout_s} s:\n{self.log_tail()}")

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


class Pipeline:
    """Produce into, and look at, the pipeline under test."""

    def __init__(self, settings: Settings, worker: Worker) -> None:
        self.settings = settings
        self.worker = worker
        self.es = Elasticsearch(settings.elasticsearch_url, request_timeout=30)
        self.producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)

    def produce(self, events: list[Any], topic: str = "api.usage") -> None:
        for event in events:
            raw = event if isinstance(event, bytes) else json.dumps(event).encode()
            key = event.get("account_id") if isinstance(event, dict) else None
            self.producer.send(self.settings.topic(topic), value=raw,
                               key=key.encode() if isinstance(key, str) else None)
        self.producer.flush()

    def wait_drained(self, timeout_s: float = 120) -> None:
        """Until the worker has committed every message of every stage, twice in a row."""
        topics = [self.settings.topic(t) for t in CONSUMED_TOPICS]
        deadline = time.monotonic() + timeout_s
        quiet = 0
        while quiet < 2:
            assert time.monotonic() < deadline, f"worker did not drain:\n{self.worker.log_tail()}"
            assert "Crashed reason" not in self.worker.log_tail(200_000), self.worker.log_tail()
            time.sleep(1.0)
            lag = consumer_lag(self.settings, self.settings.app_id, topics)
            quiet = quiet + 1 if lag == 0 else 0
        self.es.indices.refresh(index=f"{self.settings.index_prefix}*")

    def alerts(self, **term: Any) -> list[dict[str, Any]]:
        query = {"bool": {"filter": [{"term": {k: v}} for k, v in term.items()]}}
        response = self.es.search(index=self.settings.index("alerts"), query=query, size=1000,
                                  ignore_unavailable=True)
        return list(response["hits"]["hits"])

    def search(self, index: str, query: dict[str, Any]) -> list[dict[str, Any]]:
        """The sources of the documents of one index (name without prefix) that match."""
        response = self.es.search(index=self.settings.index(index), query=query, size=10_000,
                                  ignore_unavailable=True)
        return [hit["_source"] for hit in response["hits"]["hits"]]

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

    def dead_letters(self, expected: int, timeout_s: float = 60) -> list[Any]:
        consumer = KafkaConsumer(self.settings.topic("misuse.deadletter"),
                                 bootstrap_servers=self.settings.kafka_bootstrap,
                                 auto_offset_reset="earliest", enable_auto_commit=False,
                                 consumer_timeout_ms=2000)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        try:
            while len(records) < expected and time.monotonic() < deadline:
                records.extend(consumer)
        finally:
            consumer.close()
        return records


@pytest.fixture(scope="session")
def isolated_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    run = uuid.uuid4().hex[:8]
    env = dict(os.environ)
    env.update({
        "MISUSE_TOPIC_PREFIX": f"test-{run}.",
        "MISUSE_INDEX_PREFIX": f"misuse-test-{run}-",
        "MISUSE_APP_ID": f"misuse-test-{run}",
        "MISUSE_WEB_PORT": str(free_port()),
        "MISUSE_DATA_DIR": str(tmp_path_factory.mktemp("worker-data")),
        "MISUSE_TOPIC_PARTITIONS": "3",
        "MISUSE_INDEX_BATCH_SECONDS": "0.5",
        "HF_HUB_OFFLINE": "1",
    })
    return env


@pytest.fixture(scope="session")
def settings(isolated_env: dict[str, str]) -> Settings:
    keys = {k: v for k, v in isolated_env.items() if k.startswith("MISUSE_")}
    previous = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    try:
        return Settings()
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def pipeline(isolated_env: dict[str, str], settings: Settings,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    setup = subprocess.run([sys.executable, "-m", "streams.cli", "setup"], env=isolated_env,
                           cwd=REPO_ROOT, capture_output=True, text=True)
    assert setup.returncode == 0, setup.stdout + setup.stderr
    worker = Worker(isolated_env, tmp_path_factory.mktemp("logs") / "worker.log")
    worker.start()
    yield Pipeline(settings, worker)
    worker.stop()
    es = Elasticsearch(settings.elasticsearch_url)
    es.indices.delete(index=f"{settings.index_prefix}*", ignore_unavailable=True)
    for name in list(es.indices.get_index_template(name=f"{settings.index_prefix}*")
                     .get("index_templates", [])):
        es.indices.delete_index_template(name=name["name"])


