"""Every Kafka client connects with the MISUSE_KAFKA_* settings: kafka-python's (the CLI, the
worker's read-backs) and Faust's (the worker). Proven against a real secured broker in
tests/integration/test_secure_broker.py; here, that both are given the same login."""

from __future__ import annotations

import ssl

import certifi
import faust

from streams.runtime.app import broker_credentials
from streams.runtime.broker import connection_options
from streams.settings import Settings

CA = certifi.where()  # any PEM bundle will do: only the options are checked
SASL_SSL = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
                    kafka_username="misuse-worker", kafka_password="pw", kafka_ssl_cafile=CA)


def test_kafka_python_gets_the_protocol_the_login_and_the_ca() -> None:
    options = connection_options(SASL_SSL)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == \
        ("misuse-worker", "pw")
    assert options["ssl_cafile"] == CA


def test_faust_speaks_sasl_over_tls_when_the_settings_say_sasl_ssl() -> None:
    """Faust takes the protocol from the credentials: without an SSL context, SASL
    credentials would speak SASL_PLAINTEXT to a TLS listener."""
    credentials = broker_credentials(SASL_SSL)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert (credentials.username, credentials.password) == ("misuse-worker", "pw")
    assert isinstance(credentials.ssl_context, ssl.SSLContext)
    assert credentials.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert credentials.ssl_context.check_hostname


def test_faust_without_sasl() -> None:
    tls = broker_credentials(Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=CA))
    assert isinstance(tls, faust.SSLCredentials) and tls.protocol.value == "SSL"
    plain = Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="PLAIN",
                     kafka_username="u", kafka_password="p")
    credentials = broker_credentials(plain)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_PLAINTEXT" and credentials.ssl_context is None
    assert broker_credentials(Settings()) is None
