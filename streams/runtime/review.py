"""Analysts' decisions are signed, so that a record on `misuse.feedback` is what a known
analyst decided and not what anyone with producer access wrote.

Each analyst (or review service) has a secret key; the worker holds them all
(`MISUSE_REVIEW_KEYS`, a JSON map of analyst name to key). `misuse review` signs with the
analyst's key: HMAC-SHA256 over the decision's canonical fields. The worker applies a decision
only when the signature verifies under the key of the analyst it names, so the audit trail's
name is a verified identity; any other decision is refused (a dead letter) and raises a
security alert.

A signature proves who decided, not when nor how often: a genuine record copied off the topic
and written back later would act again. So a decision carries its own id and the time it was
made, both signed, and `DecisionGate` applies it only while it is fresh (within the policy's
`max_decision_age_minutes` of the worker's clock, either way) and only once: the ids applied
are state, kept as long as a decision stays fresh.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
from collections.abc import Mapping, MutableMapping
from typing import Any, NoReturn

from elasticsearch import Elasticsearch
from pydantic import SecretStr

from detectors.alerts import Alert, Entity
from streams.runtime.driver import Emit
from streams.runtime.messages import AlertRecord, FeedbackRecord
from streams.runtime.publish import ALERTS, page_group_of
from streams.settings import Settings
from streams.sinks.documents import iso

log = logging.getLogger(__name__)

FORGED_RULE = "security.unverified_decision"


def _signed_bytes(record: FeedbackRecord) -> bytes:
    fields = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)
              if f.name != "signature"}
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode("utf-8")


def sign(record: FeedbackRecord, key: SecretStr) -> FeedbackRecord:
    digest = hmac.new(key.get_secret_value().encode("utf-8"), _signed_bytes(record),
                      hashlib.sha256).hexdigest()
    return dataclasses.replace(record, signature=digest)


def verified(record: FeedbackRecord, keys: Mapping[str, SecretStr]) -> bool:
    key = keys.get(record.analyst)
    if key is None or not record.signature:
        return False
    return hmac.compare_digest(sign(record, key).signature, record.signature)


def refuse(record: FeedbackRecord, keys: Mapping[str, SecretStr], emit: Emit,
           why: str | None = None) -> NoReturn:
    """A decision a stage will not apply: the security alert goes out, and raising makes the
    record a dead letter with the reason. `why`: for a decision that verifies (stale, replayed);
    without it, why the signature does not."""
    alert = unverified_alert(record, keys, why)
    log.warning("decision_refused account=%s analyst=%r decision_id=%r", record.account_id,
                record.analyst, record.decision_id)
    emit(ALERTS, alert.alert_id, AlertRecord(alert))
    kind = "unverified" if why is None else "refused"
    raise ValueError(f"{kind} analyst decision: {alert.reasons[0]}")


def unverified_alert(record: FeedbackRecord, keys: Mapping[str, SecretStr],
                     why: str | None = None) -> Alert:
    """High severity: someone who is not a known analyst tried to decide on an account, or
    a genuine decision came again or too late."""
    why = why or ("unsigned" if not record.signature else
                  "signed by no known analyst" if record.analyst not in keys else
                  "signature does not verify")
    return Alert(
        rule_id=FORGED_RULE, severity="high", score=1.0,
        entity=Entity("account", record.account_id), incident_start_ms=record.ts_ms,
        window_start_ms=record.ts_ms, window_end_ms=record.ts_ms,
        reasons=(f"a {record.decision!r} decision on this account in the name of "
                 f"{record.analyst!r} was refused: {why}",),
        evidence={"decision": record.decision, "claimed_analyst": record.analyst,
                  "refused_because": why})


class DecisionGate:
    """What a stage applies of the signed decisions it reads: verified, fresh and not applied
    before. `applied` is the stage's state table of decision id -> the time it was made."""

    def __init__(self, keys: Mapping[str, SecretStr], applied: MutableMapping[str, Any],
                 max_age_minutes: int) -> None:
        self.keys = dict(keys)
        self.applied = applied
        self.max_age_ms = max_age_minutes * 60_000

    def check(self, record: FeedbackRecord, emit: Emit, now_ms: int) -> None:
        """Refuses (a security alert and a dead letter) a decision not to apply."""
        if not verified(record, self.keys):
            refuse(record, self.keys, emit)
        why = self.refusal(record, now_ms)
        if why is not None:
            refuse(record, self.keys, emit, why)

    def refusal(self, record: FeedbackRecord, now_ms: int) -> str | None:
        if not record.decision_id:
            return "it carries no decision id (made before decisions had one?): decide again"
        age_ms = now_ms - record.ts_ms
        if abs(age_ms) > self.max_age_ms:
            when = (f"made {age_ms // 60_000} minutes ago" if age_ms > 0 else
                    f"dated {-age_ms // 60_000} minutes ahead of the worker's clock")
            return (f"{when}, over the {self.max_age_ms // 60_000}-minute limit of "
                    "max_decision_age_minutes")
        if record.decision_id in self.applied:
            return f"decision {record.decision_id} was applied already: a replay"
        return None

    def applied_now(self, record: FeedbackRecord) -> None:
        """After the decision took effect: it never does again."""
        self.applied[record.decision_id] = record.ts_ms

    def forget_stale(self, now_ms: int) -> None:
        """Ids of decisions too old to pass the age check anyway."""
        stale = [decision_id for decision_id, ts_ms in self.applied.items()
                 if ts_ms < now_ms - self.max_age_ms]
        for decision_id in stale:
            del self.applied[decision_id]


class AlertNotFoundError(LookupError):
    """No alert with that id in the alerts index."""


def mark_alert(es: Elasticsearch, settings: Settings, alert_id: str, decision: str,
               close_reason: str, analyst: str, now_ms: int) -> tuple[list[str], str]:
    """Write the analyst's status on the alert document (acknowledged, or closed with its
    reason) and return the accounts its signals fed and its page group, for the decisions
    the worker applies (risk, pages)."""
    hits = es.search(index=settings.index("alerts"), query={"ids": {"values": [alert_id]}},
                     size=1)["hits"]["hits"]
    if not hits:
        raise AlertNotFoundError(f"no alert {alert_id!r} in {settings.index('alerts')}")
    hit = hits[0]
    source, entity = hit["_source"], hit["_source"]["misuse"]["entity"]
    workflow = {"status": decision, "analyst": analyst, "updated": iso(now_ms)}
    if decision == "closed":
        workflow["close_reason"] = close_reason
    es.update(index=hit["_index"], id=alert_id, doc={"misuse": {"workflow": workflow}},
              refresh=True)
    accounts = list(source["misuse"].get("accounts") or [])
    if entity["kind"] == "account" and entity["id"] not in accounts:
        accounts.append(entity["id"])
    return accounts, page_group_of(source["rule"]["id"], entity["kind"], entity["id"])
