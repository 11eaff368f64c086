import json
from pathlib import Path

from tests.faults.compare import table
from tests.faults.worker_log import loud_lines

TEXT = """\
[2026-12-04 23:46:55,001] [11900] [INFO] alert rule=jailbreak.spray entity=account:a id=1
[2026-12-04 23:46:56,426] [11900] [WARNING] Node <AiohttpHttpNode(http://127.0.0.1:9200)> \
has failed for 1 times in a row, putting on 1 second timeout
[2026-12-04 23:46:56,427] [11900] [WARNING] Retrying request after failure (attempt 0 of 3)
Traceback (most recent call last):
  File "elastic_transport/_async_transport.py", line 293, in perform_request
elastic_transport.ConnectionError: Connection error caused by: ClientConnectorError(...)
[2026-12-04 23:48:40,001] [13268] [ERROR] Unable connect to node with id 1: [Errno 111] \
Connect call failed ('127.0.0.1', 9092)
+------------------------------------+
| table | of | partitions [WARNING] |
[2026-12-04 23:48:41,001] [13268] [INFO] Discovered coordinator 1 for group g
"""


def test_counts_records_at_warning_or_above_and_tracebacks_in_a_span(tmp_path: Path) -> None:
    path = tmp_path / "worker.log"
    path.write_text(TEXT)
    assert loud_lines(path) == {"lines": 3, "tracebacks": 1}
    broker = TEXT.index("[2026-12-04 23:48:40")
    assert loud_lines(path, broker) == {"lines": 1, "tracebacks": 0}
    assert loud_lines(path, 0, broker) == {"lines": 2, "tracebacks": 1}
    assert loud_lines(path, len(TEXT.encode())) == {"lines": 0, "tracebacks": 0}


def test_reads_json_lines_too(tmp_path: Path) -> None:
    path = tmp_path / "worker.log"
    entries = [{"level": "INFO", "message": "a"}, {"level": "WARNING", "message": "b"},
               {"level": "ERROR", "message": "c", "exc": "Traceback ..."}]
    path.write_text("".join(json.dumps(e) + "\n" for e in entries) + "{not json\n")
    assert loud_lines(path) == {"lines": 2, "tracebacks": 1}


def test_the_fault_table_shows_the_log_lines_of_each_step() -> None:
    row = {"fault": "worker SIGKILL x3", "lost": {"t": 0}, "duplicated": {"t": 4},
           "unabsorbed": 0, "alerts": {"same": 10, "missing": [], "extra": []},
           "accounts_differing": {}, "campaigns": {"same": 3, "missing": [], "extra": []},
           "drain_seconds": 12.0, "stalls": [],
           "log_lines": [{"lines": 3, "tracebacks": 0}, {"lines": 5, "tracebacks": 1},
                         {"lines": 2, "tracebacks": 0}]}
    header, _, line = table([row]).splitlines()
    assert header.endswith("| log lines ≥ WARNING (tracebacks)")
    assert line.endswith(" | 12 | 3 (0), 5 (1), 2 (0)")
    assert table([dict(row, log_lines=[])]).endswith(" | 12 | -")
