"""The act stage with lists of messages: dry runs, the hourly cap and its approval queue,
the circuit breaker, reversals, and pages grouped per campaign."""

import uuid
from collections import Counter

from pydantic import SecretStr

from detectors.alerts import Alert, Entity
from detectors.policy import Automation, Paging, Policy
from streams.runtime import clock
from streams.runtime.driver import MemoryState, StageDriver
from streams.runtime.messages import (
    ActionRequest,
    Delivery,
    DocumentRecord,
    FeedbackRecord,
    PageRequest,
    encode_batch,
    feedback_batch,
    records_in,
)
from streams.runtime.outbox import Outbox
from streams.runtime.review import sign
from streams.runtime.sealing import DEVELOPMENT_RING as RING  # a local stack's keys
from streams.sinks.webhooks import message_id
from streams.stages.act import ActStage

NOW_MS = clock.now_ms()
KEYS = {"alice": SecretStr("alice-secret")}
LIVE = Automation(suspension_enabled=True, dry_run=False, max_suspensions_per_hour=2,
                  breaker_min_suspensions=50)


def act_stage(policy: Policy) -> StageDriver:
    state = MemoryState()
    return StageDriver(ActStage(policy, state, review_keys=KEYS), Outbox(lambda _: 1, RING),
                       value=lambda m: m, policy=policy, state=state)


def suspension(account: str, dry_run: bool = False, ts_ms: int = NOW_MS) -> bytes:
    return encode_batch(ActionRequest.TYPE, [ActionRequest(
        account_id=account, action="suspend", ts_ms=ts_ms, dry_run=dry_run, automated=True,
        reasons=("two detectors",), alert_ids=("alert-1",),
        detectors=("jailbreak", "campaign"))], RING)


def decided(account: str, decision: str) -> bytes:
    record = sign(FeedbackRecord(account_id=account, decision=decision, analyst="alice",
                                 ts_ms=NOW_MS, decision_id=uuid.uuid4().hex), KEYS["alice"])
    return feedback_batch([record])


def outputs(result) -> tuple[list[Delivery], dict[str, str]]:
    """The deliveries, and each audit document's outcome by its id."""
    records = [r for e in result.envelopes for r in records_in(e.value, RING)]
    audits = {r.id: r.source["event"]["outcome"] for r in records
              if isinstance(r, DocumentRecord)}
    return [r for r in records if isinstance(r, Delivery)], audits


def test_dry_run_requests_are_audited_and_never_delivered():
    driver = act_stage(Policy())  # the defaults: off, dry run
    deliveries, audits = outputs(driver.run([suspension("acct-1", dry_run=True)], NOW_MS))
    assert deliveries == []
    assert audits == {f"suspend-acct-1-{NOW_MS}": "dry_run"}


def test_over_the_cap_requests_wait_for_an_analyst_who_approves_or_rejects():
    driver = act_stage(Policy(automation=LIVE))
    deliveries, audits = outputs(driver.run(
        [suspension(f"acct-{i}") for i in range(4)], NOW_MS))
    assert [d.account_id for d in deliveries] == ["acct-0", "acct-1"]
    assert deliveries[0].receiver == "suspension" and deliveries[0].body["automated"]
    assert Counter(audits.values()) == {"sent": 2, "awaiting_approval": 2}

    deliveries, audits = outputs(driver.run([decided("acct-2", "approved"),
                                             decided("acct-3", "rejected")], NOW_MS))
    assert [(d.account_id, d.body["approved_by"]) for d in deliveries] == [("acct-2", "alice")]
    assert Counter(audits.values()) == {"sent": 1, "done": 2}
    # The approved request keeps the id it was asked for with: stable across retries.
    assert deliveries[0].id == message_id(f"suspend-acct-2-{NOW_MS}")


def test_a_replayed_approval_approves_nothing_and_raises_a_security_alert():
    """A genuine approval, written back once the same account waits again: refused."""
    driver = act_stage(Policy(automation=LIVE))
    driver.run([suspension(f"acct-{i}") for i in range(3)], NOW_MS)  # acct-2 waits
    approval = decided("acct-2", "approved")
    deliveries, _ = outputs(driver.run([approval], NOW_MS))
    assert [d.account_id for d in deliveries] == ["acct-2"]
    driver.run([suspension("acct-2", ts_ms=NOW_MS + 1)], NOW_MS + 1)  # waits again

    result = driver.run([approval], NOW_MS + 2)
    deliveries, replay_audits = outputs(result)
    assert deliveries == [] and not replay_audits
    assert len(result.dead_letters) == 1 and "a replay" in result.dead_letters[0].reason
    alerts = [r.alert for e in result.envelopes if e.topic == "misuse.alerts"
              for r in records_in(e.value, RING)]
    assert [a.rule_id for a in alerts] == ["security.unverified_decision"]


def test_a_live_request_under_a_dry_run_policy_is_not_sent():
    driver = act_stage(Policy())  # e.g. automation turned off since the request
    deliveries, audits = outputs(driver.run([suspension("acct-1", dry_run=False)], NOW_MS))
    assert deliveries == [] and list(audits.values()) == ["dry_run"]


def test_an_unsigned_approval_is_refused():
    driver = act_stage(Policy(automation=LIVE))
    driver.run([suspension(f"acct-{i}") for i in range(3)], NOW_MS)
    forged = feedback_batch([FeedbackRecord(
        account_id="acct-2", decision="approved", analyst="alice", ts_ms=NOW_MS)])
    result = driver.run([forged], NOW_MS)
    deliveries, _ = outputs(result)
    assert deliveries == [] and len(result.dead_letters) == 1


def test_the_breaker_holds_every_request_and_pages_once_until_resumed():
    policy = Policy(automation=Automation(
        suspension_enabled=True, dry_run=False, max_suspensions_per_hour=100,
        breaker_min_suspensions=3, breaker_multiple=2.0))
    driver = act_stage(policy)
    deliveries, audits = outputs(driver.run([suspension(f"acct-{i}") for i in range(6)],
                                            NOW_MS))
    suspensions = [d for d in deliveries if d.receiver == "suspension"]
    pages = [d for d in deliveries if d.receiver != "suspension"]
    assert len(suspensions) == 2  # the third tripped it
    assert {p.receiver for p in pages} == {"pagerduty", "alertmanager"}
    assert all(p.body["rule_id"] == "automation.circuit_breaker" for p in pages)
    assert Counter(audits.values())["awaiting_approval"] == 4
    deliveries, _ = outputs(driver.run([decided("automation", "resume")], NOW_MS))
    assert {d.action for d in deliveries} == {"resolve"}  # the breaker's page resolves


def test_clearing_a_suspended_account_sends_the_reversal():
    driver = act_stage(Policy(automation=LIVE))
    driver.run([suspension("acct-1")], NOW_MS)
    reversal = encode_batch(ActionRequest.TYPE, [ActionRequest(
        account_id="acct-1", action="unsuspend", ts_ms=NOW_MS + 1, analyst="alice",
        automated=False)], RING)
    deliveries, audits = outputs(driver.run([reversal], NOW_MS))
    assert [(d.action, d.account_id) for d in deliveries] == [("unsuspend", "acct-1")]
    # A second reversal has nothing left to undo.
    deliveries, audits = outputs(driver.run([reversal], NOW_MS))
    assert deliveries == [] and list(audits.values()) == ["nothing_to_reverse"]


def alert(account: str, severity: str = "high") -> Alert:
    return Alert(rule_id="campaign.coordinated", severity=severity, score=0.9,
                 entity=Entity("account", account), incident_start_ms=NOW_MS - 60_000,
                 window_start_ms=NOW_MS - 60_000, window_end_ms=NOW_MS, accounts=(account,),
                 reasons=("one narrative from 300 accounts, mail me at a@b.example",))


def test_a_campaign_of_300_accounts_pages_once_and_resolves():
    driver = act_stage(Policy(paging=Paging(max_pages_per_hour=5)))
    triggers = [PageRequest("trigger", "campaign:c1", NOW_MS, alert(f"acct-{i}"))
                for i in range(300)]
    first = alert("acct-0").alert_id
    deliveries, _ = outputs(driver.run([encode_batch(PageRequest.TYPE, triggers, RING)], NOW_MS))
    assert sorted(d.receiver for d in deliveries) == ["alertmanager", "pagerduty"]
    assert all(d.body["dedup_key"] == first for d in deliveries)
    assert "a@b.example" not in str(deliveries[0].body)  # redacted: pages leave the company
    resolve = encode_batch(PageRequest.TYPE, [PageRequest("resolve", "campaign:c1", NOW_MS)], RING)
    deliveries, _ = outputs(driver.run([resolve], NOW_MS))
    assert {(d.action, d.body["dedup_key"]) for d in deliveries} == {("resolve", first)}


def test_paging_follows_the_policy_routes_and_severity():
    driver = act_stage(Policy(paging=Paging(min_severity="critical")))
    quiet = PageRequest("trigger", "g1", NOW_MS, alert("acct-1", "high"))
    loud = PageRequest("trigger", "g2", NOW_MS, alert("acct-2", "critical"))
    deliveries, _ = outputs(driver.run([encode_batch(PageRequest.TYPE, [quiet, loud], RING)],
                                       NOW_MS))
    assert {d.body["dedup_key"] for d in deliveries} == {alert("acct-2").alert_id}


def test_the_act_stage_reads_one_partition_so_its_cap_holds_across_workers():
    from streams.settings import Settings
    from streams.stages import STAGES

    [spec] = [spec for spec in STAGES if spec.stage is ActStage]
    settings = Settings(topic_partitions=12)
    assert spec.reads == ("misuse.account-actions",)
    assert settings.partitions("misuse.account-actions") == 1  # one owner for the ledger
