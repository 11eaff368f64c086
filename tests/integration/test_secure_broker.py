"""Least privilege on a secured broker (`ops/stack up --secure`: SASL/SCRAM-SHA-512 over TLS,
the StandardAuthorizer allowing nothing that ops/kafka-acls.sh does not): a small traffic runs
end to end through a real worker under the worker's ACLs, and each principal is refused what
is not its business, every refusal asserted on the broker's own error.

The broker is the module's own (run folder .stack/secure-test, ports 9392 and 9393), started
and removed by one fixture; Elasticsearch is the shared one, under an index prefix of the run's,
reached over TLS with an API key through tests/integration/es_proxy.py (the integ-test
distribution has no security module), so its clients are tested as against a secured cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import certifi
import pytest
from elasticsearch import Elasticsearch
from kafka import KafkaProducer
from kafka.errors import (
    GroupAuthorizationFailedError,
    KafkaTimeoutError,
    SaslAuthenticationFailedError,
    TopicAuthorizationFailedError,
)
from pydantic import SecretStr

from streams.runtime import clock
from streams.runtime.broker import admin_client, connection_options, consumer_client
from streams.settings import REPO_ROOT, TOPIC_NAMES, Settings
from streams.sinks.elasticsearch import client_options, search_sources
from streams.stages import changelog_topics
from streams.tooling.runner import WorkerProcess, isolated_environment, remove_run
from streams.tooling.simulation import Traffic, preset_options, simulate
from tests.faults.harness import WORKER_ENV
from tests.integration.es_proxy import ApiKeyProxy

pytestmark = pytest.mark.integration

RUN_FOLDER = REPO_ROOT / ".stack" / "secure-test"
# Beside the open stack (9092, 9093), the fault suite's (9192, 9193) and a developer's secured
# one (9292, 9293).
PORTS = {"MISUSE_KAFKA_PORT": "9392", "MISUSE_KAFKA_CONTROLLER_PORT": "9393"}
ADMIN, WORKER, GATEWAY, REVIEW = "admin", "misuse-worker", "api-gateway", "review-service"


@dataclass
class SecuredRun:
    environments: dict[str, dict[str, str]]  # principal -> a child's environment, logged in
    traffic: Traffic
    worker_log: Path
    elasticsearch: ApiKeyProxy
    # Requests the proxy let through and refused while the traffic ran.
    elasticsearch_requests: tuple[int, int] = (0, 0)

    def settings(self, principal: str, **changes: object) -> Settings:
        return settings_of(self.environments[principal]).model_copy(update=changes)

    def cli(self, principal: str, *arguments: str, **variables: str
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "streams.cli", *arguments],
                              env=self.environments[principal] | variables, cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=120)


def settings_of(environment: dict[str, str]) -> Settings:
    return Settings.model_validate({name.removeprefix("MISUSE_").lower(): value
                                    for name, value in environment.items()
                                    if name.startswith("MISUSE_")})


def ops_stack(command: str, environment: dict[str, str]) -> None:
    done = subprocess.run([str(REPO_ROOT / "ops" / "stack"), command, "--secure"],
                          env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"ops/stack {command} --secure: {done.stdout}{done.stderr}"


def login(principal: str) -> dict[str, str]:
    """The MISUSE_KAFKA_* settings ops/stack wrote for a principal."""
    lines = (RUN_FOLDER / "secrets" / f"{principal}.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip())


def small_traffic() -> Traffic:
    """About 600 events: benign accounts, one credential-stuffing attack, one jailbreak
    account (the demo's preset is too large for a test that runs beside others)."""
    options = preset_options("stuffing", 0.05)
    options.update(scenarios=("credential_stuffing", "jailbreak"), jailbreak_accounts=1)
    return simulate(7, clock.now_ms() - 3_600_000, **options)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredRun]:
    work = tmp_path_factory.mktemp("secure")
    _, base = isolated_environment("secure", work)
    base.update(WORKER_ENV)
    # On a secured broker the worker refuses to start without a key of its own.
    base.update(MISUSE_INTERNAL_KEY=os.urandom(32).hex())
    stack = base | PORTS | {"MISUSE_STACK_DIR": str(RUN_FOLDER)}
    shutil.rmtree(RUN_FOLDER, ignore_errors=True)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, RUN_FOLDER, ignore_errors=True)
        cleanup.callback(ops_stack, "down", stack)
        ops_stack("up", stack)  # applies ops/kafka-acls.sh for this run's prefix and app id
        # Elasticsearch over TLS with an API key, the broker's key pair serving 127.0.0.1.
        secrets = RUN_FOLDER / "secrets"
        api_key = os.urandom(16).hex()
        proxy = cleanup.enter_context(ApiKeyProxy(
            settings_of(base).elasticsearch_url, api_key, secrets / "broker.crt",
            secrets / "broker.key"))
        base.update(MISUSE_ELASTICSEARCH_URL=proxy.url, MISUSE_ELASTICSEARCH_API_KEY=api_key,
                    MISUSE_ELASTICSEARCH_CA_CERTS=str(secrets / "ca.crt"))
        run = SecuredRun({who: base | login(who) for who in (ADMIN, WORKER, GATEWAY, REVIEW)},
                         small_traffic(), work / "worker.log", proxy)
        # Its indices and templates in the shared Elasticsearch, its topics (the broker
        # goes whole, but a failed `down` would leave them to the next run).
        cleanup.callback(remove_run, run.settings(ADMIN))
        # Topics and templates as the administrator; the usage events by the CLI as the
        # gateway; then the worker, as itself, reads them all.
        setup = run.cli(ADMIN, "setup")
        assert setup.returncode == 0, setup.stdout + setup.stderr
        events = work / "events.jsonl"
        events.write_text("".join(json.dumps(event) + "\n" for event in run.traffic.events))
        produced = run.cli(GATEWAY, "produce", str(events))
        assert produced.returncode == 0, produced.stdout + produced.stderr
        worker = WorkerProcess(run.settings(WORKER), run.worker_log, run.environments[WORKER])
        worker.start()
        try:
            worker.wait_drained(timeout_s=120)
        finally:
            worker.stop()
        run.elasticsearch_requests = (proxy.accepted, proxy.refused)
        yield run


def broker_log() -> str:
    return (RUN_FOLDER / "kafka" / "logs" / "server.log").read_text(errors="replace")


def broker_log_shows(check: Callable[[str], bool], timeout_s: float = 15.0) -> bool:
    """Whether the broker's log passes `check` within `timeout_s`: the broker may write a
    refusal after the client has seen it (once, under load, after the test had looked)."""
    deadline = time.monotonic() + timeout_s
    while not check(broker_log()):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


def broker_logged(*texts: str) -> bool:
    return broker_log_shows(lambda log: all(text in log for text in texts))


def test_a_small_traffic_runs_end_to_end_under_the_workers_acls(secured: SecuredRun) -> None:
    """Faust (aiokafka) and the worker's kafka-python clients log in as misuse-worker; the
    attack and the jailbreak of the traffic are alerted, and the broker denied the worker
    nothing on the way."""
    settings = secured.settings(WORKER)
    es = Elasticsearch(**client_options(settings))
    es.indices.refresh(index=f"{settings.index_prefix}*", ignore_unavailable=True)
    alerts = search_sources(es, settings, "alerts")
    # Setup, the worker's start and its writes all went over TLS with the API key.
    accepted, refused = secured.elasticsearch_requests
    assert accepted > 0 and refused == 0
    found = {(alert["rule"]["id"].split(".")[0], alert["misuse"]["entity"]["id"])
             for alert in alerts}
    expected = {(label.rule, label.entity_id) for label in secured.traffic.labels}
    assert {rule for rule, _ in expected} == {"credential_stuffing", "jailbreak"}
    missed = {(rule, entity) for rule, entity in expected
              if not any(r.startswith(rule) and e == entity for r, e in found)}
    assert not missed, f"not alerted: {missed}; alerts: {sorted(found)}"
    assert f"Principal = User:{WORKER} is Denied" not in broker_log()


def test_the_gateway_writes_usage_events_and_nothing_else(secured: SecuredRun) -> None:
    """Not analyst decisions, not any internal topic, not any changelog: each send is refused
    with the broker's TOPIC_AUTHORIZATION_FAILED."""
    settings = secured.settings(GATEWAY)
    forbidden = [settings.topic(name) for name in TOPIC_NAMES if name != "api.usage"]
    forbidden += list(changelog_topics(settings))
    producer = KafkaProducer(**connection_options(settings), max_block_ms=10_000)
    try:
        producer.send(settings.topic("api.usage"), b"{}").get(timeout=30)  # allowed
        for topic in forbidden:
            with pytest.raises(TopicAuthorizationFailedError):
                producer.send(topic, b"forged").get(timeout=30)
    finally:
        producer.close()
    assert broker_logged(*(f"Principal = User:{GATEWAY} is Denied operation = DESCRIBE from "
                           f"host = 127.0.0.1 on resource = Topic:LITERAL:{topic}"
                           for topic in forbidden))
    # The CLI says so in one line, naming the topic and the fix.
    refused = secured.cli(GATEWAY, "produce", str(secured.worker_log.parent / "events.jsonl"),
                          "--topic", settings.topic("misuse.signals"))
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()]
    assert "denied api-gateway access (" in refused.stderr
    assert "TopicAuthorizationFailedError" in refused.stderr
    assert settings.topic("misuse.signals") in refused.stderr


def test_the_worker_cannot_write_analyst_decisions(secured: SecuredRun) -> None:
    """It reads misuse.feedback; the deny in ops/kafka-acls.sh beats its prefixed allow."""
    settings = secured.settings(WORKER)
    producer = KafkaProducer(**connection_options(settings), max_block_ms=10_000)
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            producer.send(settings.topic("misuse.feedback"), b"forged").get(timeout=30)
    finally:
        producer.close()


def test_the_review_service_writes_decisions_but_cannot_read_usage(
        secured: SecuredRun) -> None:
    settings = secured.settings(REVIEW)
    producer = KafkaProducer(**connection_options(settings), max_block_ms=10_000)
    try:
        producer.send(settings.topic("misuse.feedback"), b"{}").get(timeout=30)  # allowed
    finally:
        producer.close()
    usage = settings.topic("api.usage")
    admin = admin_client(settings)
    try:
        [described] = admin.describe_topics([usage])
    finally:
        admin.close()
    assert described["error_code"] == TopicAuthorizationFailedError.errno
    # A consumer needs a group to read with, and it has none.
    consumer = consumer_client(settings, group_id=REVIEW, enable_auto_commit=False)
    try:
        consumer.subscribe([usage])
        with pytest.raises(GroupAuthorizationFailedError):
            consumer.poll(timeout_ms=10_000)
    finally:
        consumer.close()
    assert broker_logged(f"Principal = User:{REVIEW} is Denied operation = DESCRIBE from host "
                         f"= 127.0.0.1 on resource = Topic:LITERAL:{usage}")


def test_a_client_without_credentials_or_with_a_wrong_password_is_refused(
        secured: SecuredRun) -> None:
    gateway = secured.settings(GATEWAY, kafka_bootstrap_timeout_seconds=2)
    wrong = gateway.model_copy(update={"kafka_password": SecretStr("not-the-password")})
    with pytest.raises(SaslAuthenticationFailedError):
        admin_client(wrong)
    unknown = gateway.model_copy(update={"kafka_username": "mallory"})
    with pytest.raises(SaslAuthenticationFailedError):
        admin_client(unknown)
    # TLS but no SASL login: the broker drops the connection and logs why.
    before = broker_log().count("during SASL handshake")
    anonymous = gateway.model_copy(update={"kafka_security_protocol": "SSL",
                                           "kafka_sasl_mechanism": None})
    with pytest.raises(KafkaTimeoutError):
        admin_client(anonymous)
    assert broker_logged("Failed authentication with /127.0.0.1 (channelId=127.0.0.1:9392-",
                         "invalid credentials with SASL mechanism SCRAM-SHA-512")
    assert broker_log_shows(lambda log: log.count(
        "Unexpected Kafka request of type METADATA during SASL handshake") > before)


def test_the_worker_with_a_wrong_password_stops_at_start_with_one_line(
        secured: SecuredRun) -> None:
    done = secured.cli(WORKER, "worker", MISUSE_KAFKA_PASSWORD="not-the-password",
                       MISUSE_KAFKA_BOOTSTRAP_TIMEOUT_SECONDS="3")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines == [
        "error: Kafka at 127.0.0.1:9392 refused the credentials (SaslAuthenticationFailedError):"
        " set MISUSE_KAFKA_USERNAME, MISUSE_KAFKA_PASSWORD and MISUSE_KAFKA_SASL_MECHANISM"]
    assert "not-the-password" not in done.stdout + done.stderr
    assert broker_logged("invalid credentials with SASL mechanism SCRAM-SHA-512")


def test_the_controller_port_refuses_a_client_without_the_brokers_certificate(
        secured: SecuredRun) -> None:
    """The controller listener takes TLS client certificates only: a client that trusts the
    CA but has no certificate of the CA's is refused there, SASL login or not."""
    context = ssl.create_default_context(cafile=str(RUN_FOLDER / "secrets" / "ca.crt"))
    port = int(PORTS["MISUSE_KAFKA_CONTROLLER_PORT"])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls, \
            pytest.raises(ssl.SSLError, match="CERTIFICATE"):
        tls.sendall(b"\0\0\0\0")  # TLS 1.3: the refusal comes with the first read
        tls.recv(1)
    assert broker_logged(f"Failed authentication with /127.0.0.1 (channelId=127.0.0.1:{port}-")


def test_elasticsearch_refuses_a_wrong_api_key_and_an_untrusted_certificate(
        secured: SecuredRun) -> None:
    """The CLI's one line for each, through the TLS endpoint that checks the key."""
    before = secured.elasticsearch.refused
    wrong_key = secured.cli(ADMIN, "setup", MISUSE_ELASTICSEARCH_API_KEY="not-the-key")
    assert wrong_key.returncode == 1
    assert wrong_key.stderr.strip().splitlines() == [
        f"error: Elasticsearch at {secured.elasticsearch.url} refused the credentials (401): "
        "set MISUSE_ELASTICSEARCH_API_KEY, or MISUSE_ELASTICSEARCH_USERNAME and _PASSWORD"]
    assert "not-the-key" not in wrong_key.stdout + wrong_key.stderr
    assert secured.elasticsearch.refused > before  # the endpoint's 401, not a guess
    untrusted = secured.cli(ADMIN, "setup", MISUSE_ELASTICSEARCH_CA_CERTS=certifi.where())
    assert untrusted.returncode == 1
    [line] = untrusted.stderr.strip().splitlines()
    assert line.startswith(f"error: Elasticsearch at {secured.elasticsearch.url}: TLS failed")
    assert "CERTIFICATE_VERIFY_FAILED" in line and "MISUSE_ELASTICSEARCH_CA_CERTS" in line


def test_a_rotated_scram_password_replaces_the_old_one(secured: SecuredRun) -> None:
    """The README's rotation, with the run folder's kafka-configs.sh: the new password logs
    in, the old one is refused from then on. (Last in the file: it changes the review
    service's login.)"""
    old = secured.settings(REVIEW, kafka_bootstrap_timeout_seconds=3)
    new_password = "rotated-" + os.urandom(12).hex()
    rotated = subprocess.run(
        [str(RUN_FOLDER / "bin" / "kafka-configs.sh"), "--bootstrap-server", old.kafka_bootstrap,
         "--command-config", str(RUN_FOLDER / "secrets" / f"{ADMIN}.properties"), "--alter",
         "--entity-type", "users", "--entity-name", REVIEW,
         "--add-config", f"SCRAM-SHA-512=[password={new_password}]"],
        capture_output=True, text=True, timeout=120)
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    admin_client(old.model_copy(update={"kafka_password": SecretStr(new_password)})).close()
    with pytest.raises(SaslAuthenticationFailedError):
        admin_client(old)

