"""`misuse eval`: replay a labelled event file through the real pipeline on the real stack, in
topics and indices of its own, then score what came out (streams/tooling/evaluation.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from elasticsearch import Elasticsearch

from streams.runtime.broker import consumer_client, create_topics
from streams.runtime.messages import alerts_in
from streams.settings import REPO_ROOT, Settings
from streams.sinks.elasticsearch import client_options, install_templates, search_sources
from streams.stages import changelog_topics
from streams.tooling.evaluation import Evaluation, dead_letter_report, evaluate
from streams.tooling.findings import Findings
from streams.tooling.produce import produce_lines
from streams.tooling.progress import Progress
from streams.tooling.runner import WorkerProcess, isolated_environment, remove_run
from streams.tooling.simulation import Label


def read_labels(path: Path) -> list[Label]:
    return [Label(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def account_keys(lines: list[bytes]) -> dict[str, str]:
    keys: dict[str, str] = {}
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("account_id") and event.get("api_key_id"):
            keys.setdefault(event["api_key_id"], event["account_id"])
    return keys


def sent_alerts(settings: Settings) -> list[dict[str, Any]]:
    """Every version of every alert, in the order the detectors sent them: the first version
    of an incident dates its detection."""
    consumer = consumer_client(settings, settings.topic("misuse.alerts"),
                               auto_offset_reset="earliest", enable_auto_commit=False,
                               consumer_timeout_ms=3000)
    ring = settings.internal_keys
    alerts = [alert.to_dict() for record in consumer
              for alert in alerts_in(record.value, ring)]
    consumer.close()
    return alerts


def dead_letters(settings: Settings) -> list[tuple[str, str]]:
    """(logical source topic, reason) of every dead letter of the run."""
    consumer = consumer_client(settings, settings.topic("misuse.deadletter"),
                               auto_offset_reset="earliest", enable_auto_commit=False,
                               consumer_timeout_ms=3000)
    letters = []
    for record in consumer:
        headers = {key: value for key, value in record.headers or ()}
        topic = headers.get("misuse.source.topic", b"").decode("utf-8", "replace")
        letters.append((topic.removeprefix(settings.topic_prefix),
                        headers.get("misuse.reason", b"").decode("utf-8", "replace")))
    consumer.close()
    return letters


def read_classes(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    return {item["account_id"]: item["class"] for line in path.read_text().splitlines()
            if line.strip() and (item := json.loads(line))}


def search(es: Elasticsearch, settings: Settings, index: str) -> list[dict[str, Any]]:
    es.indices.refresh(index=settings.index(index), ignore_unavailable=True)
    return search_sources(es, settings, index)


def replay_and_evaluate(events_path: Path, labels_path: Path, keep: bool = False,
                        classes_path: Path | None = None) -> tuple[Evaluation, Findings]:
    settings, env = isolated_environment("eval", REPO_ROOT / ".stack" / "eval")
    create_topics(settings, changelog_topics(settings))
    es = Elasticsearch(**client_options(settings))
    install_templates(es, settings)
    lines = [line for line in events_path.read_bytes().splitlines() if line.strip()]
    worker = WorkerProcess(settings, REPO_ROOT / ".stack" / "eval-worker.log", env)
    worker.start()
    try:
        progress = Progress.of_worker(settings, worker.metrics_url, expected=len(lines))
        produce_lines(settings, lines, settings.topic("api.usage"))
        worker.wait_drained(timeout_s=3600, progress=progress)
        progress.finish()
    finally:
        worker.stop()
    try:
        alerts, accounts = sent_alerts(settings), search(es, settings, "accounts")
        campaigns = [doc["misuse"] for doc in search(es, settings, "campaigns")]
        evaluation = evaluate(read_labels(labels_path), alerts, campaigns,
                              {doc["user"]["id"]: doc["misuse"]["status"] for doc in accounts},
                              account_keys(lines),
                              dead_letter_report(len(lines), dead_letters(settings)),
                              read_classes(classes_path))
        return evaluation, Findings.of(alerts, campaigns, accounts)
    finally:
        if not keep:
            remove_run(settings)
