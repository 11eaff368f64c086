"""The Faust app. Agents register themselves on it when streams.agents is imported."""

from __future__ import annotations

import faust

from streams.settings import Settings, get_settings


def broker_credentials(settings: Settings) -> faust.SASLCredentials | None:
    if settings.kafka_sasl_mechanism is None:
        return None
    password = settings.kafka_password.get_secret_value() if settings.kafka_password else None
    return faust.SASLCredentials(
        username=settings.kafka_username, password=password,
        mechanism=settings.kafka_sasl_mechanism,
    )


def create_app(settings: Settings) -> faust.App:
    return faust.App(
        settings.app_id,
        broker=[f"kafka://{host}" for host in settings.kafka_bootstrap.split(",")],
        broker_credentials=broker_credentials(settings),
        store=settings.store,
        datadir=str(settings.data_dir),
        topic_partitions=settings.topic_partitions,
        # Every stage speaks plain JSON bytes and decodes them itself, so that a bad message is
        # a dead letter with a reason instead of a crash inside the serializer.
        key_serializer="raw",
        value_serializer="raw",
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_in_thread=False,
        consumer_auto_offset_reset="earliest",
        # At-least-once delivery with idempotent sinks: exactly-once mode has open bugs.
        processing_guarantee="at_least_once",
        # Every stage sends about as many messages as it reads, plus state changelogs: batch
        # them (Faust's defaults send each message in a request of its own).
        producer_linger=0.01,
        producer_max_batch_size=512 * 1024,
    )


app = create_app(get_settings())
