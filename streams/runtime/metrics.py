"""The worker's Prometheus metrics, in one registry served at `/metrics` on the Faust web port.

The names are a contract with the alert rules (ops/prometheus/misuse-rules.yml; the table is in
ops/prometheus/README.md): rename one there too. Labels hold only short, bounded classes (stage,
logical topic, partition, reason class, path, kind, outcome), never an account, key, IP or free
text: every distinct label value is a time series kept forever by Prometheus.
"""

from __future__ import annotations

import logging
import re

from faust.types import AppT
from faust.web import Request, Response, View
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from streams.runtime.faust_wall import App
from streams.settings import CONSUMED_TOPICS, Settings

log = logging.getLogger(__name__)

# The classic text format, which every Prometheus (2.x and 3.x) and agent reads;
# prometheus_client's "latest" (1.0.0, for UTF-8 names) gains nothing for names like ours.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# No `_created` series beside every counter and histogram: nothing reads them, and they
# double the series count (the switch is process-wide; the worker is the only user).
disable_created_metrics()
# A registry of our own: the default one would add the client's process and GC collectors
# and anything else a library registers there, none of which the rules were written for.
REGISTRY = CollectorRegistry(auto_describe=True)

stage_events_in = Counter(
    "misuse_stage_events_in_total", "Kafka messages a stage (or sink) read",
    ["stage"], registry=REGISTRY)
stage_events_out = Counter(
    "misuse_stage_events_out_total", "Kafka messages a stage (or sink) sent, by logical topic",
    ["stage", "topic"], registry=REGISTRY)
deadletters = Counter(
    "misuse_deadletters_total", "Messages sent to misuse.deadletter, by reason class",
    ["stage", "reason"], registry=REGISTRY)
stage_batch_duration = Histogram(
    "misuse_stage_batch_duration_seconds", "Time to process one batch, sends included",
    ["stage"], registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
event_to_alert_latency = Histogram(
    "misuse_event_to_alert_latency_seconds",
    "Wall clock when an alert is written to Elasticsearch minus the event time that fired it",
    registry=REGISTRY,
    # A replay of old events lands in +Inf: its event times are hours or days back.
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600))
worker_ready = Gauge(
    "misuse_worker_ready", "1 once the worker is up, its tables recovered (Faust's Ready)",
    registry=REGISTRY)
worker_crashes = Counter(
    "misuse_worker_crashes_total",
    "Services of the worker that crashed (restart the worker), by logger", ["service"],
    registry=REGISTRY)
consumer_lag = Gauge(
    "misuse_consumer_lag", "Messages behind the end of an assigned partition",
    ["topic", "partition"], registry=REGISTRY)
input_held = Gauge(
    "misuse_input_held_records",
    "Records read and held until the watermark passes them (event-time order)", ["stage"],
    registry=REGISTRY)
stage_pending_records = Gauge(
    "misuse_stage_pending_records",
    "Records taken in whose outcome a stage has not sent yet (points awaiting judging)",
    ["stage"], registry=REGISTRY)
input_paused_partitions = Gauge(
    "misuse_input_paused_partitions",
    "Input partitions paused for running ahead in event time", ["stage"], registry=REGISTRY)
embedding_path = Counter(
    "misuse_embedding_path_total", "Prompts by how they got their vector",
    ["path"], registry=REGISTRY)
campaign_points_skipped = Counter(
    "misuse_campaign_points_skipped_total",
    "Prompts not sent to the campaign stage, by why (a claim quoted to be checked)",
    ["reason"], registry=REGISTRY)
embedding_pending_prompts = Gauge(
    "misuse_embedding_pending_prompts",
    "Prompts of the current embedding batch waiting for the full model", registry=REGISTRY)
elasticsearch_bulk_failures = Counter(
    "misuse_elasticsearch_bulk_failures_total",
    "Bulk requests that failed as a whole or in part (retried)", registry=REGISTRY)
elasticsearch_retries = Counter(
    "misuse_elasticsearch_retries_total", "Retries of bulk requests", registry=REGISTRY)
state_unreadable = Counter(
    "misuse_state_unreadable_total",
    "State records that could not be read and were skipped (the entity starts afresh): "
    "a changelog record with an undecodable key at recovery, or a stored value the state "
    "codec refuses", ["table"], registry=REGISTRY)
webhook_deliveries = Counter(
    "misuse_webhook_deliveries_total", "Deliveries to a receiver's endpoint, by outcome",
    ["kind", "outcome"], registry=REGISTRY)

# The planner's plan kinds (detectors/embedding.py) as the metric's path names.
EMBEDDING_PATHS = {"exact": "exact", "near": "near_duplicate", "static": "static",
                   "full": "full_model"}

# First match wins: the specific causes come before the generic ones they may be wrapped in
# ("stage score_risk failed on a feedback record: ValueError('unverified analyst decision…')").
_REASON_CLASSES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern, re.IGNORECASE)) for name, pattern in (
        ("unverified_decision", r"unverified analyst decision"),
        # A batch on an internal topic that no key of the worker's sealed (forged, or written
        # before the worker sealed it: an upgrade), whichever stage or sink read it.
        ("unverified_record", r"unverified \S+ batch"),
        ("delivery_failed", r"^delivery \S+ to \S+ failed"),
        ("unknown_version", r"unknown wire version"),
        ("too_large", r"over the \d+ (byte|character) limit|bytes is over"),
        # An internal topic's message that is not our msgpack envelope (a stray producer).
        ("malformed_batch", r"not a msgpack batch|not a batch|a batch has a value"),
        ("malformed_json", r"not valid json|not valid utf-8|must be a json object|nested more "
                           r"than|utf-16 surrogate|not a json number|does not fit 64 bits|empty "
                           r"message"),
        ("rejected_document", r"elasticsearch refused"),
        ("schema", r"missing required field|field '|unknown field|expected \S+ records|"
                   r"unknown index|a vector (is|has)|^\w+: "),
        ("stage_error", r"^stage \S+ (failed on|could not decode)"),
    ))


def reason_class(reason: str) -> str:
    """A dead letter's readable reason as one of a few classes, for the `reason` label (the
    reason itself, with its field names and values, stays in the dead letter's header)."""
    for name, pattern in _REASON_CLASSES:
        if pattern.search(reason):
            return name
    return "other"


def logical_topic(settings: Settings, topic: str) -> str:
    """A topic's logical name ("misuse.alerts"): the prefix is per deployment (or per test
    run), and would make a new series for every run."""
    return topic.removeprefix(settings.topic_prefix)


def register_metrics_page(app: AppT) -> None:
    """`GET /metrics` on the worker's web server, in the Prometheus text format."""

    class MetricsView(View):
        async def get(self, request: Request) -> Response:
            # aiohttp refuses a charset in `content_type`; the header carries it as is.
            return self.bytes(generate_latest(REGISTRY),
                              headers={"Content-Type": CONTENT_TYPE})

    app.page("/metrics", name="metrics")(MetricsView)


def register_lag_timer(app: App, settings: Settings, interval_s: float = 5.0) -> None:
    """`misuse_consumer_lag` for the partitions of the stages' input topics this worker owns,
    every `interval_s`: the end offset minus the consumer's position. A partition revoked by a
    rebalance loses its series here; its new owner reports it."""
    inputs = {settings.topic(name) for name in CONSUMED_TOPICS}
    reported: set[tuple[str, str]] = set()

    async def measure_consumer_lag() -> None:
        assigned = [tp for tp in app.consumer.assignment() if tp.topic in inputs]
        now: set[tuple[str, str]] = set()
        if assigned:
            try:
                ends = await app.consumer.highwaters(*assigned)
                positions = await app.wall_consumer.positions(*assigned)
            except Exception as exc:  # a gauge is not worth the worker: a timer's error
                log.debug("consumer_lag_unknown error=%r", exc)  # crashes the app
                return
            for tp in assigned:
                position = positions.get(tp)
                if position is None or tp not in ends:
                    continue
                labels = (logical_topic(settings, tp.topic), str(tp.partition))
                consumer_lag.labels(*labels).set(max(0, ends[tp] - position))
                now.add(labels)
        for labels in reported - now:
            consumer_lag.remove(*labels)
        reported.clear()
        reported.update(now)

    app.timer(interval_s, name="measure_consumer_lag")(measure_consumer_lag)
