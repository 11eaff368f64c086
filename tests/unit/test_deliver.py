"""The delivery sink against real local HTTP servers: each endpoint's outcome is audited, and
one that fails for good (unreachable, hanging) is reported for the dead-letter topic rather than
lost or retried forever; a bad answer (400) is recorded, not retried."""

import asyncio
import json
import socket

from pydantic import SecretStr

from streams.runtime.messages import Delivery
from streams.settings import Settings
from streams.sinks.deliver import Deliverer, endpoint_of
from tests.receiver import HANG, Receiver

SECRET = SecretStr("whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQ=")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def suspension() -> Delivery:
    return Delivery(id="msg_1", receiver="suspension", account_id="acct-1", action="suspend",
                    ts_ms=1_700_000_000_000, body={"account_id": "acct-1", "action": "suspend"})


def deliver(urls: list[str], delivery: Delivery, secrets: list[SecretStr] | None = None):
    settings = Settings(suspension_webhook_urls=[], suspension_webhook_secrets=[SECRET],
                        webhook_timeout_seconds=0.3, webhook_max_attempts=2)
    # As configured, unchecked: the settings refuse bad URLs and secrets when read, and the
    # tests below give the sink what a path around that check could.
    settings = settings.model_copy(update={"suspension_webhook_urls": urls,
                                           "suspension_webhook_secrets": secrets or [SECRET]})
    deliverer = Deliverer(topics=None, settings=settings)  # type: ignore[arg-type]

    async def run():
        try:
            return await deliverer.deliver("the-event", delivery)
        finally:
            await deliverer.close()
    return asyncio.run(run())


def outcomes(audits) -> list[str]:
    return [a.source["event"]["outcome"] for a in audits]


def test_every_endpoint_gets_the_signed_request_and_an_audit_record():
    with Receiver(secrets=[SECRET]) as receiver:
        receiver.script([400], path="/bad")
        audits, failures = deliver([receiver.url("/a"), receiver.url("/bad")], suspension())
        assert outcomes(audits) == ["delivered", "rejected"]  # a 400 is not retried
        assert not failures and receiver.bad_signatures == 0
        assert len(receiver.requests_to("/bad")) == 1
        assert json.loads(receiver.requests_to("/a")[0].body)["account_id"] == "acct-1"
        delivery = audits[0].source["misuse"]["delivery"]
        assert delivery["attempts"] == 1 and delivery["response_status"] == 200


def test_an_unreachable_or_hanging_endpoint_fails_for_the_dead_letter_topic():
    with Receiver(secrets=[SECRET]) as receiver:
        receiver.script([HANG, HANG], path="/slow")
        audits, failures = deliver([f"http://127.0.0.1:{free_port()}/hook",
                                    receiver.url("/slow")], suspension())
        assert outcomes(audits) == ["failed", "failed"]
        assert [event for event, _ in failures] == ["the-event", "the-event"]
        assert all("msg_1" in reason for _, reason in failures)
        assert all(a.source["misuse"]["delivery"]["attempts"] == 2 for a in audits)


def test_a_receiver_not_configured_is_skipped_without_a_failure():
    audits, failures = deliver([], suspension())
    assert audits == [] and failures == []


def test_a_delivery_that_fails_because_of_configuration_is_a_dead_letter_not_a_crash():
    """A malformed whsec_ secret (the signing raises) and an invalid URL (rejected at once):
    each is audited and reported for the dead-letter topic with its reason, to be replayed
    once the configuration is fixed; nothing is sent with a bad signature."""
    with Receiver(secrets=[SECRET]) as receiver:
        audits, failures = deliver([receiver.url("/a")], suspension(),
                                   secrets=[SecretStr("whsec_not*base64")])
        assert outcomes(audits) == ["failed"] and receiver.requests_to("/a") == []
        assert failures == [("the-event", "delivery msg_1 to suspension failed: "
                                          "configuration: a whsec_ secret is not valid base64")]
        assert audits[0].source["misuse"]["delivery"]["attempts"] == 0

    audits, failures = deliver(["not a url"], suspension())
    assert outcomes(audits) == ["rejected"]
    assert failures == [("the-event", "delivery msg_1 to suspension failed: invalid url")]


def test_no_part_of_a_url_but_its_host_and_path_is_recorded_and_ids_are_hashes():
    """A hook URL with a user, a password, a query token and a fragment: the request goes out,
    but the audit record (document and id, which travel on misuse.documents too) holds none
    of them; two URLs that differ only in their query keep a record each."""
    with Receiver(secrets=[SECRET]) as receiver:
        host = receiver.url("/a").split("//", 1)[1].split("/", 1)[0]
        urls = [f"http://hookuser:pa55word@{host}/a?token=t0ken-one#frag",
                f"http://{host}/a?token=t0ken-two"]
        audits, failures = deliver(urls, suspension())
        assert outcomes(audits) == ["delivered", "delivered"] and not failures
        assert len(receiver.requests_to("/a")) == 2
        recorded = json.dumps([(a.id, a.source) for a in audits])
        for secret in ("hookuser", "pa55word", "t0ken", "frag", "token="):
            assert secret not in recorded
        assert [a.source["misuse"]["delivery"]["endpoint"] for a in audits] == \
            [f"http://{host}/a"] * 2
        assert len({a.id for a in audits}) == 2 and not any(host in a.id for a in audits)


def test_a_token_in_a_hook_path_is_redacted_from_the_record():
    endpoint = endpoint_of("https://hooks.slack.com/services/T0A1B2C3D/B4E5F6G7H/"
                           "abcdEFGHijklMNOPqrstUVWX")
    assert "abcdEFGH" not in endpoint and endpoint.startswith("https://")
