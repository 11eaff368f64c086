"""Analysts' decisions are signed, so that a record on `misuse.feedback` is what a known
analyst decided and not what anyone with producer access wrote.

Each analyst (or review service) has a secret key; the worker holds them all
(`MISUSE_REVIEW_KEYS`, a JSON map of analyst name to key). `misuse review` signs with the
analyst's key: HMAC-SHA256 over the decision's canonical fields. The worker applies a decision
only when the signature verifies under the key of the analyst it names, so the audit trail's
name is a verified identity; any other decision is refused (a dead letter) and raises a
security alert.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from typing import NoReturn

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


def refuse(record: FeedbackRecord, keys: Mapping[str, SecretStr], emit: Emit) -> NoReturn:
    """A decision a stage will not apply: the security alert goes out, and raising makes the
    record a dead letter with the reason."""
    alert = unverified_alert(record, keys)
    log.warning("decision_refused account=%s analyst=%r", record.account_id, record.analyst)
    emit(ALERTS, alert.alert_id, AlertRecord(alert))
    raise ValueError(f"unverified analyst decision: {alert.reasons[0]}")


def unverified_alert(record: FeedbackRecord, keys: Mapping[str, SecretStr]) -> Alert:
    """High severity: someone who is not a known analyst tried to decide on an account."""
    why = ("unsigned" if not record.signature else
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
