import importlib
import logging
import types
from collections.abc import Iterator

import pytest
from aiokafka.errors import (
    MessageSizeTooLargeError,
    NodeNotReadyError,
    NotLeaderForPartitionError,
)
from elastic_transport import ConnectionError as TransportConnectionError

from streams.logs import EXPECTED, OutageFilter, install_outage_filter
from streams.runtime.outage import Outage, Outages


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_outage_is_one_warning_a_summary_a_minute_and_one_info() -> None:
    outage = Outage("kafka", summary_every_s=60.0, quiet_s=15.0)
    began = outage.failed(0.0, "connect", "Connect call failed")
    assert began is not None and began.level == logging.WARNING
    assert began.message == "kafka_unreachable first=connect error='Connect call failed'"
    lines = [outage.failed(t / 10, "metadata") for t in range(1, 1300)]  # 130 s of failures
    assert lines == [None] * len(lines)
    assert outage.tick(59.0) is None
    summary = outage.tick(60.0)
    assert summary is not None and summary.level == logging.WARNING
    assert summary.message.startswith("kafka_still_unreachable for=60s failures=metadata:1299,"
                                      "connect:1")
    assert outage.tick(100.0) is None  # the next one a minute after
    assert outage.tick(120.5) is not None
    ended = outage.recovered(131.0)
    assert ended is not None and ended.level == logging.INFO
    assert ended.message == ("kafka_reachable down_for=131s failures=metadata:1299,connect:1 "
                             "seen=request")
    assert outage.recovered(132.0) is None and outage.tick(200.0) is None
    assert outage.failed(300.0, "connect") is not None  # the next outage is a new one


def test_an_outage_nobody_reports_the_end_of_ends_after_a_quiet_stretch() -> None:
    outage = Outage("kafka", quiet_s=15.0)
    outage.failed(0.0, "connect")
    outage.failed(55.0, "fetch")
    assert outage.tick(60.0) is not None  # the summary
    assert outage.tick(69.0) is None
    ended = outage.tick(70.0)
    assert ended is not None and ended.message == (
        "kafka_reachable down_for=55s failures=connect:1,fetch:1 seen=no_failure_for_15s")
    assert not outage.ongoing


def test_what_is_held_back_is_in_the_first_line_and_the_summaries() -> None:
    outage = Outage("elasticsearch", "documents", quiet_s=300.0)
    began = outage.failed(0.0, "bulk", "Connection refused", held=12)
    assert began is not None and began.message.endswith(" held_documents=12")
    outage.failed(30.0, "bulk", held=40)
    summary = outage.tick(60.0)
    assert summary is not None and summary.message == (
        "elasticsearch_still_unreachable for=60s failures=bulk:2 held_documents=40")


def test_outages_log_through_their_logger(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    outages = Outages(clock, logging.getLogger("test.outage"))
    with caplog.at_level(logging.INFO, logger="test.outage"):
        outages.failed("elasticsearch", "bulk", "refused", held=3)
        clock.now += 10
        outages.failed("elasticsearch", "bulk", "refused", held=3)
        outages.tick()
        outages.recovered("elasticsearch")
        outages.recovered("kafka")  # no outage: nothing to say
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "elasticsearch_unreachable first=bulk error='refused' held_documents=3"),
        ("INFO", "elasticsearch_reachable down_for=10s failures=bulk:2 seen=request")]


def record(name: str, level: int, msg: str, *args: object,
           exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, None) if exc is not None else None
    return logging.LogRecord(name, level, "client.py", 1, msg, args, exc_info)


def connect_failed() -> logging.LogRecord:
    return record("aiokafka", logging.ERROR, "Unable connect to node with id %s: %s", 1,
                  ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 9092)"))


NOT_READY = NodeNotReadyError("Attempt to send a request to node which is not ready (node id 1).")


def test_the_broker_outage_of_the_fault_suite_is_two_lines(
        caplog: pytest.LogCaptureFixture) -> None:
    """The templates and counts of a 55 s broker outage's worker log (fault suite, broker
    down): 4,847 ERROR and 1,679 WARNING lines, all from aiokafka's loggers and mode's timers."""
    clock = Clock()
    outages = Outages(clock, logging.getLogger("test.outage"))
    folded = OutageFilter(outages)
    coordinator = "aiokafka.consumer.group_coordinator"
    storm = [
        (2819, connect_failed()),
        (1186, record("aiokafka", logging.ERROR, "Unable to update metadata from %s", [1])),
        (412, record("aiokafka.producer.sender", logging.WARNING,
                     "Got error produce response: %s", NOT_READY)),
        (405, record(coordinator, logging.ERROR, "Group Coordinator Request failed: %s",
                     NOT_READY)),
        (402, record("aiokafka.consumer.fetcher", logging.ERROR,
                     "Failed fetch messages from %s: %s", 1, NOT_READY)),
        (1193, record("aiokafka.producer.sender", logging.WARNING,
                      "Got error produce response on topic-partition %s, retrying. Error: %s",
                      "TopicPartition(topic='x', partition=0)", NotLeaderForPartitionError)),
        (37, record(coordinator, logging.WARNING,
                    "Marking the coordinator dead (node %s)for group %s.", 1, "g")),
        (33, record(coordinator, logging.WARNING, "Heartbeat failed for group %s: coordinator "
                    "(node %s) is either not started or not valid", "g", 1)),
        (33, record(coordinator, logging.ERROR,
                    "Heartbeat session expired - marking coordinator dead")),
        (1, record(coordinator, logging.ERROR, "Heartbeat send request failed: %s. Will retry.",
                   NOT_READY)),
        (1, record(coordinator, logging.ERROR,
                   "Error sending %s to node %s [%s] -- marking coordinator dead",
                   "HeartbeatRequest", 1, NOT_READY)),
        (4, record("mode.timers", logging.WARNING,
                   "Timer %s is overlapping (interval=%r runtime=%r)", "commit", 2.8, 5.1)),
    ]
    passed = 0
    with caplog.at_level(logging.INFO, logger="test.outage"):
        for count, rec in storm:
            for _ in range(count):
                clock.now += 55 / 6526
                passed += folded.filter(rec)
                outages.tick()
        clock.now += 15
        outages.tick()
    assert passed == 0
    assert [r.getMessage()[:46] for r in caplog.records] == [
        "kafka_unreachable first=connect error=\"Unable ",
        "kafka_reachable down_for=55s failures=connect:"]
    assert not outages.services["kafka"].ongoing


def test_the_transport_retries_of_an_elasticsearch_outage_lose_their_tracebacks(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    outages = Outages(clock, logging.getLogger("test.outage"))
    transport = logging.getLogger("elastic_transport.transport")
    folded = OutageFilter(outages)
    transport.addFilter(folded)
    refused = TransportConnectionError("Connection error caused by: ClientConnectorError("
                                       "Cannot connect to host 127.0.0.1:9200)")
    try:
        with caplog.at_level(logging.INFO):
            for attempt in range(3):
                transport.warning("Retrying request after failure (attempt %d of %d)", attempt, 3,
                                  exc_info=refused)
            # Another error than "cannot reach" is not an outage: it keeps its traceback.
            transport.warning("Retrying request after failure (attempt %d of %d)", 0, 3,
                              exc_info=ValueError("bad body"))
            # The request lines, filled in before they are logged: folded during the outage.
            transport.info("PUT http://127.0.0.1:9200/_bulk [status:N/A duration:0.001s]")
            transport.info("PUT http://127.0.0.1:9200/_bulk [status:200 duration:0.004s]")
    finally:
        transport.removeFilter(folded)
    assert [(r.name, r.levelname, r.exc_info is not None) for r in caplog.records] == [
        ("test.outage", "WARNING", False), ("elastic_transport.transport", "WARNING", True),
        ("elastic_transport.transport", "INFO", False)]
    assert caplog.records[-1].getMessage().endswith("[status:200 duration:0.004s]")
    assert caplog.records[0].getMessage().startswith("elasticsearch_unreachable first=request ")
    assert outages.services["elasticsearch"].failures == {"request": 3, "request_line": 1}


def test_unexpected_errors_and_consequences_without_an_outage_are_logged() -> None:
    outages = Outages(Clock(), logging.getLogger("test.outage"))
    folded = OutageFilter(outages)
    too_large = record("aiokafka.producer.sender", logging.WARNING,
                       "Got error produce response: %s", MessageSizeTooLargeError())
    assert folded.filter(too_large)
    assert folded.filter(record("aiokafka", logging.ERROR, "Something else: %s", NOT_READY))
    assert folded.filter(record("aiokafka.other", logging.ERROR,
                                "Unable to update metadata from %s", [1]))
    # Without an outage a lost coordinator or a slow timer is news; within one, it is not.
    overlap = record("mode.timers", logging.WARNING,
                     "Timer %s is overlapping (interval=%r runtime=%r)", "commit", 2.8, 5.1)
    assert folded.filter(overlap)
    assert not folded.filter(connect_failed())
    assert not folded.filter(overlap)
    assert folded.filter(too_large)  # still logged during the outage
    assert outages.services["kafka"].failures == {"connect": 1, "timer_overlap": 1}


def test_installed_on_every_client_logger_once() -> None:
    names = {e.logger for e in EXPECTED}
    try:
        install_outage_filter()
        install_outage_filter()
        for name in names:
            assert sum(isinstance(f, OutageFilter)
                       for f in logging.getLogger(name).filters) == 1
    finally:
        for name in names:
            logger = logging.getLogger(name)
            for f in [f for f in logger.filters if isinstance(f, OutageFilter)]:
                logger.removeFilter(f)


# Where each logger's records are written: the template must still be one of its constants.
_MODULES = {"aiokafka": "aiokafka.client",
            "elastic_transport.transport": "elastic_transport._async_transport",
            "elastic_transport.node_pool": "elastic_transport._node_pool"}


def _constants(code: types.CodeType) -> Iterator[object]:
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _constants(const)
        else:
            yield const


@pytest.mark.parametrize("expected", EXPECTED, ids=lambda e: f"{e.logger}:{e.template[:30]}")
def test_each_folded_template_is_still_logged_by_the_installed_client(expected) -> None:
    module = importlib.import_module(_MODULES.get(expected.logger, expected.logger))
    assert logging.getLogger(expected.logger).name == expected.logger
    with open(module.__file__, encoding="utf-8") as file:
        source = compile(file.read(), module.__file__, "exec")
    assert expected.template in set(_constants(source))
