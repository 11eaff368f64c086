"""Synchronous Kafka helpers (setup, offsets, lag, reading a topic back): kafka-python, not
Faust; every client logs in with the MISUSE_KAFKA_* settings (`connection_options`), and
aiokafka is asked only why a login was refused (`login_refusal`)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ssl
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    SaslAuthenticationFailedError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
)

from streams.settings import TOPIC_NAMES, Settings


class TopicsMissingError(RuntimeError):
    """Topics the command needs are not in the cluster: run `misuse setup`."""


def connection_options(settings: Settings) -> dict[str, Any]:
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap.split(","),
        "security_protocol": settings.kafka_security_protocol,
        "bootstrap_timeout_ms": int(settings.kafka_bootstrap_timeout_seconds * 1000)}
    if settings.kafka_sasl_mechanism:
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_username
        if settings.kafka_password is not None:
            options["sasl_plain_password"] = settings.kafka_password.get_secret_value()
    if settings.kafka_ssl_cafile is not None:
        options["ssl_cafile"] = str(settings.kafka_ssl_cafile)
    return options


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """For SSL and SASL_SSL: the broker's certificate and host name checked against
    MISUSE_KAFKA_SSL_CAFILE, or the system's CAs without it."""
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    cafile = settings.kafka_ssl_cafile
    return ssl.create_default_context(cafile=str(cafile) if cafile else None)


def tls_failure(exc: object) -> bool:
    """The TLS handshake failed (kafka-python wraps the SSL error in a connection error):
    an untrusted certificate, or a listener that speaks no TLS."""
    return isinstance(exc, ssl.SSLError) or (
        isinstance(exc, KafkaConnectionError) and "Handshake failed" in str(exc))


def login_refusal(settings: Settings) -> Exception | None:
    """Why the first bootstrap server refuses this client's login, if it does: a wrong
    password or user (SaslAuthenticationFailedError), an untrusted certificate (ssl.SSLError);
    None when the login succeeds or the server cannot be reached at all.

    Asked with aiokafka, the worker's own client, on a connection of its own: kafka-python
    drops the broker's answer to a failed login when the broker closes the connection right
    after it (the answer and the close arrive in one read), and retries until its bootstrap
    times out."""
    from aiokafka.conn import create_conn
    from aiokafka.errors import SaslAuthenticationFailed

    host, _, port = settings.kafka_bootstrap.split(",")[0].strip().rpartition(":")
    password = settings.kafka_password.get_secret_value() if settings.kafka_password else None

    async def log_in() -> None:
        connection = await asyncio.wait_for(create_conn(
            host, int(port), security_protocol=settings.kafka_security_protocol,
            ssl_context=tls_context(settings), sasl_mechanism=settings.kafka_sasl_mechanism or
            "PLAIN", sasl_plain_username=settings.kafka_username,
            sasl_plain_password=password), timeout=settings.kafka_bootstrap_timeout_seconds)
        connection.close()

    # A thread of its own: the caller may be running an event loop (the worker's stages).
    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        try:
            thread.submit(asyncio.run, log_in()).result()
        except SaslAuthenticationFailed as exc:
            return SaslAuthenticationFailedError(str(exc))
        except ssl.SSLError as exc:
            return exc
        except Exception:  # unreachable, or anything else: the timeout says it better
            return None
    return None


@contextlib.contextmanager
def _explained_bootstrap(settings: Settings) -> Iterator[None]:
    """A client whose login the broker refused (a wrong password, an untrusted certificate)
    raises why, not kafka-python's `KafkaTimeoutError('Unable to bootstrap ...')`, which would
    read as a broker that is down."""
    try:
        yield
    except KafkaTimeoutError as exc:
        refusal = login_refusal(settings) if settings.kafka_security_protocol != "PLAINTEXT" \
            else None
        if refusal is not None:
            raise refusal from exc
        raise


def admin_client(settings: Settings, **options: Any) -> KafkaAdminClient:
    with _explained_bootstrap(settings):
        return KafkaAdminClient(**connection_options(settings) | options)


def consumer_client(settings: Settings, *topics: str, **options: Any) -> KafkaConsumer:
    with _explained_bootstrap(settings):
        return KafkaConsumer(*topics, **connection_options(settings) | options)


# How long new topics may take to get a leader for every partition: a single KRaft broker on
# two busy cores has taken more than 10 s.
TOPICS_READY_TIMEOUT_MS = 60_000


def create_topics(settings: Settings, changelogs: Mapping[str, int],
                  replication_factor: int = 1) -> list[str]:
    """Create the missing topics; existing ones are left as they are (idempotent). The stage
    tables' `changelogs` (name: partitions, compacted) too, before any worker starts: a stage
    that writes a table whose changelog the broker does not know yet stops the worker
    (PartitionsMismatch)."""
    admin = admin_client(settings)
    try:
        existing = set(admin.list_topics())
        wanted = {settings.topic(name): {"num_partitions": settings.partitions(name),
                                         "configs": settings.topic_configs(name)}
                  for name in TOPIC_NAMES}
        wanted.update({name: {"num_partitions": partitions,
                              "configs": {"cleanup.policy": "compact"}}
                       for name, partitions in changelogs.items()})
        missing = {name: dict(options, replication_factor=replication_factor)
                   for name, options in wanted.items() if name not in existing}
        if missing:
            # Another process may create them between list and create.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(missing)
            # Not create_topics' own wait: its fixed 10 s ran out in CI, the broker busy with
            # the test files running beside it.
            admin.wait_for_topics(list(missing), timeout_ms=TOPICS_READY_TIMEOUT_MS)
        return sorted(missing)
    finally:
        admin.close()


def require_topics(settings: Settings, topics: Iterable[str]) -> None:
    """Fail at once when a topic is missing: a producer would wait a minute for its metadata
    and then time out without naming it."""
    admin = admin_client(settings)
    try:
        # A principal sees only the topics it may describe: one it may not is refused here,
        # by the broker's own error, rather than reported missing.
        missing = sorted(set(topics) - set(admin.list_topics()))
        described = admin.describe_topics(missing) if missing else []
        refused = [found["name"] for found in described
                   if found["error_code"] == TopicAuthorizationFailedError.errno]
    finally:
        admin.close()
    if refused:
        raise TopicAuthorizationFailedError(", ".join(refused))
    if missing:
        raise TopicsMissingError(f"topic(s) missing: {', '.join(missing)}")


def producer(settings: Settings) -> KafkaProducer:
    with _explained_bootstrap(settings):
        return KafkaProducer(**connection_options(settings), linger_ms=20,
                             batch_size=256 * 1024, compression_type=None)


def partition_offsets(settings: Settings, group_id: str, topics: list[str]
                      ) -> dict[TopicPartition, tuple[int, int]]:
    """Per partition of `topics`: (offset committed by `group_id`, 0 if none; end offset)."""
    consumer = consumer_client(settings, group_id=group_id, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for topic in topics
                      for p in (consumer.partitions_for_topic(topic) or ())]
        ends = consumer.end_offsets(partitions)
        return {p: (consumer.committed(p) or 0, ends[p]) for p in partitions}
    finally:
        consumer.close()


def consumer_lag(settings: Settings, group_id: str, topics: list[str]) -> int:
    """Messages in `topics` not yet committed by `group_id` (all of them if it never committed)."""
    return sum(max(0, end - committed)
               for committed, end in partition_offsets(settings, group_id, topics).values())


def group_offsets(settings: Settings, group_id: str, topics: list[str]
                  ) -> dict[str, tuple[int, int]]:
    """Per topic: (messages committed by `group_id`, end offset), summed over partitions."""
    out: dict[str, tuple[int, int]] = {}
    for partition, (committed, end) in partition_offsets(settings, group_id, topics).items():
        before = out.get(partition.topic, (0, 0))
        out[partition.topic] = (before[0] + committed, before[1] + end)
    return out


def read_back(settings: Settings, topic: str, group_id: str, since_ms: int,
              to_end: bool = False) -> Iterator[bytes]:
    """The values of `topic` written since `since_ms` (message time) up to what `group_id` has
    committed: what a stage processed before it stopped, to rebuild its in-memory state from.
    Messages past the committed offset are left to the stage, which reads them again. With
    `to_end`, up to the end instead: everything written (what a stage published before it
    stopped). The partitions are assigned by hand, so reading back neither joins the group
    nor commits."""
    consumer = consumer_client(settings, group_id=group_id, enable_auto_commit=False,
                               max_poll_records=5000, fetch_max_bytes=50 * 1024 * 1024)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        starts = consumer.offsets_for_times(dict.fromkeys(partitions, since_ms))
        ends = consumer.end_offsets(partitions) if to_end else \
            {p: consumer.committed(p) or 0 for p in partitions}
        todo = {p for p in partitions if starts[p] is not None and starts[p].offset < ends[p]}
        if not todo:
            return
        consumer.assign(sorted(todo))
        for partition in todo:
            consumer.seek(partition, starts[partition].offset)
        while todo:
            for partition, records in consumer.poll(timeout_ms=1000).items():
                for record in records:
                    if record.offset < ends[partition]:
                        yield record.value
                if consumer.position(partition) >= ends[partition]:
                    todo.discard(partition)
                    consumer.pause(partition)
    finally:
        consumer.close()
