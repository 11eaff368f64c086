"""Carry out what the act stage decided: suspension requests to the account-suspension hooks
(Standard Webhooks, signed), pages to PagerDuty and to an Alertmanager-format webhook. Each
delivery retries on its own (`streams/sinks/webhooks.py`); the batch is acknowledged only once
every delivery in it has an outcome, so one pending when the worker dies is sent again after
the restart, with the same id. One that fails for good, or that its configuration makes
impossible (a secret that cannot sign, an invalid URL), becomes a dead letter (replayable) and
every attempt is audited in `misuse-actions`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from typing import Any

from faust.types import AppT, EventT
from pydantic import SecretStr

from streams.runtime import metrics
from streams.runtime.messages import (
    Delivery,
    DocumentRecord,
    MessageError,
    UnverifiedRecordError,
    decode_batch,
    encode_batch,
    records_of,
)
from streams.runtime.publish import DOCUMENTS
from streams.runtime.stage_agent import Topics, dead_letter, refuse_unverified, register_sink
from streams.settings import Settings, printable_url
from streams.sinks.documents import action_document
from streams.sinks.pager import PageAlert, alertmanager_payload, encode, pagerduty_event_for
from streams.sinks.webhooks import (
    INVALID_URL,
    DeliveryResult,
    WebhookClient,
    WebhookSecretError,
)

log = logging.getLogger(__name__)
STAGE = "deliver_actions"
# A whole path segment, long enough to be a token (see `endpoint_of`).
_TOKEN_SEGMENT = re.compile(r"(?<=/)[A-Za-z0-9_\-]{16,512}(?=/|$)")


class Deliverer:
    """The delivery sink: one `WebhookClient`, the endpoints and secrets from the settings."""

    def __init__(self, topics: Topics, settings: Settings) -> None:
        self.topics, self.settings = topics, settings
        self.client = WebhookClient(timeout_s=settings.webhook_timeout_seconds,
                                    max_attempts=settings.webhook_max_attempts)

    async def close(self) -> None:
        await self.client.close()

    async def write(self, events: list[EventT]) -> None:
        jobs, sent = [], []
        for event in events:
            try:
                deliveries = records_of(decode_batch(event.message.value,
                                                     self.settings.internal_keys), Delivery)
            except UnverifiedRecordError as exc:
                sent += await refuse_unverified(self.topics, event, exc,
                                                f"undeliverable: {exc}", stage=STAGE)
                continue
            except MessageError as exc:
                sent.append(await dead_letter(self.topics, event, f"undeliverable: {exc}",
                                              stage=STAGE))
                continue
            jobs += [self.deliver(event, delivery) for delivery in deliveries]
        # Concurrently: a hanging receiver holds up the batch by its own retries only.
        outcomes = await asyncio.gather(*jobs)
        audits = [audit for documents, _ in outcomes for audit in documents]
        for event, reason in (failure for _, failures in outcomes for failure in failures):
            sent.append(await dead_letter(self.topics, event, reason, stage=STAGE))
        if audits:
            sent.append(await self.topics.send(STAGE, DOCUMENTS,
                                               encode_batch(DocumentRecord.TYPE, audits,
                                                            self.settings.internal_keys)))
        await asyncio.gather(*sent)

    async def deliver(self, event: EventT, delivery: Delivery
                      ) -> tuple[list[DocumentRecord], list[tuple[EventT, str]]]:
        """Every endpoint of the delivery's receiver: the audit records, and the failures."""
        audits, failures = [], []
        targets = self.targets(delivery)
        if not targets:
            log.info("delivery_skipped id=%s receiver=%s: not configured", delivery.id,
                     delivery.receiver)
        for number, (url, body, secrets) in enumerate(targets):
            try:
                result = await self.client.deliver(url, body, delivery.id, secrets,
                                                   now_s=lambda: int(time.time()))
            except WebhookSecretError as exc:
                # Configuration (the settings check secrets at start, but not every path to
                # them): a dead letter to replay once it is fixed. Raised, it would stop the
                # worker, and every restart would meet the same delivery again.
                result = DeliveryResult("failed", None, 0, 0.0, f"configuration: {exc}")
            log.info("delivery id=%s receiver=%s outcome=%s status=%s attempts=%d",
                     delivery.id, delivery.receiver, result.outcome, result.status,
                     result.attempts)
            metrics.webhook_deliveries.labels(delivery.receiver, result.outcome).inc()
            audits.append(audit_record(delivery, url, number, result))
            # An invalid URL is rejected at once, but it is configuration too: replayable.
            if result.outcome == "failed" or result.error == INVALID_URL:
                failures.append((event, f"delivery {delivery.id} to {delivery.receiver} "
                                        f"failed: {result.error}"))
        return audits, failures

    def targets(self, delivery: Delivery) -> list[tuple[str, bytes, list[Any]]]:
        """(url, body, signing secrets) for each endpoint configured for the receiver."""
        settings = self.settings
        if delivery.receiver == "suspension":
            body = encode(delivery.body)
            return [(url, body, list(settings.suspension_webhook_secrets))
                    for url in settings.suspension_webhook_urls]
        if delivery.receiver == "pagerduty" and settings.pagerduty_routing_key is not None:
            return [(settings.pagerduty_url, encode(pagerduty_body(
                delivery, settings.pagerduty_routing_key)), [])]
        if delivery.receiver == "alertmanager" and settings.alertmanager_url:
            return [(settings.alertmanager_url, encode(alertmanager_body(delivery)), [])]
        return []


def audit_record(delivery: Delivery, url: str, number: int,
                 result: DeliveryResult) -> DocumentRecord:
    """Each delivery to each endpoint (the `number`th configured for its receiver): what, to
    where, attempts, response status, latency."""
    action = {"action": f"deliver_{delivery.receiver}", "ts_ms": delivery.ts_ms,
              "account_id": delivery.account_id or None, "automated": True}
    document = action_document(
        action, result.outcome, reason=result.error or delivery.action,
        delivery={"id": delivery.id, "receiver": delivery.receiver,
                  "request": delivery.action, "endpoint": endpoint_of(url),
                  "attempts": result.attempts, "response_status": result.status,
                  "latency_seconds": round(result.latency_s, 3)})
    return DocumentRecord("actions", f"delivery-{delivery.id}-{endpoint_key(url, number)}",
                          document)


def endpoint_of(url: str) -> str:
    """Scheme, host, port and path: never the user and password, the query string or the
    fragment; and a path segment that looks like a token (Slack and Discord hooks carry theirs
    in the path: 16 characters or more, with a digit or both cases) is [SECRET]."""
    return _TOKEN_SEGMENT.sub(_token_redacted, printable_url(url))


def _token_redacted(match: re.Match[str]) -> str:
    segment = match.group(0)
    both_cases = segment.lower() != segment and segment.upper() != segment
    return "[SECRET]" if both_cases or any(c.isdigit() for c in segment) else segment


def endpoint_key(url: str, number: int) -> str:
    """The endpoint's part of an audit document's id: a hash, so that no part of the URL is
    an id (ids are in every request log of Elasticsearch). The printable URL and the
    endpoint's place in the configuration: two URLs that differ only in their credentials or
    query keep records of their own."""
    text = f"{number}:{printable_url(url)}"
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def page_alert(page: dict[str, Any]) -> PageAlert:
    """A page as the act stage decided it (`streams/stages/act.py` `page_of`)."""
    return PageAlert(dedup_key=page["dedup_key"], rule_id=page["rule_id"],
                     severity=page["severity"], summary=page["summary"],
                     entity_kind=page["entity_kind"] or "", entity_id=page["entity_id"] or "",
                     ts_ms=int(page["ts_ms"] or 0), details=page["details"], link=page["link"])


def pagerduty_body(delivery: Delivery, routing_key: SecretStr) -> dict[str, Any]:
    alert = page_alert(delivery.body)
    if delivery.action == "resolve":
        return pagerduty_event_for(alert, routing_key, "resolve")
    return pagerduty_event_for(alert, routing_key, "trigger")


def alertmanager_body(delivery: Delivery) -> dict[str, Any]:
    alert = page_alert(delivery.body)
    if delivery.action == "resolve":
        return alertmanager_payload("resolved", alert.dedup_key, "misuse-detector", [alert],
                                    "", resolved_at_ms=delivery.ts_ms)
    return alertmanager_payload("firing", alert.dedup_key, "misuse-detector", [alert], "")


def register_deliverer(app: AppT, topics: Topics) -> None:
    # Small batches: a batch is acknowledged when its slowest delivery has an outcome.
    register_sink(app, topics, STAGE, ("misuse.deliveries",),
                  lambda: Deliverer(topics, topics.settings), batch_size=20, within=0.2)
