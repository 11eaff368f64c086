"""A fault run against the fault-free one.

- lost: event ids the baseline has on a topic that the run's topic lacks altogether.
- duplicated: records on a topic beyond the baseline's count for their event id (Kafka
  redelivering a batch after a kill, or a send retried): expected after a SIGKILL.
- unabsorbed: the duplicates that became visible downstream as something counted twice:
  (1) a rule and entity (account, key, IP, network) with more alert documents than in the
  baseline (an incident opened again under a second id), (2) a baseline campaign matched
  by more than one campaign of the run (a campaign reported under a second id; matched by
  shared member accounts), (3) an
  alert id named twice in one account's risk reasons (one alert's risk counted twice: the
  risk stage keys an account's signals by alert id, so a repeat there is a double count).
  An event counted twice inside a window shows up as (1) when it tips a rule over its
  threshold; the windows refuse event ids they hold, so it is measured there and not per
  window.
- alerts vs baseline: ids in both, only in the baseline (missing), only in the run (extra).
  Incident ids follow the incident's first event, which can change with arrival order across
  partitions, so a missing/extra pair is not by itself a loss.
- findings vs baseline: the accounts (status, risk score), campaigns (members) and alerts
  (evidence) that differ, as `misuse eval --runs 2` compares two replays. The fault-free run
  again must show none: the same input gives the same findings.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from streams.tooling.findings import differences
from tests.faults.harness import RunResult
from tests.faults.observe import EVENT_TOPICS, Observation


def lost(baseline: Observation, run: Observation) -> dict[str, int]:
    return {topic: len(set(baseline.event_ids[topic]) - set(run.event_ids[topic]))
            for topic in EVENT_TOPICS}


def duplicated(baseline: Observation, run: Observation) -> dict[str, int]:
    return {topic: sum(max(0, count - max(1, baseline.event_ids[topic].get(event_id, 0)))
                       for event_id, count in run.event_ids[topic].items())
            for topic in EVENT_TOPICS}


def alerts_per_rule_entity(seen: Observation) -> Counter[tuple[str, str, str]]:
    return Counter(seen.alerts.values())


def unabsorbed(baseline: Observation, run: Observation) -> dict[str, Any]:
    # A campaign's alert starts at the campaign's first point, which moves earlier when its
    # clusters absorb older points, so its alerts per campaign follow the judging times; a
    # campaign counted twice is a campaign split instead.
    before, after = alerts_per_rule_entity(baseline), alerts_per_rule_entity(run)
    after = Counter({k: n for k, n in after.items() if k[1] != "campaign"})
    reopened = {"|".join(k): after[k] - before[k] for k in after if after[k] > before[k]}
    twice_counted = {account: [a for a, n in Counter(ids).items() if n > 1]
                     for account, ids in run.account_reason_alert_ids.items()}
    return {"alerts_reopened": reopened,
            "campaigns_split": split_campaigns(baseline, run),
            "risk_counted_twice": {a: ids for a, ids in twice_counted.items() if ids}}


def unabsorbed_count(details: dict[str, Any]) -> int:
    return (sum(details["alerts_reopened"].values()) + sum(details["campaigns_split"].values())
            + sum(len(ids) for ids in details["risk_counted_twice"].values()))


def split_campaigns(baseline: Observation, run: Observation) -> dict[str, int]:
    """Baseline campaign id -> how many more run campaigns share most of their members with
    it than one."""
    matches: Counter[str] = Counter()
    for members in run.campaigns.values():
        best = max(baseline.campaigns.items(), key=lambda item: len(item[1] & members),
                   default=None)
        if best is not None and len(best[1] & members) * 2 > len(members):
            matches[best[0]] += 1
    return {campaign: n - 1 for campaign, n in matches.items() if n > 1}


def dead_letter_gaps(result: RunResult) -> dict[str, list[str]]:
    """The crafted messages that entered Kafka and have no dead letter with a reason, and
    dead letters that are not crafted messages (a valid event refused)."""
    letters = {d.key: d for d in result.observation.dead_letters}
    owed = set(result.crafted_keys) - set(result.refused_by_kafka)
    return {"crafted_without_dead_letter": sorted(k for k in owed
                                                  if not letters.get(k)
                                                  or not letters[k].reason),
            "unexpected_dead_letters": sorted(k for k in letters if k not in owed)}


def compare(baseline: RunResult, result: RunResult) -> dict[str, Any]:
    base, run = baseline.observation, result.observation
    details = unabsorbed(base, run)
    base_alerts, run_alerts = set(base.alerts), set(run.alerts)
    statuses = {a for a in set(base.account_statuses) | set(run.account_statuses)
                if base.account_statuses.get(a) != run.account_statuses.get(a)}
    return {
        "fault": result.scenario,
        "lost": lost(base, run),
        "duplicated": duplicated(base, run),
        "unabsorbed": unabsorbed_count(details),
        "unabsorbed_details": details,
        "alerts": {"same": len(base_alerts & run_alerts),
                   "missing": sorted(base_alerts - run_alerts),
                   "extra": sorted(run_alerts - base_alerts)},
        # account -> [baseline status, run status, the rules that flagged it in the run]
        "accounts_differing": {a: [base.account_statuses.get(a), run.account_statuses.get(a),
                                   run.account_reason_rules.get(a, [])]
                               for a in sorted(statuses)},
        "campaign_accounts": {"baseline": sorted(len(m) for m in base.campaigns.values()),
                              "run": sorted(len(m) for m in run.campaigns.values())},
        "campaigns": {"same": len(set(base.campaigns) & set(run.campaigns)),
                      "missing": sorted(set(base.campaigns) - set(run.campaigns)),
                      "extra": sorted(set(run.campaigns) - set(base.campaigns))},
        "findings_differing": differences(base.findings, run.findings, limit=100),
        "dead_letters": dead_letter_gaps(result),
        "refused_by_kafka": result.refused_by_kafka,
        "worker_exits": result.worker_exits,
        "stalls": result.stalls,
        "drain_seconds": round(result.drain_seconds, 1),
        "log_lines": result.log_lines,
    }


def table(rows: list[dict[str, Any]]) -> str:
    header = ("fault | lost | duplicated (absorbed) | unabsorbed | alerts vs baseline | "
              "accounts differing | campaigns | findings vs baseline | drain s | "
              "log lines ≥ WARNING (tracebacks)")
    lines = [header, "|".join("---" for _ in header.split("|"))]
    for row in rows:
        alerts, campaigns = row["alerts"], row["campaigns"]
        dup = sum(row["duplicated"].values())
        lines.append(" | ".join([
            row["fault"], str(sum(row["lost"].values())),
            f"{dup} ({dup - row['unabsorbed'] if dup else 0})", str(row["unabsorbed"]),
            f"{alerts['same']} same, {len(alerts['missing'])} missing, "
            f"{len(alerts['extra'])} extra",
            str(len(row["accounts_differing"])),
            "same" if not campaigns["missing"] and not campaigns["extra"] else
            f"{campaigns['same']} same, {len(campaigns['missing'])} missing, "
            f"{len(campaigns['extra'])} extra",
            f"{len(row['findings_differing'])} differ" if row.get("findings_differing")
            else "same",
            f"{row['drain_seconds']:.0f}" + (" (stalled)" if row["stalls"] else ""),
            log_lines_cell(row.get("log_lines", []))]))
    return "\n".join(lines)


def log_lines_cell(per_step: list[dict[str, int]]) -> str:
    """One count per step of the fault: `12 (0)`, or `3 (0), 5 (1), 2 (0)` for three kills."""
    return ", ".join(f"{n['lines']} ({n['tracebacks']})" for n in per_step) or "-"
