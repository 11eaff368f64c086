"""All configuration, from MISUSE_* environment variables (or a .env file)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MISUSE_", env_file=".env", extra="ignore")

    app_id: str = "misuse-detector"
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_username: str | None = None
    kafka_password: SecretStr | None = None
    # Prepended to every topic name; lets tests and staging share a cluster.
    topic_prefix: str = ""
    topic_partitions: int = 6

    elasticsearch_url: str = "http://127.0.0.1:9200"
    elasticsearch_username: str | None = None
    elasticsearch_password: SecretStr | None = None
    elasticsearch_api_key: SecretStr | None = None
    elasticsearch_ca_certs: Path | None = None
    index_prefix: str = "misuse-"
    index_batch_size: int = 500
    index_batch_seconds: float = 1.0

    policy_file: Path = REPO_ROOT / "ops" / "policy.yaml"
    templates_dir: Path = REPO_ROOT / "ops" / "elasticsearch"
    store: str = "memory://"
    data_dir: Path = REPO_ROOT / ".stack" / "worker"
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    # Events stamped further ahead than this (event time vs. the worker's clock) are rejected.
    max_future_skew_seconds: int = 86_400

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def index(self, name: str) -> str:
        return f"{self.index_prefix}{name}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
