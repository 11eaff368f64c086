"""What one replay found, in a form two replays of the same file are compared by: the same
input must flag the same accounts with the same risk scores, report the same campaigns with
the same members, and send the same alerts with the same evidence (`misuse eval --runs 2`)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


@dataclass(frozen=True)
class Findings:
    # account -> (status, risk score, risk decision)
    accounts: dict[str, tuple[str, float, str]]
    # campaign id -> (status, its accounts, size)
    campaigns: dict[str, tuple[str, tuple[str, ...], int]]
    # alert id -> (rule, entity, the accounts it names, its evidence): its last version
    alerts: dict[str, tuple[str, str, tuple[str, ...], str]]

    @classmethod
    def of(cls, alerts: Iterable[Mapping[str, Any]], campaigns: Iterable[Mapping[str, Any]],
           accounts: Iterable[Mapping[str, Any]]) -> Findings:
        """`alerts` as sent (every version, topic order), `campaigns` the campaign documents'
        `misuse` objects, `accounts` the account documents."""
        last: dict[str, Mapping[str, Any]] = {}
        for alert in alerts:  # an incident's versions grow: keep the newest in event time
            kept = last.get(alert["alert_id"])
            if kept is None or alert["window_end_ms"] >= kept["window_end_ms"]:
                last[alert["alert_id"]] = alert
        return cls(
            accounts={doc["user"]["id"]: (doc["misuse"]["status"], doc["misuse"]["risk_score"],
                                          doc["misuse"]["risk_decision"]) for doc in accounts},
            campaigns={doc["campaign_id"]: (doc["status"], tuple(sorted(doc.get("accounts", ()))),
                                            doc.get("size", 0)) for doc in campaigns},
            alerts={alert_id: (a["rule_id"], f'{a["entity"]["kind"]}:{a["entity"]["id"]}',
                               tuple(sorted(a.get("accounts", ()))), _canonical(a["evidence"]))
                    for alert_id, a in last.items()})


def differences(first: Findings, second: Findings, limit: int = 10) -> list[str]:
    """One line per difference (at most `limit` per kind, then a count), empty when the two
    replays found the same."""
    lines: list[str] = []
    for kind in ("accounts", "campaigns", "alerts"):
        a, b = getattr(first, kind), getattr(second, kind)
        differing = sorted(key for key in a.keys() | b.keys() if a.get(key) != b.get(key))
        for key in differing[:limit]:
            lines.append(f"{kind} {key}: {_delta(a.get(key), b.get(key))}")
        if len(differing) > limit:
            lines.append(f"{kind}: {len(differing) - limit} more differ")
    return lines


def _delta(first: Any, second: Any) -> str:
    """What differs: the fields that differ (and, in evidence, its keys), each as `first |
    second`."""
    if first is None or second is None:
        return f"{_brief(first)} | {_brief(second)}"
    parts = []
    for a, b in zip(first, second, strict=True):
        if a == b:
            continue
        if isinstance(a, str) and a.startswith("{"):  # evidence: the keys that differ
            one, two = json.loads(a), json.loads(b)
            parts += [f"{k}: {_brief(one.get(k))} | {_brief(two.get(k))}"
                      for k in sorted(one.keys() | two.keys()) if one.get(k) != two.get(k)]
        else:
            parts.append(f"{_brief(a)} | {_brief(b)}")
    return "; ".join(parts)


def _brief(value: Any, width: int = 120) -> str:
    text = "absent" if value is None else str(value)
    return text if len(text) <= width else text[:width - 1] + "…"
