"""Two replays' findings compared: what `misuse eval --runs 2` fails on."""

from __future__ import annotations

from typing import Any

from streams.tooling.findings import Findings, differences


def alert(alert_id: str, end_ms: int, hits: int, accounts: tuple[str, ...] = ()) -> dict:
    return {"alert_id": alert_id, "rule_id": "jailbreak.spray", "window_end_ms": end_ms,
            "entity": {"kind": "account", "id": "acct-1"}, "accounts": list(accounts),
            "evidence": {"hits": hits}}


def account(account_id: str, status: str, score: float) -> dict[str, Any]:
    return {"user": {"id": account_id},
            "misuse": {"status": status, "risk_score": score, "risk_decision": "none"}}


def campaign(campaign_id: str, *accounts: str) -> dict[str, Any]:
    return {"campaign_id": campaign_id, "status": "active", "accounts": list(accounts),
            "size": 3 * len(accounts)}


def findings(hits: int = 45, score: float = 0.91, members: tuple[str, ...] = ("a", "b")
             ) -> Findings:
    # The versions of one incident arrive out of order: the newest in event time counts.
    return Findings.of([alert("x", 2_000, hits), alert("x", 1_000, 3)],
                       [campaign("c-1", *members)],
                       [account("acct-1", "flagged", score), account("acct-2", "active", 0.1)])


def test_the_same_findings_have_no_differences() -> None:
    assert findings().alerts["x"][3] == '{"hits": 45}'
    assert differences(findings(), findings()) == []


def test_evidence_scores_and_members_that_differ_are_each_named() -> None:
    lines = differences(findings(), findings(hits=43, score=0.905, members=("a", "b", "z")))
    assert [line.split(":")[0] for line in lines] == [
        "accounts acct-1", "campaigns c-1", "alerts x"]
    assert lines[2] == "alerts x: hits: 45 | 43"
    assert lines[0] == "accounts acct-1: 0.91 | 0.905"


def test_an_alert_or_account_found_in_one_replay_only_is_a_difference() -> None:
    other = Findings.of([], [], [account("acct-1", "flagged", 0.91)])
    lines = differences(findings(), other)
    assert "accounts acct-2: ('active', 0.1, 'none') | absent" in lines
    assert any(line.startswith("alerts x:") and line.endswith("| absent") for line in lines)
    assert any(line.startswith("campaigns c-1:") for line in lines)


def test_many_differences_are_summarised_after_the_limit() -> None:
    many = Findings.of([], [], [account(f"acct-{n}", "flagged", 0.5) for n in range(30)])
    lines = differences(many, Findings.of([], [], []), limit=5)
    assert len(lines) == 6 and lines[-1] == "accounts: 25 more differ"
