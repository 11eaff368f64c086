"""One decaying risk score per account from every detector's signals, the account's status,
and analysts' decisions, which the worker never overrides."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from pydantic import SecretStr

from detectors.accounts import (
    AccountRecord,
    AccountStatus,
    StatusChange,
    allowlist_review_alert,
    is_allowlisted,
    next_status,
)
from detectors.policy import Policy
from detectors.risk import RiskAssessment, RiskScorer, Signal
from streams.runtime import clock
from streams.runtime.driver import Emit, Stage, StateStore
from streams.runtime.messages import ActionRequest, AlertRecord, FeedbackRecord, SignalRecord
from streams.runtime.publish import ACTIONS, ALERTS, emit_document, emit_page_resolve
from streams.runtime.review import DecisionGate
from streams.settings import Settings
from streams.sinks.documents import account_document, action_document

log = logging.getLogger(__name__)

ALERT_DECISIONS = ("acknowledged", "closed")
CLOSE_REASONS = ("true_positive", "false_positive", "benign_positive", "duplicate")



def risk_scorer(policy: Policy) -> RiskScorer:
    risk = policy.risk
    return RiskScorer(half_life_ms=risk.half_life_seconds * 1000, weights=risk.weights,
                      flag_threshold=risk.flag_threshold,
                      suspend_threshold=risk.suspend_threshold,
                      suspend_min_detectors=risk.suspend_min_detectors)


def suspension_allowed(policy: Policy, change: StatusChange) -> bool:
    """Only if some detector behind the decision is allowed to ask for a suspension."""
    rules = policy.rules.model_dump()
    return any(rules.get(detector, {}).get("action") == "suspend"
               for detector in change.detectors)


class RiskStage(Stage):
    name = "score_risk"
    reads = (SignalRecord, FeedbackRecord)
    tables = ("state-risk", "state-account-status", "state-risk-decisions")

    def __init__(self, policy: Policy, state: StateStore,
                 review_keys: Mapping[str, SecretStr] | None = None) -> None:
        self.policy = policy
        self.scorer = risk_scorer(policy)
        self.risk_state, self.records, applied = map(state.table, self.tables)
        self.scorer.accounts = self.risk_state
        self.touched: dict[str, RiskAssessment] = {}
        self.pruning = clock.Every(60)
        # Whose signed decisions count (analyst -> key); none: every decision is refused.
        self.decisions = DecisionGate(review_keys or {}, applied,
                                      policy.automation.max_decision_age_minutes)

    @classmethod
    def configured(cls, policy: Policy, state: StateStore, settings: Settings) -> RiskStage:
        return cls(policy, state, settings.review_keys)

    def reconfigure(self, policy: Policy) -> None:
        """New weights and thresholds; the decaying contributions stay."""
        self.policy = policy
        self.decisions.max_age_ms = policy.automation.max_decision_age_minutes * 60_000
        scorer = risk_scorer(policy)
        scorer.accounts = self.risk_state
        self.scorer = scorer

    def process(self, item: Any, emit: Emit, now_ms: int) -> None:
        if isinstance(item, FeedbackRecord):
            self.decisions.check(item, emit, now_ms)
            self.on_feedback(item, emit)
            self.decisions.applied_now(item)
        else:
            self.on_signal(item.signal, emit)

    def after(self, emit: Emit, latest_event_ms: int) -> None:
        for account, assessment in self.touched.items():
            record: AccountRecord = self.records[account]
            assert record.status is not None
            emit_document(emit, "accounts", account, account_document(
                account, asdict(record.status), assessment, record.first_flagged_ms,
                record.last_flagged_ms, record.history))
        self.touched.clear()
        if self.pruning.due():
            self.scorer.prune(clock.now_ms())
            self.decisions.forget_stale(clock.now_ms())

    def on_signal(self, signal: Signal, emit: Emit) -> None:
        assessment = self.scorer.add(signal)
        record: AccountRecord = self.records.get(signal.account_id) or AccountRecord()
        status = record.status
        if status is not None and is_allowlisted(status, signal.ts_ms) \
                and signal.ts_ms >= (status.since_ms or 0) \
                and assessment.score >= self.policy.risk.flag_threshold:
            alert = allowlist_review_alert(signal.account_id, status, assessment)
            emit(ALERTS, alert.alert_id, AlertRecord(alert))  # for review only: no signal
        change = next_status(record.status, assessment, signal.ts_ms)
        if change is not None:
            self.apply(record, change, emit)
        self.records[signal.account_id] = record
        if record.status is not None:
            self.touched[signal.account_id] = assessment

    def apply(self, record: AccountRecord, change: StatusChange, emit: Emit) -> None:
        record.status = change.apply(record.status)
        record.first_flagged_ms = record.first_flagged_ms or change.ts_ms
        record.last_flagged_ms = change.ts_ms
        record.record({"ts_ms": change.ts_ms, "status": change.status, "by": "worker",
                       "score": round(change.score, 4), "detectors": list(change.detectors)})
        log.info("account_status account=%s status=%s previous=%s score=%.2f",
                 change.account_id, change.status, change.previous, change.score)
        if change.request_suspension:
            self.request_suspension(change, emit)

    def request_suspension(self, change: StatusChange, emit: Emit) -> None:
        automation = self.policy.automation
        allowed = automation.suspension_enabled and suspension_allowed(self.policy, change)
        request = ActionRequest(
            account_id=change.account_id, action="suspend", ts_ms=change.ts_ms, automated=True,
            # Dry run unless the policy turns automation on: then the act stage may carry it
            # out, within its hourly cap.
            dry_run=automation.dry_run or not allowed, reasons=change.reasons,
            alert_ids=change.alert_ids, detectors=change.detectors,
            score=round(change.score, 4), status=change.status, previous=change.previous,
            evidence_since_ms=change.evidence_since_ms)
        emit(ACTIONS, change.account_id, request)
        emit_document(emit, "actions", f"suspend-{change.account_id}-{change.ts_ms}",
                      action_document(request.as_map(), outcome="requested"))

    def on_feedback(self, decision: FeedbackRecord, emit: Emit) -> None:
        """An analyst's decision: cleared, allowlisted (optionally until a time) or unlisted,
        or acknowledged / closed on one of the account's alerts."""
        account, ts_ms, kind = decision.account_id, decision.ts_ms, decision.decision
        if kind in ALERT_DECISIONS:
            self.on_alert_decision(decision, emit)
            return
        record: AccountRecord = self.records.get(account) or AccountRecord()
        if record.status is not None and record.status.status == "suspended" \
                and kind in ("cleared", "allowlisted"):
            # The analyst overrules the suspension: the act stage reverses what it did.
            emit(ACTIONS, account, ActionRequest(
                account_id=account, action="unsuspend", ts_ms=ts_ms, automated=False,
                analyst=decision.analyst, decision_id=decision.decision_id,
                reasons=(f"{kind} by {decision.analyst}",)))
        if kind == "cleared":
            record.status = AccountStatus("cleared", "analyst", cleared_at_ms=ts_ms,
                                          since_ms=ts_ms)
        elif kind == "allowlisted":
            record.status = AccountStatus("allowlisted", "analyst", since_ms=ts_ms,
                                          allowlisted_until_ms=decision.until_ms)
        else:  # "unlisted": the allowlisting ends now; what it covered stays reviewed
            record.status = AccountStatus("allowlisted", "analyst", since_ms=ts_ms,
                                          allowlisted_until_ms=ts_ms)
        record.record({"ts_ms": ts_ms, "status": kind, "by": decision.analyst,
                       "note": decision.note})
        self.records[account] = record
        self.touched[account] = self.scorer.assess(account, ts_ms)
        # Its own audit record: two decisions on one account never share an id.
        emit_document(emit, "actions", f"{kind}-{account}-{decision.decision_id}", action_document(
            {**decision.to_plain(), "action": kind, "automated": False}, outcome="done"))

    def on_alert_decision(self, decision: FeedbackRecord, emit: Emit) -> None:
        """Closed as a false positive, the alert stops feeding the account's risk; closed for
        any reason, its incident's page resolves. (The alert document itself carries the
        analyst's status: `misuse review --alert` writes it.)"""
        account, ts_ms = decision.account_id, decision.ts_ms
        if not decision.alert_id:
            raise ValueError(f"an alert decision needs the alert id: {decision.decision!r}")
        if decision.decision == "closed":
            if decision.close_reason not in CLOSE_REASONS:
                raise ValueError(f"unknown close reason {decision.close_reason!r}")
            if decision.close_reason == "false_positive":
                assessment = self.scorer.dismiss(account, decision.alert_id, ts_ms)
                record = self.records.get(account)
                if record is not None and record.status is not None:
                    self.touched[account] = assessment  # its document shows the lower risk
            if decision.page_group:
                emit_page_resolve(emit, decision.page_group, ts_ms)
        emit_document(emit, "actions", f"alert-{decision.decision}-{decision.alert_id}-"
                      f"{account}-{decision.decision_id}", action_document(
                          {**decision.to_plain(), "action": f"alert_{decision.decision}",
                           "alert_ids": [decision.alert_id], "automated": False},
                          outcome="done", reason=decision.close_reason or decision.note,
                          actor=decision.analyst))
