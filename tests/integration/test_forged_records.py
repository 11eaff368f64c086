"""The worker authenticates its own records (issue 24, item 6): records forged on the internal
topics it acts on (signals, account actions, deliveries), unsigned or signed with another key,
and an "allowlisted until 2100" state written into the account-status changelog are each
refused with a security alert (the topic records also as dead letters). No account changes
status for them and no hook request goes out, while genuine records sealed with the worker's
key, sent after them, still suspend."""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Iterator

import msgpack
import pytest
from kafka import KafkaProducer
from pydantic import SecretStr

from detectors.accounts import AccountRecord, AccountStatus
from detectors.risk import Signal
from detectors.state_codec import encode_state
from streams.runtime import clock
from streams.runtime.broker import connection_options
from streams.runtime.messages import (
    ActionRequest,
    Delivery,
    SignalRecord,
    encode_batch,
)
from streams.runtime.sealing import DEVELOPMENT_RING, FORGED_RECORD_RULE, KeyRing
from streams.settings import Settings
from tests.receiver import Receiver

from .conftest import Pipeline, close_pipeline, open_pipeline
from .test_act import delivered, policy_file, wait_until
from .test_state import account_status

pytestmark = pytest.mark.integration

KEY = SecretStr(os.urandom(32).hex())
WORKER_RING = KeyRing((KEY,))
HOOK_SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
RUN = uuid.uuid4().hex[:6]
FORGED = {name: f"acct-forged-{name}-{RUN}" for name in ("signal", "action", "delivery")}
ALLOWLISTED = f"acct-forged-state-{RUN}"  # a forged allowlisting in the changelog
GENUINE = f"acct-genuine-{RUN}"
UNTIL_2100 = 4_102_444_799_000


def strong(account: str) -> list[SignalRecord]:
    """Two detectors allowed to suspend, at full strength: over the suspend threshold."""
    now = clock.now_ms()
    return [SignalRecord(Signal(account, detector, f"{detector}.test", 1.0, now - 1000 * n,
                                f"alert-{account}-{detector}", "test evidence"))
            for n, detector in enumerate(("jailbreak", "leaked_key"))]


def unsigned(record_type: str, records: list) -> bytes:
    """A well-formed batch of the right type, as the worker wrote them before it sealed."""
    return msgpack.packb({"v": 1, "type": record_type,
                          "records": [r.to_plain() for r in records]}, use_bin_type=True)


def forge_allowlisting(settings: Settings) -> None:
    """The probe's record: the account allowlisted until 2100 by an analyst, in the risk
    stage's account-status changelog, in every partition (its key's among them), sealed for
    its table and key, but with the development key, not the worker's."""
    status = AccountRecord(status=AccountStatus("allowlisted", "analyst", since_ms=clock.now_ms(),
                                                allowlisted_until_ms=UNTIL_2100))
    value = DEVELOPMENT_RING.seal(encode_state(status),
                                  f"state-account-status\0{ALLOWLISTED}".encode())
    topic = f"{settings.app_id}-state-account-status-changelog"
    producer = KafkaProducer(**connection_options(settings))
    try:
        for partition in range(settings.partitions("misuse.signals")):
            producer.send(topic, key=json.dumps(ALLOWLISTED).encode(), value=value,
                          partition=partition)
        producer.flush()
    finally:
        producer.close()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pipeline, Receiver]]:
    """One worker with a key of its own: the forged records, then the genuine ones, all
    processed before the tests look."""
    tmp = tmp_path_factory.mktemp("forged")
    receiver = Receiver().start_in_thread()
    receiver.require_signatures([SecretStr(HOOK_SECRET)], path="/suspend")
    env = {"MISUSE_POLICY_FILE": str(policy_file(tmp)),
           "MISUSE_INTERNAL_KEY": KEY.get_secret_value(),
           "MISUSE_SUSPENSION_WEBHOOK_URLS": json.dumps([receiver.url("/suspend")]),
           "MISUSE_SUSPENSION_WEBHOOK_SECRETS": json.dumps([HOOK_SECRET]),
           "MISUSE_PAGERDUTY_URL": receiver.url("/pagerduty")}
    pipeline = open_pipeline("forged", tmp / "data", tmp / "worker.log", env_overrides=env,
                             before_start=forge_allowlisting)
    try:
        settings, send = pipeline.settings, pipeline.producer.send
        now = clock.now_ms()
        suspend = ActionRequest({"account_id": FORGED["action"], "action": "suspend",
                                 "ts_ms": now, "automated": True, "by": "worker",
                                 "reasons": ["forged"]})
        delivery = Delivery(f"forged-{RUN}", "suspension",
                            {"account_id": FORGED["delivery"], "action": "suspend",
                             "automated": True}, FORGED["delivery"], "suspend", now)
        forged = [
            ("misuse.signals", FORGED["signal"], unsigned(SignalRecord.TYPE,
                                                          strong(FORGED["signal"]))),
            ("misuse.signals", FORGED["signal"], encode_batch(
                SignalRecord.TYPE, strong(FORGED["signal"]), DEVELOPMENT_RING)),
            ("misuse.account-actions", FORGED["action"], encode_batch(
                ActionRequest.TYPE, [suspend], KeyRing((SecretStr("a guessed key"),)))),
            ("misuse.deliveries", FORGED["delivery"], unsigned(Delivery.TYPE, [delivery])),
        ]
        for topic, key, value in forged:
            send(settings.topic(topic), key=key.encode(), value=value).get(timeout=30)
        # Later, genuine: the worker's own key.
        for account in (GENUINE, ALLOWLISTED):
            send(settings.topic("misuse.signals"), key=account.encode(),
                 value=encode_batch(SignalRecord.TYPE, strong(account), WORKER_RING)
                 ).get(timeout=30)
        wait_until(lambda: len(delivered(receiver, "/suspend")) >= 2, "two suspensions", 120)
        pipeline.wait_drained()
        yield pipeline, receiver
    finally:
        close_pipeline(pipeline)
        receiver.stop()


def test_forged_records_act_on_nobody_and_genuine_ones_after_them_still_do(
        run: tuple[Pipeline, Receiver]) -> None:
    pipeline, receiver = run
    suspended = sorted(body["account_id"] for body in delivered(receiver, "/suspend"))
    # The forged allowlisting never became state: the account was suspended like any other.
    assert suspended == sorted([GENUINE, ALLOWLISTED])
    assert receiver.bad_signatures == 0
    for account in FORGED.values():
        assert account_status(pipeline, account) is None
        assert not pipeline.search("actions", {"term": {"user.id": account}})
    assert account_status(pipeline, ALLOWLISTED) not in (None, "allowlisted")


def test_each_forged_record_is_refused_with_a_security_alert(
        run: tuple[Pipeline, Receiver]) -> None:
    pipeline, _ = run
    hits = pipeline.wait_for_alerts(4, **{"rule.id": FORGED_RECORD_RULE})
    refused = {hit["_source"]["misuse"]["entity"]["id"]: hit["_source"]["misuse"]["reasons"][0]
               for hit in hits}
    assert set(refused) == {"signal", "action-request", "delivery",
                            "state:state-account-status"}
    assert "misuse.account-actions" in refused["action-request"]
    assert "misuse.deliveries" in refused["delivery"]
    assert ALLOWLISTED in refused["state:state-account-status"]
    log = pipeline.worker.log_tail(10**7)
    assert f"state_unreadable table=state-account-status key={ALLOWLISTED} " in log
    assert KEY.get_secret_value() not in log


def test_each_forged_topic_record_is_a_dead_letter_with_its_reason(
        run: tuple[Pipeline, Receiver]) -> None:
    pipeline, _ = run
    letters = [dict(r.headers) for r in pipeline.dead_letters(expected=4, timeout_s=20)]
    reasons = sorted((h["misuse.source.topic"].decode(), h["misuse.reason"].decode())
                     for h in letters)
    settings = pipeline.settings
    assert [topic for topic, _ in reasons] == sorted(settings.topic(t) for t in (
        "misuse.account-actions", "misuse.deliveries", "misuse.signals", "misuse.signals"))
    assert all("unverified" in reason for _, reason in reasons)
    assert sum("carries no MAC" in reason for _, reason in reasons) == 2
    assert sum("does not verify" in reason for _, reason in reasons) == 2
