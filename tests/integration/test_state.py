"""State that must outlive a worker, and decisions the worker must never override."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

from detectors.risk import Signal
from streams.runtime import clock
from streams.runtime.messages import SignalRecord
from streams.settings import REPO_ROOT
from streams.sinks.documents import iso
from streams.tooling.runner import WorkerProcess
from streams.tooling.simulation import TrafficSimulator

from .conftest import Pipeline, pipeline_fixture

# Its tests kill and restart the worker: a worker of its own (tests/integration/conftest.py).
pipeline = pipeline_fixture("state", "module")


def kill_and_restart_elsewhere(pipeline: Pipeline, tmp_path) -> None:
    """SIGKILL the worker and start a new one with an empty data directory, as on another
    machine: whatever it knows of the past must come from Kafka."""
    pipeline.worker.stop(kill=True)
    env = dict(pipeline.worker.env, MISUSE_DATA_DIR=str(tmp_path / "fresh-data"))
    pipeline.worker = WorkerProcess(pipeline.settings, pipeline.worker.log_path, env)
    pipeline.worker.start()


def test_window_state_survives_a_killed_worker_via_the_changelog(
        pipeline: Pipeline, tmp_path) -> None:
    # Recent traffic: the session's worker has seen events up to now, and state an hour behind
    # the newest event time is idle to its housekeeping, dropped at its next pass.
    simulator = TrafficSimulator(77, clock.now_ms() - 120_000)
    attack, labels = simulator.credential_stuffing(attempts=80, offset_ms=0)
    attacker = labels[0].entity_id
    before, after = attack[:15], attack[15:]  # 15 keys: under the threshold of 20

    pipeline.produce(before)
    pipeline.wait_drained()  # every input committed: the kill loses nothing acknowledged
    assert pipeline.alerts(**{"misuse.entity.id": attacker}) == []

    # Killed, and restarted on a machine without its local RocksDB: only the changelog topic
    # can give the new worker the 15 attempts it saw before.
    kill_and_restart_elsewhere(pipeline, tmp_path)

    pipeline.produce(after)
    pipeline.wait_drained()
    hits = pipeline.wait_for_alerts(1, **{"misuse.entity.id": attacker})
    assert len(hits) == 1
    misuse = hits[0]["_source"]["misuse"]
    # The incident began before the restart: without the recovered window it would start
    # with the first attempt after it.
    # (Unauthenticated events have no account key, so they arrive over several partitions
    # and slightly out of order: the window starts at one of the first attempts, not
    # necessarily the very first.)
    assert misuse["incident_start"] < iso(min(e["ts"] for e in after))


def review(pipeline: Pipeline, account: str, decision: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", "review", account, "--decision", decision,
         "--analyst", "test-analyst", "--note", "checked by hand"],
        env=pipeline.worker.env, cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def account_status(pipeline: Pipeline, account: str) -> str | None:
    pipeline.es.indices.refresh(index=pipeline.settings.index("accounts"),
                                ignore_unavailable=True)
    docs = pipeline.search("accounts", {"term": {"user.id": account}})
    return docs[0]["misuse"]["status"] if docs else None


def signal(account: str, ts_ms: int, alert_id: str, strength: float = 1.0) -> SignalRecord:
    return SignalRecord(Signal(account, "jailbreak", "jailbreak.spray", strength, ts_ms,
                               alert_id, "test evidence", alert_id))


def test_an_analysts_clearing_and_allowlisting_survive_later_signals(pipeline: Pipeline) -> None:
    account = f"acct-reviewed-{uuid.uuid4().hex[:6]}"
    old = clock.now_ms() - 600_000
    pipeline.produce([signal(account, old, "alert-old")], topic="misuse.signals")
    pipeline.wait_drained()
    assert account_status(pipeline, account) == "flagged"

    review(pipeline, account, "cleared")
    pipeline.wait_drained()
    assert account_status(pipeline, account) == "cleared"

    # The same old evidence again (a growing alert re-sent, a replay): still cleared.
    pipeline.produce([signal(account, old + 1000, "alert-old"),
                      signal(account, old + 2000, "alert-old-2")], topic="misuse.signals")
    pipeline.wait_drained()
    assert account_status(pipeline, account) == "cleared"

    review(pipeline, account, "allowlisted")
    pipeline.wait_drained()
    # Even strong new evidence leaves an allowlisted account alone.
    pipeline.produce([signal(account, clock.now_ms() + 1000, "alert-new")],
                     topic="misuse.signals")
    pipeline.wait_drained()
    assert account_status(pipeline, account) == "allowlisted"
    actions = pipeline.search("actions", {"term": {"user.id": account}})
    assert {a["event"]["action"] for a in actions} == {"cleared", "allowlisted"}
    assert all(a["misuse"]["actor"] == "test-analyst" for a in actions)


def assert_refused(pipeline: Pipeline, account: str, alert_says: str,
                   dead_letter_says: bytes) -> None:
    """A decision the worker would not apply: the account stays flagged, a security alert and
    the decision's dead letter say why."""
    assert account_status(pipeline, account) == "flagged"
    hits = pipeline.wait_for_alerts(1, **{"misuse.entity.id": account,
                                          "rule.id": "security.unverified_decision"})
    assert alert_says in hits[0]["_source"]["misuse"]["reasons"][0]
    refused = [r for r in pipeline.dead_letters(expected=10**6, timeout_s=10)
               if account.encode() in (r.value or b"")]
    assert refused and dead_letter_says in dict(refused[0].headers)["misuse.reason"]


def test_a_forged_decision_allowlists_nobody_and_raises_a_security_alert(
        pipeline: Pipeline) -> None:
    """A plain producer on misuse.feedback, in an analyst's name, without the analyst's key:
    the account stays flagged, the record is a dead letter, and a security alert says so."""
    from streams.runtime.messages import FeedbackRecord

    account = f"acct-forged-{uuid.uuid4().hex[:6]}"
    pipeline.produce([signal(account, clock.now_ms() - 60_000, "alert-forged")],
                     topic="misuse.signals")
    pipeline.wait_drained()
    assert account_status(pipeline, account) == "flagged"

    forged = FeedbackRecord(account_id=account, decision="allowlisted", analyst="test-analyst",
                            ts_ms=clock.now_ms(), until_ms=4_102_444_800_000,
                            note="trust me", signature="00" * 32)
    pipeline.produce([forged], topic="misuse.feedback")
    pipeline.wait_drained()
    assert_refused(pipeline, account, "signature does not verify", b"unverified analyst decision")
    assert not pipeline.search("actions", {"term": {"user.id": account}})  # no audit entry


def test_a_replayed_genuine_decision_clears_nothing_and_raises_a_security_alert(
        pipeline: Pipeline) -> None:
    """The probe's replay: the real signed clearing, read off misuse.feedback and written back
    after new evidence flagged the account again, is refused (a dead letter and a security
    alert); the account stays flagged and the first clearing keeps its audit record."""
    from kafka import KafkaConsumer

    account = f"acct-replayed-{uuid.uuid4().hex[:6]}"
    pipeline.produce([signal(account, clock.now_ms() - 600_000, "alert-before")],
                     topic="misuse.signals")
    pipeline.wait_drained()
    review(pipeline, account, "cleared")
    pipeline.wait_drained()
    assert account_status(pipeline, account) == "cleared"
    pipeline.produce([signal(account, clock.now_ms() + 1000, "alert-after")],
                     topic="misuse.signals")
    pipeline.wait_drained()
    assert account_status(pipeline, account) == "flagged"

    consumer = KafkaConsumer(pipeline.settings.topic("misuse.feedback"),
                             bootstrap_servers=pipeline.settings.kafka_bootstrap,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=2000)
    try:
        [genuine] = [r for r in consumer if account.encode() in (r.value or b"")]
    finally:
        consumer.close()
    pipeline.producer.send(genuine.topic, key=genuine.key, value=genuine.value).get(timeout=30)
    pipeline.wait_drained()
    assert_refused(pipeline, account, "a replay", b"refused analyst decision")
    actions = pipeline.search("actions", {"term": {"user.id": account}})
    assert [a["event"]["action"] for a in actions] == ["cleared"]


def test_a_campaign_keeps_its_id_and_grows_after_the_worker_is_killed(
        pipeline: Pipeline, tmp_path) -> None:
    """Clusters live in memory: a restarted worker rebuilds them from the vectors it had
    processed, so the operation continues under the same campaign id instead of starting over
    as a new, smaller campaign."""
    simulator = TrafficSimulator(91, clock.now_ms() - 2 * 3_600_000)
    events, labels = simulator.campaign(accounts=12, duration_ms=3_600_000)
    members = {label.entity_id for label in labels}
    # Among ordinary traffic, as always: a stream of nothing but the operation's posts shows
    # no narrative standing out from the rest (alone, its 12 accounts form no campaign).
    events = sorted(events + list(simulator.benign_accounts(60, 3_600_000)),
                    key=lambda e: e["ts"])
    cut = min(e["ts"] for e in events) + 40 * 60_000
    before, after = [e for e in events if e["ts"] < cut], [e for e in events if e["ts"] >= cut]

    def campaign_of_members(grown_past: int = 0, timeout_s: float = 120) -> dict:
        """The one active campaign holding most of the members, once its size passes
        `grown_past`: the campaign stage judges after it has read its input, so a drained
        pipeline may still be about to publish the document."""
        deadline = time.monotonic() + timeout_s
        while True:
            pipeline.es.indices.refresh(index=pipeline.settings.index("campaigns"),
                                        ignore_unavailable=True)
            found = [c for c in pipeline.search("campaigns",
                                                {"term": {"misuse.status": "active"}})
                     if len(members & set(c["misuse"]["accounts"])) >= 8]
            if (found and found[0]["misuse"]["size"] > grown_past) \
                    or time.monotonic() > deadline:
                assert len(found) == 1, found
                return found[0]
            time.sleep(1.0)

    pipeline.produce(before)
    pipeline.wait_drained()
    first = campaign_of_members()  # after wait_drained: every input committed, nothing lost

    kill_and_restart_elsewhere(pipeline, tmp_path)
    pipeline.produce(after)
    pipeline.wait_drained()

    grown = campaign_of_members(grown_past=first["misuse"]["size"])
    assert grown["misuse"]["campaign_id"] == first["misuse"]["campaign_id"]
    assert grown["misuse"]["size"] > first["misuse"]["size"]
    assert grown["misuse"]["first_seen"] == first["misuse"]["first_seen"]
    assert "campaigns_rebuilt" in pipeline.worker.log_path.read_text()


class _OpensAFile:
    """Unpickled, it creates the file at `path`: proof that a changelog's content ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (open, (self.path, "w"))


def test_a_pickle_written_into_every_changelog_runs_nothing(pipeline: Pipeline, tmp_path) -> None:
    """Whoever can write a changelog topic gets nothing run: a pickle put under an account
    that then gets a signal, in every partition of every stage table's changelog, is refused
    as unreadable state after a restart, and the account is scored afresh."""
    import pickle

    from kafka import KafkaProducer

    from streams.runtime.broker import connection_options
    from streams.stages import changelog_topics

    account = f"acct-injected-{uuid.uuid4().hex[:6]}"
    # Keyed as Faust keys table entries (JSON). A key that is not JSON is skipped at recovery
    # (tests/integration/test_poison.py).
    key = json.dumps(account).encode()
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_OpensAFile(str(marker)))
    producer = KafkaProducer(**connection_options(pipeline.settings))
    try:
        for topic, partitions in changelog_topics(pipeline.settings).items():
            for partition in range(partitions):
                producer.send(topic, key=key, value=payload, partition=partition)
        producer.flush()
    finally:
        producer.close()
    kill_and_restart_elsewhere(pipeline, tmp_path)  # recovers every table from its changelog

    pipeline.produce([signal(account, clock.now_ms() - 60_000, "alert-injected")],
                     topic="misuse.signals")
    pipeline.wait_drained()
    assert account_status(pipeline, account) == "flagged"  # scored afresh, not stopped
    assert not marker.exists()
    assert f"state_unreadable table=state-risk key={account}" in pipeline.worker.log_tail(10**7)
