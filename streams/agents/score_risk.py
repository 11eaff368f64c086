"""One decaying risk score per account from every detector's signals, the account's status,
and analysts' decisions, which the worker never overrides."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from faust.types import StreamT

from detectors.accounts import AccountStatus, StatusChange, next_status
from detectors.policy import Policy
from detectors.risk import RiskAssessment, RiskScorer, Signal
from streams import clock, codec
from streams.app import app
from streams.policy import current_policy
from streams.publish import publish_document
from streams.sinks.documents import account_document, action_document
from streams.state import TableState, state_table, use_event
from streams.topics import account_actions_topic, feedback_topic, signals_topic

log = logging.getLogger(__name__)

risk_table = state_table("state-risk")
status_table = state_table("state-account-status")
signals_and_feedback = app.topic(signals_topic.get_topic_name(),
                                 feedback_topic.get_topic_name(),
                                 key_type=bytes, value_type=bytes)
MAX_HISTORY = 100


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


class AccountRecord:
    """What the worker knows of an account between signals: status, flag times, history."""

    def __init__(self) -> None:
        self.status: AccountStatus | None = None
        self.first_flagged_ms: int | None = None
        self.last_flagged_ms: int | None = None
        self.history: list[dict[str, Any]] = []

    def record(self, entry: dict[str, Any]) -> None:
        self.history.append(entry)
        del self.history[:-MAX_HISTORY]


class RiskStage:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.scorer = risk_scorer(policy)
        self.risk_state = TableState(risk_table)
        self.records = TableState(status_table)
        self.scorer.accounts = self.risk_state
        self.touched: dict[str, RiskAssessment] = {}

    async def on_signal(self, signal: Signal) -> None:
        assessment = self.scorer.add(signal)
        record: AccountRecord = self.records.get(signal.account_id) or AccountRecord()
        change = next_status(record.status, assessment, signal.ts_ms)
        if change is not None:
            await self.apply(record, change)
        self.records[signal.account_id] = record
        if record.status is not None:
            self.touched[signal.account_id] = assessment

    async def apply(self, record: AccountRecord, change: StatusChange) -> None:
        record.status = change.apply(record.status)
        record.first_flagged_ms = record.first_flagged_ms or change.ts_ms
        record.last_flagged_ms = change.ts_ms
        record.record({"ts_ms": change.ts_ms, "status": change.status, "by": "worker",
                       "score": round(change.score, 4), "detectors": list(change.detectors)})
        log.info("account_status account=%s status=%s previous=%s score=%.2f",
                 change.account_id, change.status, change.previous, change.score)
        if change.request_suspension:
            await self.request_suspension(change)

    async def request_suspension(self, change: StatusChange) -> None:
        automation = self.policy.automation
        allowed = automation.suspension_enabled and suspension_allowed(self.policy, change)
        request = {**change.to_dict(), "action": "suspend", "automated": True,
                   # Dry run unless the policy turns automation on: then the act stage may
                   # carry it out, within its hourly cap.
                   "dry_run": automation.dry_run or not allowed}
        await account_actions_topic.send(key=change.account_id.encode(),
                                         value=codec.dumps(request))
        await publish_document("actions", f"suspend-{change.account_id}-{change.ts_ms}",
                               action_document(request, outcome="requested"))

    async def on_feedback(self, decision: dict[str, Any]) -> None:
        """An analyst's decision: cleared, allowlisted (optionally until a time) or unlisted."""
        account = str(decision["account_id"])
        ts_ms = int(decision["ts_ms"])
        record: AccountRecord = self.records.get(account) or AccountRecord()
        kind = decision["decision"]
        if kind == "cleared":
            record.status = AccountStatus("cleared", "analyst", cleared_at_ms=ts_ms,
                                          since_ms=ts_ms)
        elif kind == "allowlisted":
            record.status = AccountStatus("allowlisted", "analyst", since_ms=ts_ms,
                                          allowlisted_until_ms=decision.get("until_ms"))
        else:  # "unlisted": the allowlisting ends now; what it covered stays reviewed
            record.status = AccountStatus("allowlisted", "analyst", since_ms=ts_ms,
                                          allowlisted_until_ms=ts_ms)
        record.record({"ts_ms": ts_ms, "status": kind, "by": decision.get("analyst", "analyst"),
                       "note": decision.get("note", "")})
        self.records[account] = record
        self.touched[account] = self.scorer.assess(account, ts_ms)
        await publish_document("actions", f"{kind}-{account}-{ts_ms}",
                               action_document({**decision, "action": kind,
                                                "automated": False}, outcome="done"))

    async def publish_accounts(self) -> None:
        for account, assessment in self.touched.items():
            record: AccountRecord = self.records[account]
            assert record.status is not None
            await publish_document("accounts", account, account_document(
                account, asdict(record.status), assessment, record.first_flagged_ms,
                record.last_flagged_ms, record.history))
        self.touched.clear()


@app.agent(signals_and_feedback)
async def score_risk(stream: StreamT) -> None:
    stage = RiskStage(current_policy())
    housekeeping = clock.Every(60)
    feedback_name = feedback_topic.get_topic_name()
    async for batch in stream.take_events(500, within=0.5):  # type: ignore[attr-defined]
        stage.policy = current_policy()
        for message in batch:
            use_event(message)
            record = codec.loads(message.value)
            if message.message.topic == feedback_name:
                await stage.on_feedback(record)
            else:
                await stage.on_signal(Signal.from_dict(record))
        await stage.publish_accounts()
        stage.risk_state.flush()
        stage.records.flush()
        if housekeeping.due():
            stage.scorer.prune(clock.now_ms())
