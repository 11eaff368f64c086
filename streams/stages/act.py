"""Act on what the detectors found: suspension requests within the hourly cap and the circuit
breaker, the approval queue analysts work through, reversals, and on-call pages, grouped and
rate-limited. Every decision is audited in `misuse-actions`; what goes out is a `Delivery` on
`misuse.deliveries`, which the delivery sink carries out (`streams/sinks/deliver.py`).

The stage reads `misuse.account-actions`, which has one partition: one worker holds the ledger,
so the cap and the breaker hold across every worker.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, cast

from pydantic import SecretStr

from detectors.actions import QUEUE_BREAKER, SEND, AutomationLedger, PageLedger, severity_at_least
from detectors.alerts import Alert, Entity
from detectors.policy import Policy, Severity
from detectors.redaction import redact
from streams.runtime import clock
from streams.runtime.driver import Emit, Stage, StateStore
from streams.runtime.messages import ActionRequest, Delivery, FeedbackRecord, PageRequest
from streams.runtime.publish import emit_document
from streams.runtime.review import DecisionGate, refuse
from streams.settings import Settings
from streams.sinks.documents import action_document
from streams.sinks.webhooks import message_id

log = logging.getLogger(__name__)

DELIVERIES = "misuse.deliveries"
AUTOMATION, PAGES = "automation", "pages"  # the stage's two ledgers, in its one table
APPROVAL_DECISIONS = ("approved", "rejected", "resume")
BREAKER_GROUP = "automation:circuit-breaker"


class ActStage(Stage):
    name = "act"
    reads = (ActionRequest, PageRequest, FeedbackRecord)
    tables = ("state-act", "state-act-decisions")

    def __init__(self, policy: Policy, state: StateStore,
                 review_keys: Mapping[str, SecretStr] | None = None) -> None:
        self.policy = policy
        self.ledgers, applied = map(state.table, self.tables)
        # Whose signed decisions count (analyst -> key); none: every decision is refused.
        self.decisions = DecisionGate(review_keys or {}, applied,
                                      policy.automation.max_decision_age_minutes)
        self.pruning = clock.Every(60)

    @classmethod
    def configured(cls, policy: Policy, state: StateStore, settings: Settings) -> ActStage:
        return cls(policy, state, settings.review_keys)

    def reconfigure(self, policy: Policy) -> None:
        self.policy = policy
        self.decisions.max_age_ms = policy.automation.max_decision_age_minutes * 60_000

    def process(self, item: Any, emit: Emit, now_ms: int) -> None:
        if isinstance(item, ActionRequest):
            self.on_request(item, emit, now_ms)
        elif isinstance(item, PageRequest):
            self.on_page(item, emit, now_ms)
        else:
            self.on_decision(item, emit, now_ms)

    def after(self, emit: Emit, latest_event_ms: int) -> None:
        pages = self.ledgers.get(PAGES)
        if pages is not None and latest_event_ms:
            pages.forget_before(latest_event_ms, 7 * 86_400_000)
            self.ledgers[PAGES] = pages
        if self.pruning.due():
            self.decisions.forget_stale(clock.now_ms())

    # Suspensions

    def on_request(self, request: ActionRequest, emit: Emit, now_ms: int) -> None:
        account, action = request.account_id, request.action
        audit_id = f"{action}-{account}-{request.ts_ms}"
        if request.decision_id:  # an analyst's reversal: the decision's own record
            audit_id += f"-{request.decision_id}"
        ledger = self.automation()
        if action == "unsuspend":
            self.reverse(request, ledger, emit, audit_id)
        elif action != "suspend":
            raise ValueError(f"unknown action {action!r}")
        elif request.dry or not self.live():
            audit(emit, audit_id, request, "dry_run")
        else:
            verdict, tripped = ledger.admit(audit_id, now_ms, self.policy.automation)
            if tripped:
                self.page_breaker(emit, now_ms)
            if verdict == SEND:
                self.send_suspension(request, emit, audit_id)
                ledger.suspended[account] = now_ms
            else:
                ledger.queue(account, request.as_map())
                reason = ("the circuit breaker is open" if verdict == QUEUE_BREAKER else
                          "the hourly cap is reached")
                log.warning("suspension_held account=%s reason=%r", account, reason)
                audit(emit, audit_id, request, "awaiting_approval", reason=reason)
        self.ledgers[AUTOMATION] = ledger

    def live(self) -> bool:
        """This stage's own policy must allow it too: the request may predate a change."""
        automation = self.policy.automation
        return automation.suspension_enabled and not automation.dry_run

    def send_suspension(self, request: ActionRequest, emit: Emit, audit_id: str,
                        approved_by: str | None = None) -> None:
        account, action = request.account_id, request.action
        body = {"request_id": audit_id, "account_id": account, "action": action,
                "reasons": list(request.reasons), "alert_ids": list(request.alert_ids),
                "evidence_links": [f"misuse-alerts/{a}" for a in request.alert_ids],
                "detectors": list(request.detectors),
                "policy_version": self.policy.version, "automated": approved_by is None,
                "approved_by": approved_by, "requested_at_ms": request.ts_ms}
        emit(DELIVERIES, account, Delivery(id=message_id(audit_id), receiver="suspension",
                                           body=body, account_id=account, action=action,
                                           ts_ms=request.ts_ms))
        audit(emit, audit_id, request, "sent", actor=approved_by)

    def reverse(self, request: ActionRequest, ledger: AutomationLedger, emit: Emit,
                audit_id: str) -> None:
        """An analyst cleared or allowlisted the account: undo what was done for it."""
        account = request.account_id
        if ledger.suspended.pop(account, None) is not None:
            self.send_suspension(request, emit, audit_id, approved_by=request.analyst)
        elif ledger.take(account) is not None:
            audit(emit, audit_id, request, "withdrawn", reason="the suspension waiting for "
                  "approval is withdrawn: an analyst cleared the account")
        else:
            audit(emit, audit_id, request, "nothing_to_reverse")

    def on_decision(self, decision: FeedbackRecord, emit: Emit, now_ms: int) -> None:
        """An analyst works the approval queue: approve or reject a held suspension, or resume
        automation after the breaker opened. Only signed decisions count."""
        self.decisions.check(decision, emit, now_ms)
        if decision.decision not in APPROVAL_DECISIONS:
            refuse(decision, self.decisions.keys, emit,
                   f"{decision.decision!r} is not a decision on the approval queue")
        ledger = self.automation()
        record = {**decision.to_plain(), "action": decision.decision, "automated": False}
        audit_id = f"{decision.decision}-{decision.account_id}-{decision.decision_id}"
        if decision.decision == "resume":
            ledger.resume()
            audit(emit, audit_id, record, "done", actor=decision.analyst)
            self.resolve(emit, BREAKER_GROUP, now_ms)
        else:
            held = ledger.take(decision.account_id)
            request = None if held is None else ActionRequest.from_map(held)
            if request is None:
                audit(emit, audit_id, record, "nothing_waiting", actor=decision.analyst)
            elif decision.decision == "approved":
                held_id = f"suspend-{decision.account_id}-{request.ts_ms}"
                self.send_suspension(request, emit, held_id, approved_by=decision.analyst)
                ledger.suspended[decision.account_id] = now_ms
                audit(emit, audit_id, record, "done", actor=decision.analyst)
            else:
                audit(emit, audit_id, record, "done", actor=decision.analyst)
        self.ledgers[AUTOMATION] = ledger
        self.decisions.applied_now(decision)

    def automation(self) -> AutomationLedger:
        ledger = self.ledgers.get(AUTOMATION)
        return ledger if ledger is not None else AutomationLedger()

    # Pages

    def on_page(self, page: PageRequest, emit: Emit, now_ms: int) -> None:
        if page.action == "resolve":
            self.resolve(emit, page.group, now_ms)
            return
        if page.action != "trigger" or page.alert is None:
            raise ValueError(f"a page request is a trigger with its alert or a resolve, got "
                             f"{page.action!r}")
        paging, alert = self.policy.paging, page.alert
        if alert.rule_id in paging.exclude_rules \
                or not severity_at_least(alert.severity, paging.min_severity):
            return
        self.trigger(emit, page.group, alert, now_ms)

    def trigger(self, emit: Emit, group: str, alert: Alert, now_ms: int) -> None:
        paging = self.policy.paging
        ledger = self.ledgers.get(PAGES) or PageLedger()
        receivers = paging.routes.get(cast(Severity, alert.severity), [])
        page = {**page_of(alert), "receivers": receivers}
        pages, held_back = ledger.trigger(group, page, now_ms,
                                          paging.group_window_seconds * 1000,
                                          paging.max_pages_per_hour)
        self.ledgers[PAGES] = ledger
        if not pages:
            return
        if held_back:
            page["details"]["pages_held_back"] = held_back
        for receiver in receivers:
            emit(DELIVERIES, group, Delivery(
                id=message_id("page", receiver, alert.alert_id, "trigger"),
                receiver=receiver, body=page, action="trigger", ts_ms=now_ms))
        audit(emit, f"page-{alert.alert_id}", {"action": "page", "ts_ms": now_ms,
                                                "alert_ids": [alert.alert_id]}, "sent",
              reason=page["summary"])

    def resolve(self, emit: Emit, group: str, now_ms: int) -> None:
        ledger = self.ledgers.get(PAGES) or PageLedger()
        page = ledger.resolve(group)
        self.ledgers[PAGES] = ledger
        if page is None:
            return
        dedup_key = page["dedup_key"]
        for receiver in page["receivers"]:  # where it was paged, with what it said
            emit(DELIVERIES, group, Delivery(
                id=message_id("page", receiver, dedup_key, "resolve"), receiver=receiver,
                body={**page, "event_action": "resolve"}, action="resolve", ts_ms=now_ms))
        audit(emit, f"page-resolve-{dedup_key}", {"action": "page_resolve", "ts_ms": now_ms,
                                                   "alert_ids": [dedup_key]}, "sent")

    def page_breaker(self, emit: Emit, now_ms: int) -> None:
        automation = self.policy.automation
        # Its id, as every alert's, is its rule, entity and start: one per opening.
        alert = Alert(rule_id="automation.circuit_breaker", severity="critical", score=1.0,
                      entity=Entity("automation", "suspensions"), incident_start_ms=now_ms,
                      window_start_ms=now_ms, window_end_ms=now_ms,
                      reasons=(f"over {automation.breaker_multiple:g}x the usual hourly rate of "
                               f"suspension requests (and at least "
                               f"{automation.breaker_min_suspensions}): automation is stopped "
                               "and requests wait for approval until an analyst resumes it",))
        log.error("circuit_breaker_open: automated suspensions stopped")
        self.trigger(emit, BREAKER_GROUP, alert, now_ms)


def page_of(alert: Alert) -> dict[str, Any]:
    """What a pager needs of an alert: no prompts, reasons redacted (they leave the company)."""
    reasons = [redact(str(r)) for r in alert.reasons][:5]
    entity = alert.entity
    summary = f"[{alert.severity}] {alert.rule_id} on {entity.kind} " \
              f"{entity.id}: {reasons[0] if reasons else ''}"
    details = {"rule_id": alert.rule_id, "severity": alert.severity, "score": alert.score,
               "entity_kind": entity.kind, "entity_id": entity.id,
               "accounts": len(alert.accounts), "reasons": reasons}
    return {"event_action": "trigger", "dedup_key": alert.alert_id, "summary": summary,
            "severity": alert.severity, "rule_id": alert.rule_id, "entity_kind": entity.kind,
            "entity_id": entity.id, "ts_ms": alert.window_end_ms, "details": details,
            "link": f"misuse-alerts/{alert.alert_id}"}


def audit(emit: Emit, audit_id: str, action: ActionRequest | dict[str, Any], outcome: str,
          reason: str | None = None, actor: str | None = None) -> None:
    if isinstance(action, ActionRequest):
        action = action.as_map()
    emit_document(emit, "actions", audit_id, action_document(action, outcome, reason, actor))
