"""The one-line error for each failure the CLI foresees: what, where, and the fix."""

import pytest
from elastic_transport import ApiResponseMeta, ConnectionError, HttpHeaders, NodeConfig
from elasticsearch import AuthenticationException, AuthorizationException
from kafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    SaslAuthenticationFailedError,
    TopicAuthorizationFailedError,
)

from detectors.jailbreak import PatternBankError
from detectors.policy import PolicyError
from streams.embedding.model import ModelLoadError
from streams.runtime.broker import TopicsMissingError
from streams.settings import Settings
from streams.sinks.elasticsearch import TemplatesMissingError
from streams.tooling.errors import one_line
from streams.tooling.runner import WorkerError

SETTINGS = Settings(kafka_bootstrap="kafka.example:9093",
                    elasticsearch_url="https://elastic:secret@es.example:9243")


def api_error(kind: type, status: int) -> Exception:
    meta = ApiResponseMeta(status=status, http_version="1.1", headers=HttpHeaders(),
                           duration=0.0, node=NodeConfig("https", "es.example", 9243))
    return kind("denied", meta, {})


@pytest.mark.parametrize(("exc", "parts"), [
    (KafkaTimeoutError("Unable to bootstrap from ['kafka.example:9093']"),
     ["Kafka is not reachable at kafka.example:9093", "make up", "MISUSE_KAFKA_BOOTSTRAP"]),
    (KafkaTimeoutError("Failed to update metadata after 60.0 secs."),
     ["kafka.example:9093", "misuse setup"]),
    (SaslAuthenticationFailedError("bad password"),
     ["kafka.example:9093", "MISUSE_KAFKA_USERNAME"]),
    (TopicAuthorizationFailedError("t.misuse.signals"),
     ["kafka.example:9093", "t.misuse.signals", "ops/kafka-acls.sh"]),
    (KafkaConnectionError("Handshake failed: [SSL: CERTIFICATE_VERIFY_FAILED] certificate "
                          "verify failed"),
     ["kafka.example:9093", "CERTIFICATE_VERIFY_FAILED", "MISUSE_KAFKA_SSL_CAFILE"]),
    (ConnectionError("Connection refused"),
     ["Elasticsearch is not reachable at https://es.example:9243", "make up",
      "MISUSE_ELASTICSEARCH_URL"]),
    (api_error(AuthenticationException, 401), ["es.example:9243", "MISUSE_ELASTICSEARCH_API_KEY"]),
    (api_error(AuthorizationException, 403), ["es.example:9243", "privileges"]),
    (TemplatesMissingError("index template 'misuse-alerts' is missing in "
                           "https://es.example:9243: run `misuse setup` first"),
     ["es.example:9243", "misuse setup"]),
    (TopicsMissingError("topic(s) missing: api.usage"),
     ["api.usage", "kafka.example:9093", "misuse setup"]),
    (PolicyError("rules.x: unknown field\nsecond line"), ["policy", "MISUSE_POLICY_FILE"]),
    (PatternBankError("'patterns' must be a non-empty list"),
     ["jailbreak-patterns.yaml", "MISUSE_JAILBREAK_PATTERNS_FILE"]),
    (ModelLoadError("cannot load the embedding model 'x' offline: no such local folder"),
     ["'x'", "MISUSE_EMBEDDING_MODEL"]),
    (PermissionError(13, "Permission denied", "/data/events.jsonl"),
     ["/data/events.jsonl", "Permission denied", "permissions"]),
    (WorkerError("an agent crashed:\nline 1\nline 2", __import__("pathlib").Path("/l/w.log")),
     ["an agent crashed", "/l/w.log"]),
])
def test_each_foreseen_failure_is_one_line_with_where_and_the_fix(exc, parts) -> None:
    line = one_line(exc, SETTINGS)
    assert line is not None and "\n" not in line
    for part in parts:
        assert part in line
    assert "secret" not in line  # the URL's password is never printed


def test_an_unforeseen_failure_is_left_to_the_caller() -> None:
    assert one_line(RuntimeError("boom"), SETTINGS) is None
