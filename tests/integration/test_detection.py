"""Every detector on the simulated "full" mix, through the real Kafka, the real embedding model
and the real Elasticsearch: the labelled misuse is found, the benign crowds are not."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import defaultdict
from typing import Any

import pytest

from streams.runtime import clock
from streams.settings import REPO_ROOT
from streams.tooling.simulation import Traffic, preset_options, simulate

from .conftest import Pipeline


@pytest.fixture(scope="module")
def full_mix(pipeline: Pipeline) -> Traffic:
    traffic = simulate(2024, clock.now_ms() - 4 * 3_600_000, **preset_options("full"))
    pipeline.produce(traffic.events)
    pipeline.wait_drained(timeout_s=1200)
    return traffic


def alerted(pipeline: Pipeline, rule_prefix: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(entity kind, entity id) -> alert source, for the alerts of one detector."""
    hits = pipeline.search("alerts", {"prefix": {"rule.id": rule_prefix}})
    return {(h["misuse"]["entity"]["kind"], h["misuse"]["entity"]["id"]): h for h in hits}


def labelled(traffic: Traffic, rule: str) -> set[tuple[str, str]]:
    return {(label.entity_kind, label.entity_id) for label in traffic.labels
            if label.rule == rule}


def all_misusers(traffic: Traffic) -> set[str]:
    """Labelled entities, and the accounts that own a labelled (leaked) key: their key is
    being misused, so flagging them for review is right."""
    entities = {label.entity_id for label in traffic.labels}
    owners = {e["account_id"] for e in traffic.events
              if e["api_key_id"] in entities and e.get("account_id")}
    return entities | owners


def test_each_campaign_style_is_found_with_its_members_and_no_benign_account(
        pipeline: Pipeline, full_mix: Traffic) -> None:
    """Wrappers, one template, and a slow spread through residential proxies: each operation
    is one campaign document holding its members, and no benign crowd is linked to any."""
    operations: dict[str, set[str]] = defaultdict(set)
    for label in full_mix.labels:
        if label.rule == "campaign":
            operations[label.scenario].add(label.entity_id)
    assert len(operations) == 3
    campaigns = pipeline.search("campaigns", {"term": {"misuse.status": "active"}})
    assert campaigns, "no campaign document"
    for scenario, members in operations.items():
        best = max(campaigns, key=lambda c: len(members & set(c["misuse"]["accounts"])))
        found = set(best["misuse"]["accounts"])
        assert len(found & members) >= 0.9 * len(members), (scenario, sorted(found))
        assert best["misuse"]["label_terms"] and best["misuse"]["sample_prompts"]
        assert best["misuse"]["first_seen"] <= best["misuse"]["last_seen"]
        assert best["misuse"]["clusters"]
    every_member = set().union(*operations.values())
    linked_benign = set().union(*(set(c["misuse"]["accounts"]) for c in campaigns)) - every_member
    assert not linked_benign, sorted(linked_benign)
    # One alert per campaign, not one per event, with the members as its accounts.
    alerts = alerted(pipeline, "campaign.")
    assert {("campaign", c["misuse"]["campaign_id"]) for c in campaigns} <= set(alerts)
    every_document = pipeline.search("campaigns", {"match_all": {}})  # merged ones too
    assert len(alerts) == len(every_document)


@pytest.mark.parametrize("rule", ["credential_stuffing", "leaked_key", "jailbreak", "scraping",
                                  "sybil"])
def test_each_automated_attack_is_alerted_on_its_entity(
        pipeline: Pipeline, full_mix: Traffic, rule: str) -> None:
    expected = labelled(full_mix, rule)
    assert expected
    found = alerted(pipeline, f"{rule}.")
    if rule == "sybil":  # the farm is labelled by network and by each account
        expected = {e for e in expected if e[0] == "network"}
    missed = expected - set(found)
    assert not missed, (missed, sorted(found))


def test_no_benign_entity_is_alerted_and_the_batch_customer_is_left_alone(
        pipeline: Pipeline, full_mix: Traffic) -> None:
    misusers = all_misusers(full_mix)
    hits = pipeline.search("alerts", {"bool": {"must_not": [
        {"prefix": {"rule.id": "campaign."}}]}})
    false_alarms = []
    for hit in hits:
        entity = hit["misuse"]["entity"]
        if entity["id"] in misusers or entity["kind"] == "pattern":
            continue
        accounts = set(hit["misuse"]["accounts"])
        if entity["kind"] in ("ip", "network") and accounts & misusers:
            continue
        false_alarms.append((hit["rule"]["id"], entity))
    assert not false_alarms
    batch_accounts = {e["account_id"] for e in full_mix.events
                      if str(e.get("account_id", "")).startswith("acct-batch")}
    assert batch_accounts
    flagged = {h["user"]["id"] for h in pipeline.search("accounts", {"match_all": {}})}
    assert not flagged & batch_accounts


def test_flagged_accounts_carry_score_reasons_and_evidence_links(
        pipeline: Pipeline, full_mix: Traffic) -> None:
    accounts = pipeline.search("accounts", {"match_all": {}})
    assert accounts
    misusers = all_misusers(full_mix)
    by_status: dict[str, list[str]] = defaultdict(list)
    for doc in accounts:
        misuse = doc["misuse"]
        by_status[misuse["status"]].append(doc["user"]["id"])
        assert doc["user"]["id"] in misusers, doc["user"]["id"]
        assert 0 < misuse["risk_score"] <= 1
        assert misuse["reasons"] and all(r["alert_id"] or r["detector"] == "anomaly"
                                         for r in misuse["reasons"])
        assert misuse["first_flagged"] and misuse["history"]
    assert by_status["flagged"] or by_status["suspended"]
    # Suspension requests exist only as dry-run audit records: automation is off by default.
    for action in pipeline.search("actions", {"term": {"event.action": "suspend"}}):
        assert action["misuse"]["dry_run"] is True


def test_an_alert_closed_as_a_false_positive_stops_feeding_its_accounts_risk(
        pipeline: Pipeline, full_mix: Traffic) -> None:
    account = max(pipeline.search("accounts", {"match_all": {}}),
                  key=lambda doc: len(doc["misuse"]["reasons"]))
    account_id, before = account["user"]["id"], account["misuse"]
    alert_id = next(r["alert_id"] for r in before["reasons"] if r["alert_id"])
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", "review", "--alert", alert_id, "--decision",
         "closed", "--reason", "false_positive", "--analyst", "test-analyst"],
        env=pipeline.worker.env, cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr

    def now_reasons() -> list[str]:
        pipeline.es.indices.refresh(index=pipeline.settings.index("accounts"))
        [doc] = pipeline.search("accounts", {"term": {"user.id": account_id}})
        return [r["alert_id"] for r in doc["misuse"]["reasons"]]

    deadline = time.monotonic() + 120
    while alert_id in now_reasons():
        assert time.monotonic() < deadline, "the closed alert still feeds the account"
        time.sleep(1)
    [after] = pipeline.search("accounts", {"term": {"user.id": account_id}})
    assert after["misuse"]["risk_score"] < before["risk_score"]
    [alert] = [hit["_source"] for hit in pipeline.es.search(
        index=pipeline.settings.index("alerts"), query={"ids": {"values": [alert_id]}}
    )["hits"]["hits"]]
    assert alert["misuse"]["workflow"] == {**alert["misuse"]["workflow"], "status": "closed",
                                           "close_reason": "false_positive",
                                           "analyst": "test-analyst"}
    def audited() -> bool:
        pipeline.es.indices.refresh(index=pipeline.settings.index("actions"))
        return bool(pipeline.search("actions", {"term": {"event.action": "alert_closed"}}))

    while not audited():  # the audit record may travel in another partition than the account's
        assert time.monotonic() < deadline, "the closing was not audited"
        time.sleep(1)
