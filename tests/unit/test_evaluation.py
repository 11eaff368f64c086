from __future__ import annotations

import json
from typing import Any

import pytest

from streams.tooling.evaluation import (
    Evaluation,
    FamilyScore,
    dead_letter_report,
    evaluate,
    format_table,
)
from streams.tooling.simulation.common import Label

T0 = 1_790_000_000_000


def alert(rule_id: str, kind: str, entity_id: str, end_ms: int, accounts: tuple[str, ...] = (),
          alert_id: str | None = None, shadow: bool = False) -> dict[str, Any]:
    return {"alert_id": alert_id or f"{rule_id}|{kind}|{entity_id}", "rule_id": rule_id,
            "severity": "high", "score": 0.9, "entity": {"kind": kind, "id": entity_id},
            "incident_start_ms": end_ms - 60_000, "window_start_ms": end_ms - 60_000,
            "window_end_ms": end_ms, "reasons": ["x"], "evidence": {},
            "accounts": list(accounts), "shadow": shadow}


def label(rule: str, kind: str, entity_id: str, start_ms: int = T0,
          scenario: str | None = None) -> Label:
    return Label(scenario or rule, rule, kind, entity_id, start_ms)


def family(evaluation: Evaluation, name: str) -> FamilyScore:
    return next(f for f in evaluation.families if f.family == name)


def test_perfect_detection_scores_one_and_measures_the_delay() -> None:
    labels = [label("credential_stuffing", "ip", "10.0.0.1"),
              label("scraping", "account", "acct-scr", T0 + 5_000)]
    alerts = [alert("credential_stuffing.key_enumeration", "ip", "10.0.0.1", T0 + 30_000),
              alert("scraping.distillation", "account", "acct-scr", T0 + 125_000,
                    accounts=("acct-scr",), shadow=True)]
    result = evaluate(labels, alerts)
    assert [f.family for f in result.families] == ["credential_stuffing", "scraping"]
    for f in (*result.families, result.overall):
        assert (f.precision, f.recall, f.fp, f.fn) == (1.0, 1.0, 0, 0)
    assert family(result, "credential_stuffing").delay.median_s == 30.0
    assert family(result, "scraping").delay.max_s == 120.0
    assert result.overall.tp == 2 and result.overall.delay.n == 2
    assert result.benign == ()


def test_a_missed_entity_lowers_recall_only() -> None:
    labels = [label("jailbreak", "account", "acct-j1"), label("jailbreak", "account", "acct-j2")]
    alerts = [alert("jailbreak.spray", "account", "acct-j1", T0 + 10_000, accounts=("acct-j1",))]
    jb = family(evaluate(labels, alerts), "jailbreak")
    assert (jb.tp, jb.fp, jb.fn) == (1, 0, 1)
    assert jb.precision == 1.0 and jb.recall == 0.5
    assert jb.missed == (("account", "acct-j2"),)
    assert jb.delay.n == 1


def test_a_false_positive_lowers_precision_and_is_listed_as_benign() -> None:
    labels = [label("scraping", "account", "acct-scr")]
    alerts = [alert("scraping.distillation", "account", "acct-scr", T0 + 1_000),
              alert("scraping.distillation", "account", "acct-reader", T0 + 2_000)]
    result = evaluate(labels, alerts)
    sc = family(result, "scraping")
    assert (sc.tp, sc.fp, sc.fn) == (1, 1, 0)
    assert sc.precision == 0.5 and sc.recall == 1.0
    assert sc.false_positives == (("account", "acct-reader"),)
    assert [(b.kind, b.id, b.rules) for b in result.benign] == [
        ("account", "acct-reader", ("scraping.distillation",))]


def test_a_resent_alert_counts_once_and_its_first_version_dates_the_detection() -> None:
    labels = [label("sybil", "network", "10.9.9.0/24"),
              label("sybil", "account", "acct-s1"), label("sybil", "account", "acct-s2")]
    first = alert("sybil.shared_client", "network", "10.9.9.0/24", T0 + 60_000,
                  accounts=("acct-s1",), alert_id="a1")
    grown = alert("sybil.shared_client", "network", "10.9.9.0/24", T0 + 600_000,
                  accounts=("acct-s1", "acct-s2"), alert_id="a1")
    result = evaluate(labels, [first, grown, grown])
    sy = family(result, "sybil")
    assert (sy.tp, sy.fp, sy.fn) == (3, 0, 0)
    assert sy.delay.n == 3
    # The network and acct-s1 at the first version, acct-s2 when the incident grew to it.
    assert sy.delay.median_s == 60.0 and sy.delay.max_s == 600.0
    # Out of order on the topic: the earlier window still wins.
    assert family(evaluate(labels, [grown, first]), "sybil").delay.median_s == 60.0


def test_delay_is_clipped_at_zero_and_p90_interpolates() -> None:
    labels = [label("jailbreak", "account", f"acct-{i}") for i in range(11)]
    alerts = [alert("jailbreak.spray", "account", f"acct-{i}", T0 + i * 1_000) for i in range(11)]
    alerts[0] = alert("jailbreak.spray", "account", "acct-0", T0 - 5_000)
    delay = family(evaluate(labels, alerts), "jailbreak").delay
    assert (delay.n, delay.median_s, delay.p90_s, delay.max_s) == (11, 5.0, 9.0, 10.0)
    early = evaluate(labels[:1], alerts[:1])  # alerted before the label's start: no delay
    assert family(early, "jailbreak").delay.max_s == 0.0


def test_only_the_kinds_a_family_labels_are_compared_and_key_owners_are_not_benign() -> None:
    labels = [label("leaked_key", "api_key", "key-1")]
    alerts = [alert("leaked_key.network_spread", "api_key", "key-1", T0 + 90_000,
                    accounts=("acct-owner",))]
    flagged = {"acct-owner": "flagged"}
    result = evaluate(labels, alerts, flagged_accounts=flagged,
                      account_keys={"key-1": "acct-owner", "key-2": "acct-other"})
    lk = family(result, "leaked_key")
    assert (lk.tp, lk.fp, lk.fn, lk.precision) == (1, 0, 0, 1.0)
    assert result.benign == ()
    # Without the key's owner known, the owner is still no false alarm for the family (the
    # family's labels are keys), but it shows up as a benign account that was flagged.
    unknown = evaluate(labels, alerts, flagged_accounts=flagged)
    assert family(unknown, "leaked_key").fp == 0
    assert [(b.id, b.status) for b in unknown.benign] == [("acct-owner", "flagged")]


def test_entities_labelled_for_another_family_are_not_false_alarms() -> None:
    labels = [label("sybil", "network", "10.9.9.0/24"), label("scraping", "account", "acct-scr")]
    alerts = [alert("credential_stuffing.key_enumeration", "network", "10.9.9.0/24", T0),
              alert("anomaly.burst", "account", "acct-scr", T0),
              alert("anomaly.burst", "account", "acct-nice", T0),
              alert("jailbreak.pattern_spread", "pattern", "pat-1", T0, accounts=("acct-scr",))]
    result = evaluate(labels, alerts)
    cs, an = family(result, "credential_stuffing"), family(result, "anomaly")
    assert (cs.tp, cs.fp, cs.precision, cs.recall) == (0, 0, None, None)
    assert (an.tp, an.fp, an.precision) == (0, 1, 0.0)
    assert family(result, "jailbreak").fp == 0  # the pattern entity is not a user
    assert result.overall.fp == 1 and result.overall.fn == 2  # sybil and scraping unalerted
    assert [b.id for b in result.benign] == ["acct-nice"]


def test_campaigns_matched_missed_and_spurious() -> None:
    labels = ([label("campaign", "account", f"acct-a{i}", scenario="campaign:moon") for i in
               range(4)]
              + [label("campaign", "account", f"acct-b{i}", scenario="campaign:tides") for i in
                 range(3)])
    docs = [
        {"campaign_id": "c1", "status": "active", "first_seen": "2026-01-01T00:00:00Z",
         "accounts": ["acct-a0", "acct-a1", "acct-a2", "acct-x1"]},
        {"campaign_id": "c2", "status": "active", "accounts": ["acct-a3", "acct-x2"]},  # half
        {"campaign_id": "c3", "status": "merged", "accounts": ["acct-b0", "acct-b1"]},
        {"campaign_id": "c4", "status": "active", "accounts": ["acct-b0", "acct-x3", "acct-x4"]},
    ]
    alerts = [alert("campaign.coordinated_narrative", "campaign", "c1", T0 + 300_000,
                    accounts=("acct-a0", "acct-a1", "acct-a2", "acct-x1"))]
    result = evaluate(labels, alerts, campaigns=docs)
    report = result.campaigns
    assert report.found == 3
    assert report.missed == ("campaign:tides",)
    assert report.spurious == ("c2", "c4")
    (moon,) = report.matched
    assert moon.true_campaign == "campaign:moon" and moon.campaign_ids == ("c1",)
    assert (moon.members, moon.found_members, moon.member_recall) == (4, 3, 0.75)
    assert moon.outsiders == ("acct-x1",)
    assert moon.delay_s == 300.0  # from the first member's start to the first campaign alert
    cp = family(result, "campaign")
    assert (cp.tp, cp.fp, cp.fn) == (3, 1, 4)


def test_benign_lists_flagged_and_suspended_accounts_sorted_with_their_rules() -> None:
    labels = [label("scraping", "account", "acct-scr")]
    alerts = [alert("scraping.distillation", "account", "acct-zed", T0),
              alert("jailbreak.spray", "account", "acct-zed", T0)]
    flagged = {"acct-scr": "flagged", "acct-b": "suspended", "acct-c": "cleared",
               "acct-a": "allowlisted", "acct-zed": "flagged"}
    benign = evaluate(labels, alerts, flagged_accounts=flagged).benign
    assert [(b.id, b.rules, b.status) for b in benign] == [
        ("acct-b", (), "suspended"),
        ("acct-zed", ("jailbreak.spray", "scraping.distillation"), "flagged")]


@pytest.fixture
def mixed() -> Evaluation:
    labels = [label("credential_stuffing", "ip", "10.0.0.1"),
              label("leaked_key", "api_key", "key-1"),
              label("campaign", "account", "acct-a0", scenario="campaign:moon")]
    alerts = [alert("credential_stuffing.key_enumeration", "ip", "10.0.0.1", T0 + 1_000),
              alert("leaked_key.network_spread", "api_key", "key-1", T0 + 2_000),
              alert("scraping.distillation", "account", "acct-x", T0)]
    docs = [{"campaign_id": "c1", "status": "active", "accounts": ["acct-a0"]}]
    return evaluate(labels, alerts, campaigns=docs, flagged_accounts={"acct-y": "flagged"})


def test_to_dict_round_trips_through_json(mixed: Evaluation) -> None:
    data = mixed.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["overall"]["tp"] == 2 and data["overall"]["fn"] == 1
    assert data["campaigns"]["matched"][0]["true_campaign"] == "campaign:moon"
    assert data["benign"][0]["id"] == "acct-x"
    assert family(mixed, "campaign").recall == 0.0


def test_format_table_names_every_family(mixed: Evaluation) -> None:
    table = format_table(mixed)
    for name in ("credential_stuffing", "leaked_key", "campaign", "scraping", "overall"):
        assert name in table
    assert "campaign:moon" in table and "acct-y" in table


def test_a_network_alert_finds_the_labelled_ips_inside_it_and_is_no_false_alarm() -> None:
    labels = [label("credential_stuffing", "ip", "10.0.0.5", T0),
              label("credential_stuffing", "network", "10.9.9.0/24", T0)]
    alerts = [alert("credential_stuffing.rotating", "network", "10.0.0.0/24", T0 + 40_000),
              alert("credential_stuffing.rotating", "network", "10.9.9.0/24", T0 + 20_000),
              alert("credential_stuffing.rotating", "network", "172.16.0.0/24", T0)]
    result = evaluate(labels, alerts)
    cs = family(result, "credential_stuffing")
    assert (cs.tp, cs.fn) == (2, 0)  # the IP through its range, the range itself
    assert cs.false_positives == (("network", "172.16.0.0/24"),)  # covers no label
    assert cs.delay.max_s == 40.0
    assert [b.id for b in result.benign] == ["172.16.0.0/24"]
    # A family labelled by IP alone: the covering range is no false alarm either.
    only_ip = evaluate(labels[:1], alerts[:1])
    assert (family(only_ip, "credential_stuffing").tp, only_ip.overall.fp) == (1, 0)
    assert only_ip.benign == ()
    # An IP alert inside a labelled range is misuse too, not a benign entity.
    inside = evaluate(labels[1:], [alert("anomaly.burst", "ip", "10.9.9.7", T0)])
    assert inside.benign == () and inside.overall.fp == 0


def test_campaign_classes_report_recall_and_delay_after_the_fifth_member() -> None:
    labels = [label("campaign", "account", f"acct-e{i}", T0 + i * 60_000,
                    scenario="campaign-es:moon") for i in range(8)]
    labels += [label("campaign", "account", f"acct-x{i}", T0, scenario="campaign-xl:tides")
               for i in range(4)]
    docs = [{"campaign_id": "c1", "status": "active",
             "accounts": [f"acct-e{i}" for i in range(6)]}]
    alerts = [alert("campaign.coordinated_narrative", "campaign", "c1", T0 + 7 * 60_000)]
    report = evaluate(labels, alerts, campaigns=docs).campaigns
    (moon,) = report.matched
    assert moon.delay_after_fifth_s == 180.0  # the fifth member started at minute 4
    es, xl = report.classes
    assert (es.name, es.found, es.campaigns, es.found_members, es.members) == (
        "campaign-es", 1, 1, 6, 8)
    assert es.member_recall == 0.75 and es.delay_after_fifth_min == 3.0
    assert (xl.name, xl.found, xl.member_recall, xl.delay_after_fifth_min) == (
        "campaign-xl", 0, 0.0, None)
    table = format_table(evaluate(labels, alerts, campaigns=docs))
    assert "campaign-es" in table and "min after 5th" in table


def test_benign_accounts_flagged_are_counted_per_class() -> None:
    alerts = [alert("anomaly.burst", "account", "acct-desk1", T0)]
    classes = {"acct-desk1": "trap-factcheck", "acct-desk2": "trap-factcheck",
               "acct-p1": "ordinary"}
    result = evaluate([], alerts, classes=classes)
    assert [(c.name, c.flagged, c.accounts, c.examples) for c in result.benign_classes] == [
        ("ordinary", 0, 1, ()), ("trap-factcheck", 1, 2, ("acct-desk1",))]
    assert "trap-factcheck" in format_table(result)


def test_dead_letters_are_reported_and_an_all_refused_file_warns() -> None:
    reason = "field 'ts' = 1890000000000 ms is more than 86400 s in the future"
    report = dead_letter_report(3, [("api.usage", reason)] * 3 + [("misuse.prompts", "x: y")])
    assert (report.events, report.from_input, report.internal) == (3, 3, 1)
    assert report.all_refused
    assert report.by_reason["field 'ts' = N ms is more than N s in the future"] == 3
    assert sum(report.by_class.values()) == 4
    result = evaluate([], [], dead_letters=report)
    assert result.to_dict()["dead_letters"]["from_input"] == 3
    table = format_table(result)
    assert "dead letters: 3 of 3 events refused, 1 internal" in table
    assert "WARNING: every event was dead-lettered" in table
    fine = format_table(evaluate([], [], dead_letters=dead_letter_report(100, [])))
    assert "dead letters: 0 of 100" in fine and "WARNING" not in fine
