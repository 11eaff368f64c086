"""One bad record in the wrong place stops nothing: state the worker cannot read is skipped,
logged once and counted, and the worker goes on (issue 23)."""

from __future__ import annotations

import json
import re
import uuid

from kafka import KafkaProducer

from streams.runtime import clock
from streams.runtime.broker import connection_options
from streams.stages import changelog_topics
from streams.tooling.progress import worker_metric
from streams.tooling.simulation import TrafficSimulator

from .conftest import Pipeline, pipeline_fixture
from .test_state import account_status, kill_and_restart_elsewhere, signal

# It kills and restarts the worker: a worker of its own (tests/integration/conftest.py).
pipeline = pipeline_fixture("poison", "module")


def unreadable_count(pipeline: Pipeline) -> float | None:
    """misuse_state_unreadable_total on the worker's /metrics (a counter's family drops
    `_total`)."""
    return worker_metric(pipeline.worker.metrics_url, "misuse_state_unreadable", "_total")


def test_an_undecodable_changelog_key_or_value_is_skipped_and_counted_and_the_worker_goes_on(
        pipeline: Pipeline, tmp_path) -> None:
    """In every partition of every stage table's changelog: a state that is no state, under
    an account that gets a signal later, then two keys that are not JSON (last, so that each
    partition ends in one: Faust's recovery never finished such a partition, and the worker
    never became ready). The restarted worker is ready, skips each key with one line, reads
    the account afresh, and alerts on traffic sent after it."""
    account = f"acct-poison-{uuid.uuid4().hex[:6]}"
    changelogs = changelog_topics(pipeline.settings)
    producer = KafkaProducer(**connection_options(pipeline.settings))
    try:
        for topic, partitions in changelogs.items():
            for partition in range(partitions):
                producer.send(topic, key=json.dumps(account).encode(),
                              value=b"\x00not a state", partition=partition)
                for key in (b"acct-not-json", b"\xff\xfe"):  # not JSON; not even UTF-8
                    producer.send(topic, key=key, value=b"x", partition=partition)
        producer.flush()
    finally:
        producer.close()
    kill_and_restart_elsewhere(pipeline, tmp_path)  # recovers every table; waits for ready

    log = pipeline.worker.log_tail(10**7)
    skipped = re.findall(r"state_unreadable table=\S+ partition=\d+ offset=\d+ key=.*", log)
    assert len(skipped) == 2 * sum(changelogs.values())  # once per record
    assert all("reason=key: " in line and line.rstrip().endswith("skipped") for line in skipped)
    counted = unreadable_count(pipeline)
    assert counted is not None and counted >= len(skipped)

    # Later records: a signal for the account whose stored state is unreadable, and an attack.
    pipeline.produce([signal(account, clock.now_ms() - 60_000, "alert-poison")],
                     topic="misuse.signals")
    attack, labels = TrafficSimulator(23, clock.now_ms() - 120_000).credential_stuffing(
        attempts=80, offset_ms=0)
    pipeline.produce(attack)
    pipeline.wait_drained()
    assert account_status(pipeline, account) == "flagged"  # scored afresh
    assert pipeline.wait_for_alerts(1, **{"misuse.entity.id": labels[0].entity_id})
    log = pipeline.worker.log_tail(10**7)
    assert log.count(f"state_unreadable table=state-risk key={account} ") == 1
    assert (unreadable_count(pipeline) or 0) >= len(skipped) + 1
