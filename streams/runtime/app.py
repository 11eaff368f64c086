"""The Faust app, built from settings. `streams.stages.build_app` registers every stage on it;
importing a module starts nothing. The app's class, and every other hook into Faust's
internals, is in `streams/runtime/faust_wall.py`."""

from __future__ import annotations

import faust

from streams.runtime.broker import tls_context
from streams.runtime.faust_wall import App
from streams.settings import Settings


def broker_credentials(settings: Settings
                       ) -> faust.SASLCredentials | faust.SSLCredentials | None:
    """The worker's login to Kafka, as the CLI's (`streams.runtime.broker.connection_options`).
    Faust takes the security protocol from the credentials, not from a setting: SASL
    credentials without an SSL context would speak SASL_PLAINTEXT to a SASL_SSL listener."""
    context = tls_context(settings)
    if settings.kafka_sasl_mechanism is None:
        return faust.SSLCredentials(context) if context is not None else None
    password = settings.kafka_password.get_secret_value() if settings.kafka_password else None
    return faust.SASLCredentials(
        username=settings.kafka_username, password=password, ssl_context=context,
        mechanism=settings.kafka_sasl_mechanism,
    )


def create_app(settings: Settings) -> App:
    return App(
        settings.app_id,
        broker=[f"kafka://{host}" for host in settings.kafka_bootstrap.split(",")],
        broker_credentials=broker_credentials(settings),
        store=settings.store,
        datadir=str(settings.data_dir),
        topic_partitions=settings.topic_partitions,
        # Every stage reads and writes bytes and decodes them itself (JSON usage events on
        # api.usage, msgpack batches of typed records between stages:
        # `streams/runtime/messages.py`), so that a bad message is a dead letter with a reason
        # instead of a crash inside the serializer.
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
        # Small fetches and a short queue, so that pausing the input partitions that run
        # ahead in event time takes effect within seconds of event time (`streams/alignment`):
        # with a megabyte per partition per fetch and 4,096 records queued, ingest read a
        # backlog half an hour of event time apart between partitions. A message larger than
        # the fetch size is still returned whole.
        consumer_max_fetch_size=16 * 1024,
        stream_buffer_maxsize=200,
    )


