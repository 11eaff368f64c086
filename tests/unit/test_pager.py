"""PagerDuty and Alertmanager payloads against their documented shapes, and a delivery."""

from __future__ import annotations

import asyncio
import json
import random
import re
from typing import Any

import pytest
from pydantic import SecretStr

from streams.settings import Settings
from streams.sinks.pager import (
    ALERTMANAGER_NO_END,
    PAGERDUTY_EVENTS_URL,
    SEVERITY_TO_PAGERDUTY,
    PageAlert,
    alertmanager_payload,
    encode,
    pagerduty_event,
    pagerduty_event_for,
    send_page,
)
from streams.sinks.webhooks import DeliveryResult, WebhookClient
from tests.receiver import Receiver

ROUTING_KEY = SecretStr("R0UT1NGKEY0123456789abcdefghijkl")
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")

# Events API v2 (developer.pagerduty.com/docs/events-api-v2/trigger-events/): the fields a
# trigger may carry, those it must, and the enums.
PD_TOP_LEVEL = {"routing_key", "event_action", "dedup_key", "payload", "images", "links",
                "client", "client_url"}
PD_PAYLOAD = {"summary", "source", "severity", "timestamp", "component", "group", "class",
              "custom_details"}
PD_REQUIRED_PAYLOAD = {"summary", "source", "severity"}
PD_SEVERITIES = {"critical", "error", "warning", "info"}
# Alertmanager webhook_config, version 4.
AM_TOP_LEVEL = {"version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels",
                "commonLabels", "commonAnnotations", "externalURL", "alerts"}
AM_ALERT = {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL",
            "fingerprint"}


def alert(**changes: Any) -> PageAlert:
    fields: dict[str, Any] = {
        "dedup_key": "misuse:credential-stuffing:account:acct-7f3a", "rule_id":
        "credential-stuffing", "severity": "high", "summary": "Credential stuffing from 40 IPs",
        "entity_kind": "account", "entity_id": "acct-7f3a", "ts_ms": 1_700_000_000_123,
        "details": {"ips": 40, "keys": ["key-1", "key-2"]},
        "link": "https://kibana.example/app/alerts/1"}
    return PageAlert(**(fields | changes))


def assert_pagerduty_trigger(event: dict[str, Any]) -> None:
    assert set(event) <= PD_TOP_LEVEL
    assert {"routing_key", "event_action", "payload"} <= set(event)
    assert event["event_action"] == "trigger"
    payload = event["payload"]
    assert PD_REQUIRED_PAYLOAD <= set(payload) <= PD_PAYLOAD
    assert payload["severity"] in PD_SEVERITIES
    assert payload["summary"] and len(payload["summary"]) <= 1024
    assert 0 < len(event.get("dedup_key", "x")) <= 255
    if "timestamp" in payload:
        assert RFC3339.match(payload["timestamp"])
    for link in event.get("links", []):
        assert set(link) <= {"href", "text"} and link["href"]


def test_a_trigger_has_the_documented_shape() -> None:
    event = pagerduty_event(ROUTING_KEY, "trigger", "dk-1", "Jailbreak spray", "critical",
                            "misuse-detector", "account:acct-1", "jailbreak", {"hits": 12},
                            [{"href": "https://kibana.example/x", "text": "Alert"}],
                            timestamp_ms=1_700_000_000_000, event_class="jailbreak-spray")
    assert_pagerduty_trigger(event)
    assert event["routing_key"] == ROUTING_KEY.get_secret_value()
    assert event["dedup_key"] == "dk-1"
    assert event["payload"] == {
        "summary": "Jailbreak spray", "source": "misuse-detector", "severity": "critical",
        "timestamp": "2023-11-14T22:13:20.000Z", "component": "account:acct-1",
        "group": "jailbreak", "class": "jailbreak-spray", "custom_details": {"hits": 12}}
    assert event["links"] == [{"href": "https://kibana.example/x", "text": "Alert"}]
    assert event["client"] == "misuse-detector"


def test_optional_fields_are_left_out_rather_than_null() -> None:
    event = pagerduty_event(ROUTING_KEY, "trigger", "dk-2", "s", "low", "src", None, None, {},
                            [])
    assert_pagerduty_trigger(event)
    assert set(event["payload"]) == PD_REQUIRED_PAYLOAD
    assert "links" not in event
    assert None not in event.values()


def test_a_resolve_carries_only_key_action_and_dedup_key() -> None:
    event = pagerduty_event(ROUTING_KEY, "resolve", "dk-1", "ignored", "critical", "src")
    assert event == {"routing_key": ROUTING_KEY.get_secret_value(),
                     "event_action": "resolve", "dedup_key": "dk-1"}


@pytest.mark.parametrize(("ours", "theirs"), sorted(SEVERITY_TO_PAGERDUTY.items()))
def test_our_severities_map_onto_pagerduty_s(ours: str, theirs: str) -> None:
    event = pagerduty_event(ROUTING_KEY, "trigger", "dk", "s", ours, "src")
    assert event["payload"]["severity"] == theirs
    assert theirs in PD_SEVERITIES


def test_the_severity_mapping_is_the_agreed_one() -> None:
    assert SEVERITY_TO_PAGERDUTY == {"critical": "critical", "high": "error",
                                     "medium": "warning", "low": "info"}


def test_a_long_summary_is_truncated_to_1024_characters() -> None:
    long = "x" * 5000
    summary = pagerduty_event(ROUTING_KEY, "trigger", "dk", long, "low", "src")["payload"][
        "summary"]
    assert len(summary) == 1024 and summary.endswith("…") and summary.startswith("x" * 1000)
    exact = "y" * 1024
    assert pagerduty_event(ROUTING_KEY, "trigger", "dk", exact, "low", "src")["payload"][
        "summary"] == exact


@pytest.mark.parametrize("bad", [
    {"severity": "urgent"}, {"summary": ""}, {"source": ""}, {"dedup_key": "d" * 256},
    {"dedup_key": ""}, {"action": "acknowledge"}, {"links": [{"text": "no href"}]},
])
def test_invalid_events_are_refused(bad: dict[str, Any]) -> None:
    arguments: dict[str, Any] = {"action": "trigger", "dedup_key": "dk", "summary": "s",
                                 "severity": "low", "source": "src"} | bad
    with pytest.raises(ValueError):
        pagerduty_event(ROUTING_KEY, **arguments)


def test_an_event_for_a_page_alert() -> None:
    event = pagerduty_event_for(alert(), ROUTING_KEY, "trigger")
    assert_pagerduty_trigger(event)
    assert event["dedup_key"] == alert().dedup_key
    assert event["payload"]["severity"] == "error"
    assert event["payload"]["custom_details"]["ips"] == 40
    assert event["payload"]["custom_details"]["entity_id"] == "acct-7f3a"
    assert event["links"][0]["href"] == "https://kibana.example/app/alerts/1"
    resolve = pagerduty_event_for(alert(), ROUTING_KEY, "resolve")
    assert set(resolve) == {"routing_key", "event_action", "dedup_key"}
    assert resolve["dedup_key"] == event["dedup_key"]


def test_the_routing_key_stays_hidden_in_reprs() -> None:
    assert ROUTING_KEY.get_secret_value() not in repr(alert())
    assert ROUTING_KEY.get_secret_value() not in repr(ROUTING_KEY)


def test_an_alertmanager_firing_payload_has_the_documented_shape() -> None:
    alerts = [alert(), alert(entity_id="acct-9c1d", dedup_key="dk-b", ts_ms=1_700_000_060_000,
                             details={"ips": 3})]
    payload = alertmanager_payload("firing", '{}:{alertname="credential-stuffing"}', "oncall",
                                   alerts, "http://misuse.example:6066")
    assert set(payload) == AM_TOP_LEVEL
    assert payload["version"] == "4" and payload["status"] == "firing"
    assert payload["truncatedAlerts"] == 0 and payload["receiver"] == "oncall"
    assert payload["externalURL"] == "http://misuse.example:6066"
    assert payload["groupLabels"] == {"alertname": "credential-stuffing"}
    assert payload["commonLabels"] == {"alertname": "credential-stuffing", "severity": "high",
                                       "entity_kind": "account"}
    assert payload["commonAnnotations"] == {"summary": "Credential stuffing from 40 IPs"}
    first, second = payload["alerts"]
    for item in payload["alerts"]:
        assert set(item) == AM_ALERT and item["status"] == "firing"
        assert RFC3339.match(item["startsAt"]) and item["endsAt"] == ALERTMANAGER_NO_END
        assert all(isinstance(v, str) for v in item["labels"].values())
        assert all(isinstance(v, str) for v in item["annotations"].values())
        assert re.fullmatch(r"[0-9a-f]{16}", item["fingerprint"])
    assert first["startsAt"] == "2023-11-14T22:13:20.123Z"
    assert first["labels"]["entity_id"] == "acct-7f3a"
    assert json.loads(first["annotations"]["keys"]) == ["key-1", "key-2"]
    assert first["generatorURL"] == "https://kibana.example/app/alerts/1"
    assert first["fingerprint"] != second["fingerprint"]


def test_the_fingerprint_depends_on_labels_only() -> None:
    def fingerprint(page: PageAlert) -> str:
        return str(alertmanager_payload("firing", "g", "r", [page], "u")["alerts"][0][
            "fingerprint"])
    assert fingerprint(alert()) == fingerprint(alert(summary="other", ts_ms=1))
    assert fingerprint(alert()) != fingerprint(alert(severity="critical"))


def test_a_resolved_payload_ends_its_alerts() -> None:
    payload = alertmanager_payload("resolved", "g", "r", [alert()], "u",
                                   resolved_at_ms=1_700_000_900_000)
    (item,) = payload["alerts"]
    assert payload["status"] == item["status"] == "resolved"
    assert item["endsAt"] == "2023-11-14T22:28:20.000Z"
    with pytest.raises(ValueError):
        alertmanager_payload("resolved", "g", "r", [alert()], "u")
    with pytest.raises(ValueError):
        alertmanager_payload("pending", "g", "r", [alert()], "u")  # type: ignore[arg-type]


def test_max_alerts_truncates_and_counts_the_rest() -> None:
    alerts = [alert(dedup_key=f"dk-{i}", entity_id=f"acct-{i}") for i in range(5)]
    payload = alertmanager_payload("firing", "g", "r", alerts, "u", max_alerts=2)
    assert len(payload["alerts"]) == 2 and payload["truncatedAlerts"] == 3


def test_pages_encode_to_the_same_bytes_every_time() -> None:
    event = pagerduty_event_for(alert(), ROUTING_KEY, "trigger")
    assert encode(event) == encode(json.loads(encode(event)))
    assert b" " not in encode({"a": [1, 2]})


def test_settings_carry_the_pager_and_webhook_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MISUSE_SUSPENSION_WEBHOOK_URLS", '["https://a/hook", "https://b/hook"]')
    monkeypatch.setenv("MISUSE_SUSPENSION_WEBHOOK_SECRETS", '["whsec_b2xk", "whsec_bmV3"]')
    monkeypatch.setenv("MISUSE_PAGERDUTY_ROUTING_KEY", ROUTING_KEY.get_secret_value())
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.suspension_webhook_urls == ["https://a/hook", "https://b/hook"]
    assert [s.get_secret_value() for s in settings.suspension_webhook_secrets] == [
        "whsec_b2xk", "whsec_bmV3"]
    assert settings.pagerduty_url == PAGERDUTY_EVENTS_URL
    assert settings.alertmanager_url is None
    assert (settings.webhook_timeout_seconds, settings.webhook_max_attempts) == (5.0, 6)
    shown = repr(settings)
    assert "whsec_b2xk" not in shown and ROUTING_KEY.get_secret_value() not in shown


def test_a_page_is_delivered_unsigned_with_retries() -> None:
    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)

    async def scenario() -> tuple[DeliveryResult, DeliveryResult, Receiver]:
        async with Receiver() as receiver:
            receiver.script([502, 202], path="/v2/enqueue")
            client = WebhookClient(timeout_s=2.0, sleep=sleep, rng=random.Random(1))
            event = pagerduty_event_for(alert(), ROUTING_KEY, "trigger")
            pd = await send_page(client, receiver.url("/v2/enqueue"), event, "dk")
            am_payload = alertmanager_payload("firing", "g", "oncall", [alert()], "u")
            am = await send_page(client, receiver.url("/alertmanager"), am_payload, "g")
            await client.close()
            return pd, am, receiver

    pd, am, receiver = asyncio.run(scenario())
    assert (pd.outcome, pd.status, pd.attempts) == ("delivered", 202, 2)
    assert (am.outcome, am.attempts) == ("delivered", 1)
    assert len(delays) == 1
    first, second, third = receiver.requests
    assert first.json == second.json and first.body == second.body
    assert_pagerduty_trigger(first.json)
    assert first.json["routing_key"] == ROUTING_KEY.get_secret_value()
    assert "webhook-signature" not in first.headers
    assert first.headers["content-type"] == "application/json"
    assert third.path == "/alertmanager" and set(third.json) == AM_TOP_LEVEL
