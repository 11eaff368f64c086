"""`misuse produce` checks every line before it sends: a bad line is reported with its number
and reason, the good ones around it are all sent, and nothing stops the file halfway (issue 23:
a line nested 10,000 deep, or a lone surrogate in account_id, ended it after the lines before)."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from streams.settings import get_settings
from streams.tooling.event_lines import checked_lines, keyed_lines

NOW = 1_700_000_000_000  # 2023: in the past of any clock the CLI tests run under
SKEW = 86_400_000


def event(n: int, **changes) -> bytes:
    fields = {"event_id": f"e-{n}", "ts": NOW - 1000, "account_id": f"acct-{n}",
              "api_key_id": "key-1", "ip": "203.0.113.7", "endpoint": "/v1/chat/completions",
              "status": 200} | changes
    return json.dumps(fields).encode()


FILE = [
    event(1),
    b"",
    b'{"a":' * 10_000 + b"1" + b"}" * 10_000,  # RecursionError in json.loads
    event(4, account_id="acct-\ud800"),  # a lone surrogate: no UTF-8 key for it
    event(5),
    b"not json",
    event(7, status=None),
    b'{"prompt": "\xff"}',
    event(9, status=401, account_id=None),
]


def test_each_line_is_sent_with_its_key_or_refused_with_its_number_and_reason() -> None:
    lines = list(checked_lines(FILE, NOW, SKEW))
    assert [(line.number, line.key) for line in lines if not line.problem] == [
        (1, b"acct-1"), (5, b"acct-5"), (9, None)]
    refused = {line.number: line.problem for line in lines if line.problem}
    assert sorted(refused) == [3, 4, 6, 7, 8]
    assert "nested more than" in refused[3]
    assert "lone UTF-16 surrogate" in refused[4]
    assert "not valid JSON" in refused[6]
    assert "missing required field 'status'" in refused[7]
    assert "not valid UTF-8" in refused[8]
    assert all(line.value == FILE[line.number - 1] for line in lines)


def test_unchecked_lines_never_raise_either() -> None:
    keys = [(line.number, line.key) for line in keyed_lines(FILE)]
    assert keys == [(1, b"acct-1"), (3, None), (4, None), (5, b"acct-5"), (6, None),
                    (7, b"acct-7"), (8, None), (9, None)]


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list:
    """`send_lines` without Kafka: what it would send, in order."""
    out: list = []

    def send_lines(settings, lines, topic):
        out.extend(line for line in lines if not line.problem)
        return len(out)

    monkeypatch.setattr("streams.tooling.produce.send_lines", send_lines)
    get_settings.cache_clear()
    yield out
    get_settings.cache_clear()


def test_produce_sends_every_good_line_reports_the_bad_and_exits_2(tmp_path: Path,
                                                                 sent: list) -> None:
    from streams.cli import main

    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(FILE) + b"\n")
    result = CliRunner().invoke(main, ["produce", str(path)])
    assert result.exit_code == 2, result.output
    assert [line.number for line in sent] == [1, 5, 9]
    assert result.stdout.strip() == f"produced 3 events from {path}; 5 line(s) refused, above"
    reported = result.stderr.splitlines()
    assert [line.split(": ", 1)[0] for line in reported] == [f"{path}:{n}" for n in (3, 4, 6, 7, 8)]
    assert "nested more than" in reported[0] and "surrogate" in reported[1]


def test_produce_of_a_clean_file_exits_0(tmp_path: Path, sent: list) -> None:
    from streams.cli import main

    path = tmp_path / "events.jsonl"
    path.write_bytes(event(1) + b"\n" + event(2) + b"\n")
    result = CliRunner().invoke(main, ["produce", str(path)])
    assert result.exit_code == 0 and result.stderr == ""
    assert [line.key for line in sent] == [b"acct-1", b"acct-2"]
