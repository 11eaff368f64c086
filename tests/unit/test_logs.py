import json
import logging

from streams.logs import JsonFormatter, RateLimitFilter, worker_logging_config


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord("faust.transport.producer", logging.WARNING, __file__, 1, message,
                             (), None)


def test_one_buffer_full_warning_per_interval_then_a_count_of_the_rest() -> None:
    now = [0.0]
    limit = RateLimitFilter("producer buffer full", 60.0, clock=lambda: now[0])
    assert limit.filter(record("producer buffer full size 101"))
    for size in range(102, 140):
        now[0] += 1.0
        assert not limit.filter(record(f"producer buffer full size {size}"))
    assert limit.filter(record("something else"))  # other messages pass untouched
    now[0] = 61.0
    passed = record("producer buffer full size 200")
    assert limit.filter(passed)
    assert passed.getMessage() == "producer buffer full size 200 (… 38 more in the last 60 s)"
    now[0] = 200.0
    quiet = record("producer buffer full size 300")
    assert limit.filter(quiet) and quiet.getMessage() == "producer buffer full size 300"


def test_json_lines_lift_key_value_pairs() -> None:
    line = JsonFormatter().format(logging.LogRecord(
        "streams.runtime.policy", logging.INFO, __file__, 1, "policy_reloaded path=%s event_id=%s",
        ("/x/policy.yaml", "e-1"), None))
    entry = json.loads(line)
    assert entry["message"] == "policy_reloaded path=/x/policy.yaml event_id=e-1"
    assert entry["path"] == "/x/policy.yaml" and entry["event_id"] == "e-1"
    assert entry["level"] == "INFO" and entry["logger"] == "streams.runtime.policy"


def test_text_format_keeps_modes_config() -> None:
    assert worker_logging_config("text") is None
    assert worker_logging_config("json")["formatters"]["colored"]["()"] == \
        "streams.logs.JsonFormatter"
