"""The transparency report's figures, computed from the indexed documents of a range: plain,
JSON-ready values, which `report` draws and writes as they are.

Detection delay, per detector: event time from the first event of an alert's evidence window
(`event.start`) to the event at which its rule held (`event.end`), over the alerts that fired
once and were not updated since (`misuse.repeats` 0). An alert that held again keeps only its
latest window in its document, which says nothing of how long the first detection took; those
are counted apart. Time to first report, per campaign: from its first sighting
(`misuse.first_seen`) to its first size report (`misuse.size_over_time[0]`).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from streams.tooling.sharing.indexed import Doc, Indexed

# Bin widths for alerts over time: the narrowest that gives at most MAX_BINS bins.
BIN_WIDTHS_S = (60, 300, 900, 3600, 6 * 3600, 86_400, 7 * 86_400)
MAX_BINS = 48
CAMPAIGN_STATUS = {"active": "open", "merged": "merged", "withdrawn": "withdrawn"}
HELD_REASONS = {"the hourly cap is reached": "held_by_cap",
                "the circuit breaker is open": "held_by_breaker"}
WORKER = "misuse-detector"


def ms(timestamp: str) -> int:
    return int(datetime.fromisoformat(timestamp).timestamp() * 1000)


def iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).isoformat(timespec="seconds")


def percentile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), on sorted values."""
    pos = q * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def bin_width_s(start_ms: int, end_ms: int) -> int:
    span_s = max(1, (end_ms - start_ms) // 1000)
    return next((w for w in BIN_WIDTHS_S if span_s / w <= MAX_BINS), BIN_WIDTHS_S[-1])


def alerts_over_time(alerts: Iterable[Doc], start_ms: int, end_ms: int) -> dict[str, Any]:
    """Alerts per rule in each bin, by the start of their incident (an alert is one incident
    however often it held again); incidents that began before the range count in its first
    bin."""
    width_ms = bin_width_s(start_ms, end_ms) * 1000
    first = start_ms - start_ms % width_ms
    bins = max(1, math.ceil((end_ms - first) / width_ms))
    counts: dict[str, list[int]] = defaultdict(lambda: [0] * bins)
    for alert in alerts:
        at = ms(alert["misuse"]["incident_start"])
        index = min(bins - 1, max(0, (at - first) // width_ms))
        counts[alert["rule"]["id"]][index] += 1
    return {"bin_seconds": width_ms // 1000,
            "bins": [iso(first + i * width_ms) for i in range(bins)],
            "rules": dict(sorted(counts.items()))}


def campaigns(docs: Iterable[Doc]) -> list[dict[str, Any]]:
    rows = []
    for doc in docs:
        misuse = doc["misuse"]
        history = misuse.get("size_over_time") or []
        first_seen = ms(misuse["first_seen"])
        reported = ms(history[0]["@timestamp"]) if history else None
        rows.append({
            "campaign_id": misuse["campaign_id"],
            "label_terms": list(misuse.get("label_terms") or []),
            "accounts": misuse.get("account_count", len(misuse.get("accounts", []))),
            "prompts": misuse.get("size", 0),
            "languages": list(misuse.get("languages") or []),
            "first_seen": iso(first_seen), "last_seen": iso(ms(misuse["last_seen"])),
            "minutes_to_first_report": None if reported is None
            else round(max(0, reported - first_seen) / 60_000, 1),
            "status": CAMPAIGN_STATUS.get(misuse.get("status", "active"), misuse.get("status")),
        })
    return sorted(rows, key=lambda r: r["first_seen"])


def accounts(docs: Iterable[Doc]) -> dict[str, Any]:
    """Flagged (ever, by the worker), suspended (ever), and reversed: flagged, then cleared or
    allowlisted by an analyst. Reversed over flagged is the false-positive rate the analysts'
    decisions imply (a lower bound: an account nobody reviewed counts as rightly flagged)."""
    flagged = suspended = reversed_ = 0
    for doc in docs:
        misuse = doc["misuse"]
        statuses = [h.get("status") for h in misuse.get("history", [])]
        was_flagged = misuse.get("first_flagged") is not None or \
            any(s in ("flagged", "suspended") for s in statuses)
        flagged += was_flagged
        suspended += "suspended" in statuses or misuse.get("status") == "suspended"
        reversed_ += was_flagged and misuse.get("status") in ("cleared", "allowlisted") \
            and misuse.get("status_set_by") not in (None, "worker")
    return {"flagged": flagged, "suspended": suspended, "reversed_by_analyst": reversed_,
            "implied_false_positive_rate": round(reversed_ / flagged, 3) if flagged else None}


def suspensions(actions: Iterable[Doc]) -> dict[str, int]:
    """From the audit records: a suspension is sent at once or after an analyst approved it
    (its record then names the analyst), held by the hourly cap or the circuit breaker until
    an analyst decides, or only logged (dry run)."""
    counts = dict.fromkeys(("sent", "sent_after_approval", "held_by_cap", "held_by_breaker",
                            "approved", "rejected", "dry_run", "withdrawn"), 0)
    for action in actions:
        kind, outcome = action["event"]["action"], action["event"]["outcome"]
        actor = action.get("misuse", {}).get("actor")
        if kind == "suspend" and outcome == "sent":
            counts["sent" if actor in (None, WORKER) else "sent_after_approval"] += 1
        elif kind == "suspend" and outcome == "awaiting_approval":
            counts[HELD_REASONS.get(action["misuse"].get("reason", ""), "held_by_cap")] += 1
        elif kind == "suspend" and outcome in ("dry_run", "withdrawn"):
            counts[outcome] += 1
        elif kind in ("approved", "rejected") and outcome == "done":
            counts[kind] += 1
    return counts


def pages(actions: Iterable[Doc]) -> dict[str, int]:
    kinds = Counter(a["event"]["action"] for a in actions if a["event"]["outcome"] == "sent")
    return {"sent": kinds["page"], "resolved": kinds["page_resolve"]}


def detection_delay(alerts: Iterable[Doc]) -> dict[str, dict[str, Any]]:
    delays: dict[str, list[float]] = defaultdict(list)
    updated: Counter[str] = Counter()
    for alert in alerts:
        detector = alert["misuse"]["detector"]
        if alert["misuse"].get("repeats", 0):
            updated[detector] += 1
            continue
        delays[detector].append(max(0, ms(alert["event"]["end"]) - ms(alert["event"]["start"]))
                                / 1000)
    out = {}
    for detector in sorted(set(delays) | set(updated)):
        ordered = sorted(delays[detector])
        out[detector] = {
            "measured": len(ordered), "updated_since": updated[detector],
            "median_s": round(percentile(ordered, 0.5), 1) if ordered else None,
            "p90_s": round(percentile(ordered, 0.9), 1) if ordered else None}
    return out


def report_figures(indexed: Indexed) -> dict[str, Any]:
    """Shadow-mode alerts are left out: their rules are on trial and act on nothing."""
    alerts = [a for a in indexed.alerts if not a["misuse"].get("shadow")]
    return {
        "range": {"from": iso(indexed.start_ms), "to": iso(indexed.end_ms)},
        "alerts": {"total": len(alerts),
                   "over_time": alerts_over_time(alerts, indexed.start_ms, indexed.end_ms)},
        "campaigns": campaigns(indexed.campaigns),
        "accounts": accounts(indexed.accounts),
        "suspensions": suspensions(indexed.actions),
        "pages": pages(indexed.actions),
        "detection_delay": detection_delay(alerts),
    }
