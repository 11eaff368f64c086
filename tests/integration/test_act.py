"""The act stage through the real worker: suspension requests from the risk stage reach a real
HTTP receiver signed (Standard Webhooks), once in effect across a SIGKILL mid-delivery; the
circuit breaker holds the surplus and pages PagerDuty and Alertmanager fakes; an analyst
approves one held request and resumes automation, which resolves the page. Every secret
setting, and the user, password and query of the hook URLs, is a marker that no document,
topic record, log line or `misuse doctor` output holds at the end."""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import yaml
from kafka import KafkaConsumer
from pydantic import SecretStr

from detectors.risk import Signal
from streams.runtime import clock
from streams.runtime.messages import SignalRecord, encode_batch
from streams.runtime.sealing import KeyRing
from streams.settings import REPO_ROOT
from streams.tooling.runner import WorkerProcess
from tests.receiver import HANG, Receiver

from .conftest import Pipeline, close_pipeline, open_pipeline

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
# What must never leave: each secret setting, and what a hook URL carries besides its host and
# path. (SECRET is one too: a random signing secret.)
MARKERS = {name: f"marker{name.replace('_', '')}{uuid.uuid4().hex[:12]}" for name in (
    "kafka_password", "elasticsearch_password", "elasticsearch_api_key", "review_key",
    "second_webhook_secret", "pagerduty_routing_key", "hook_password", "hook_query",
    "alertmanager_password", "internal_key")}
# The worker's own key: the signals these tests write in its place are sealed with it.
INTERNAL = KeyRing((SecretStr(MARKERS["internal_key"]),))


def policy_file(tmp_path: Path) -> Path:
    policy = copy.deepcopy(yaml.safe_load((REPO_ROOT / "ops" / "policy.yaml").read_text()))
    policy["automation"].update({
        "suspension_enabled": True, "dry_run": False, "max_suspensions_per_hour": 100,
        # The 4th suspension asked for this hour trips the breaker (the usual rate is 0).
        "breaker_min_suspensions": 4, "breaker_multiple": 2.0})
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    return path


def suspend_worthy(pipeline: Pipeline, account: str) -> None:
    """Two detectors allowed to suspend, at full strength: over the suspend threshold."""
    now = clock.now_ms()
    signals = [SignalRecord(Signal(account, detector, f"{detector}.test", 1.0, now - 1000 * n,
                                   f"alert-{account}-{detector}", "test evidence"))
               for n, detector in enumerate(("jailbreak", "leaked_key"))]
    pipeline.producer.send(pipeline.settings.topic("misuse.signals"), key=account.encode(),
                           value=encode_batch(SignalRecord.TYPE, signals, INTERNAL)
                           ).get(timeout=30)


def review(pipeline: Pipeline, account: str, decision: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", "review", account, "--decision", decision,
         "--analyst", "test-analyst"], env=pipeline.worker.env, cwd=REPO_ROOT,
        capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def delivered(receiver: Receiver, path: str) -> list[dict]:
    """The bodies that had an effect at `path`."""
    return [r.json for r in receiver.requests_to(path) if r.effect]


def with_credentials(url: str, user: str, password: str, query: str | None) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{user}:{password}@{rest}" + (f"?token={query}" if query else "")


def assert_no_secret_left(pipeline: Pipeline, secrets: list[str]) -> None:
    """No secret in any document (ids included) of the run's indices, in any record (keys
    included) of its topics and changelogs, in the worker's log or in `misuse doctor`."""
    settings = pipeline.settings
    pipeline.es.indices.refresh(index=f"{settings.index_prefix}*")
    hits = pipeline.es.search(index=f"{settings.index_prefix}*", size=10_000,
                              query={"match_all": {}})["hits"]["hits"]
    documents = json.dumps([(hit["_id"], hit["_source"]) for hit in hits])
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=3000)
    consumer.subscribe(pattern=f"^(?:{re.escape(settings.topic_prefix)}|"
                               f"{re.escape(settings.app_id)}-).*")
    try:
        read = list(consumer)
    finally:
        consumer.close()
    records = [(r.key or b"") + b"\n" + (r.value or b"") for r in read]
    topics = {r.topic.removeprefix(settings.topic_prefix) for r in read}
    log = pipeline.worker.log_path.read_text()
    doctor = subprocess.run([sys.executable, "-m", "streams.cli", "doctor"],
                            env=pipeline.worker.env, cwd=REPO_ROOT, capture_output=True,
                            text=True)
    assert {"misuse.deliveries", "misuse.documents", "misuse.account-actions"} <= topics
    assert any(t.endswith("-changelog") for t in topics)
    assert hits and "delivery" in log and "kafka" in doctor.stdout
    for secret in secrets:
        assert secret not in documents
        assert not [r for r in records if secret.encode() in r]
        assert secret not in log
        assert secret not in doctor.stdout + doctor.stderr


def test_suspensions_are_signed_delivered_once_across_a_kill_and_the_breaker_pages(
        tmp_path: Path) -> None:
    receiver = Receiver(hang_s=5).start_in_thread()
    receiver.require_signatures([SecretStr(SECRET)], path="/suspend")
    receiver.script([HANG, HANG], path="/suspend")  # in flight when the worker is killed
    m = MARKERS
    env = {"MISUSE_POLICY_FILE": str(policy_file(tmp_path)),
           "MISUSE_SUSPENSION_WEBHOOK_URLS": json.dumps([with_credentials(
               receiver.url("/suspend"), "hookuser", m["hook_password"], m["hook_query"])]),
           "MISUSE_SUSPENSION_WEBHOOK_SECRETS": json.dumps([SECRET, m["second_webhook_secret"]]),
           "MISUSE_PAGERDUTY_URL": receiver.url("/pagerduty"),
           "MISUSE_PAGERDUTY_ROUTING_KEY": m["pagerduty_routing_key"],
           "MISUSE_ALERTMANAGER_URL": with_credentials(
               receiver.url("/alertmanager"), "amuser", m["alertmanager_password"], None),
           "MISUSE_WEBHOOK_TIMEOUT_SECONDS": "1",
           # Set, and unused or ignored on the open local stack: a marker all the same.
           "MISUSE_KAFKA_PASSWORD": m["kafka_password"],
           "MISUSE_ELASTICSEARCH_USERNAME": "elastic",
           "MISUSE_ELASTICSEARCH_PASSWORD": m["elasticsearch_password"],
           "MISUSE_ELASTICSEARCH_API_KEY": m["elasticsearch_api_key"],
           "MISUSE_REVIEW_KEYS": json.dumps({"test-analyst": m["review_key"]}),
           "MISUSE_INTERNAL_KEY": m["internal_key"]}
    pipeline = open_pipeline("act", tmp_path / "data", tmp_path / "worker.log",
                             env_overrides=env)
    try:
        accounts = [f"acct-suspend-{i}" for i in range(5)]
        for account in accounts[:3]:
            suspend_worthy(pipeline, account)
        # Killed while a delivery waits on the receiver: the batch is not acknowledged.
        wait_until(lambda: bool(receiver.requests_to("/suspend")), "a first delivery")
        pipeline.worker.stop(kill=True)
        pipeline.worker = WorkerProcess(pipeline.settings, pipeline.worker.log_path,
                                        pipeline.worker.env)
        pipeline.worker.start()
        wait_until(lambda: len(delivered(receiver, "/suspend")) == 3, "three suspensions")
        pipeline.wait_drained()

        bodies = delivered(receiver, "/suspend")
        assert sorted(b["account_id"] for b in bodies) == accounts[:3]
        assert all(b["action"] == "suspend" and b["automated"] and b["alert_ids"]
                   and b["policy_version"] == 1 for b in bodies)
        assert receiver.bad_signatures == 0 and not receiver.conflicting_ids()
        assert len(receiver.distinct_ids) == 3  # retries and the replay reused each id

        # Two more this hour: the 4th trips the breaker, and both wait for an analyst.
        for account in accounts[3:]:
            suspend_worthy(pipeline, account)
        wait_until(lambda: receiver.requests_to("/pagerduty"), "the breaker's page")
        pipeline.wait_drained()
        assert len(delivered(receiver, "/suspend")) == 3
        [trigger] = [r.json for r in receiver.requests_to("/pagerduty")]
        assert trigger["event_action"] == "trigger" and trigger["routing_key"]
        assert trigger["payload"]["severity"] == "critical"
        [firing] = [r.json for r in receiver.requests_to("/alertmanager")]
        assert firing["status"] == "firing"

        # An analyst approves one held suspension and resumes automation.
        review(pipeline, accounts[3], "approved")
        review(pipeline, "automation", "resume")
        wait_until(lambda: len(delivered(receiver, "/suspend")) == 4, "the approved one")
        wait_until(lambda: len(receiver.requests_to("/pagerduty")) == 2, "the resolve")
        pipeline.wait_drained()
        approved = [b for b in delivered(receiver, "/suspend")
                    if b["account_id"] == accounts[3]]
        assert approved and approved[0]["approved_by"] == "test-analyst"
        resolve = receiver.requests_to("/pagerduty")[1].json
        assert resolve["event_action"] == "resolve"
        assert resolve["dedup_key"] == trigger["dedup_key"]
        assert receiver.requests_to("/alertmanager")[-1].json["status"] == "resolved"
        # The fifth waits on: held requests are never dropped, nor sent without an analyst.
        assert accounts[4] not in {b["account_id"] for b in delivered(receiver, "/suspend")}

        audit = pipeline.search("actions", {"term": {"event.action": "deliver_suspension"}})
        assert {d["event"]["outcome"] for d in audit} == {"delivered"}
        assert all(d["misuse"]["delivery"]["attempts"] >= 1 for d in audit)
        held = pipeline.search("actions", {"term": {"event.outcome": "awaiting_approval"}})
        assert {d["user"]["id"] for d in held} == {accounts[4]}  # the 3rd's is now "sent"

        assert_no_secret_left(pipeline, [SECRET, *MARKERS.values()])
    finally:
        close_pipeline(pipeline)
        receiver.stop()
