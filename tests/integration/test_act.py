"""The act stage through the real worker: suspension requests from the risk stage reach a real
HTTP receiver signed (Standard Webhooks), once in effect across a SIGKILL mid-delivery; the
circuit breaker holds the surplus and pages PagerDuty and Alertmanager fakes; an analyst
approves one held request and resumes automation, which resolves the page."""

from __future__ import annotations

import base64
import copy
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml
from pydantic import SecretStr

from detectors.risk import Signal
from streams.runtime import clock
from streams.runtime.messages import SignalRecord, encode_batch
from streams.settings import REPO_ROOT
from streams.tooling.runner import WorkerProcess
from tests.receiver import HANG, Receiver

from .conftest import Pipeline, close_pipeline, open_pipeline

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()


def policy_file(tmp_path: Path) -> Path:
    policy = copy.deepcopy(yaml.safe_load((REPO_ROOT / "ops" / "policy.yaml").read_text()))
    policy["automation"].update({
        "suspension_enabled": True, "dry_run": False, "max_suspensions_per_hour": 100,
        # The 4th suspension asked for this hour trips the breaker (the usual rate is 0).
        "breaker_min_suspensions": 4, "breaker_multiple": 2.0})
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy))
    return path


def suspend_worthy(pipeline: Pipeline, account: str) -> None:
    """Two detectors allowed to suspend, at full strength: over the suspend threshold."""
    now = clock.now_ms()
    signals = [SignalRecord(Signal(account, detector, f"{detector}.test", 1.0, now - 1000 * n,
                                   f"alert-{account}-{detector}", "test evidence"))
               for n, detector in enumerate(("jailbreak", "leaked_key"))]
    pipeline.producer.send(pipeline.settings.topic("misuse.signals"), key=account.encode(),
                           value=encode_batch(SignalRecord.TYPE, signals)).get(timeout=30)


def review(pipeline: Pipeline, account: str, decision: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli", "review", account, "--decision", decision,
         "--analyst", "test-analyst"], env=pipeline.worker.env, cwd=REPO_ROOT,
        capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def delivered(receiver: Receiver, path: str) -> list[dict]:
    """The bodies that had an effect at `path`."""
    return [r.json for r in receiver.requests_to(path) if r.effect]


def test_suspensions_are_signed_delivered_once_across_a_kill_and_the_breaker_pages(
        tmp_path: Path) -> None:
    receiver = Receiver(hang_s=5).start_in_thread()
    receiver.require_signatures([SecretStr(SECRET)], path="/suspend")
    receiver.script([HANG, HANG], path="/suspend")  # in flight when the worker is killed
    env = {"MISUSE_POLICY_FILE": str(policy_file(tmp_path)),
           "MISUSE_SUSPENSION_WEBHOOK_URLS": json.dumps([receiver.url("/suspend")]),
           "MISUSE_SUSPENSION_WEBHOOK_SECRETS": json.dumps([SECRET]),
           "MISUSE_PAGERDUTY_URL": receiver.url("/pagerduty"),
           "MISUSE_PAGERDUTY_ROUTING_KEY": "test-routing-key",
           "MISUSE_ALERTMANAGER_URL": receiver.url("/alertmanager"),
           "MISUSE_WEBHOOK_TIMEOUT_SECONDS": "1"}
    pipeline = open_pipeline("act", tmp_path / "data", tmp_path / "worker.log",
                             env_overrides=env)
    try:
        accounts = [f"acct-suspend-{i}" for i in range(5)]
        for account in accounts[:3]:
            suspend_worthy(pipeline, account)
        # Killed while a delivery waits on the receiver: the batch is not acknowledged.
        wait_until(lambda: bool(receiver.requests_to("/suspend")), "a first delivery")
        pipeline.worker.stop(kill=True)
        pipeline.worker = WorkerProcess(pipeline.settings, pipeline.worker.log_path,
                                        pipeline.worker.env)
        pipeline.worker.start()
        wait_until(lambda: len(delivered(receiver, "/suspend")) == 3, "three suspensions")
        pipeline.wait_drained()

        bodies = delivered(receiver, "/suspend")
        assert sorted(b["account_id"] for b in bodies) == accounts[:3]
        assert all(b["action"] == "suspend" and b["automated"] and b["alert_ids"]
                   and b["policy_version"] == 1 for b in bodies)
        assert receiver.bad_signatures == 0 and not receiver.conflicting_ids()
        assert len(receiver.distinct_ids) == 3  # retries and the replay reused each id

        # Two more this hour: the 4th trips the breaker, and both wait for an analyst.
        for account in accounts[3:]:
            suspend_worthy(pipeline, account)
        wait_until(lambda: receiver.requests_to("/pagerduty"), "the breaker's page")
        pipeline.wait_drained()
        assert len(delivered(receiver, "/suspend")) == 3
        [trigger] = [r.json for r in receiver.requests_to("/pagerduty")]
        assert trigger["event_action"] == "trigger" and trigger["routing_key"]
        assert trigger["payload"]["severity"] == "critical"
        [firing] = [r.json for r in receiver.requests_to("/alertmanager")]
        assert firing["status"] == "firing"

        # An analyst approves one held suspension and resumes automation.
        review(pipeline, accounts[3], "approved")
        review(pipeline, "automation", "resume")
        wait_until(lambda: len(delivered(receiver, "/suspend")) == 4, "the approved one")
        wait_until(lambda: len(receiver.requests_to("/pagerduty")) == 2, "the resolve")
        pipeline.wait_drained()
        approved = [b for b in delivered(receiver, "/suspend")
                    if b["account_id"] == accounts[3]]
        assert approved and approved[0]["approved_by"] == "test-analyst"
        resolve = receiver.requests_to("/pagerduty")[1].json
        assert resolve["event_action"] == "resolve"
        assert resolve["dedup_key"] == trigger["dedup_key"]
        assert receiver.requests_to("/alertmanager")[-1].json["status"] == "resolved"
        # The fifth waits on: held requests are never dropped, nor sent without an analyst.
        assert accounts[4] not in {b["account_id"] for b in delivered(receiver, "/suspend")}

        audit = pipeline.search("actions", {"term": {"event.action": "deliver_suspension"}})
        assert {d["event"]["outcome"] for d in audit} == {"delivered"}
        assert all(d["misuse"]["delivery"]["attempts"] >= 1 for d in audit)
        held = pipeline.search("actions", {"term": {"event.outcome": "awaiting_approval"}})
        assert {d["user"]["id"] for d in held} == {accounts[4]}  # the 3rd's is now "sent"
    finally:
        close_pipeline(pipeline)
        receiver.stop()
