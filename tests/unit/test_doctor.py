"""The doctor's row logic; against the real stack in tests/integration/test_first_hour.py."""

from pathlib import Path

from streams.settings import Settings
from streams.tooling.doctor import (
    Row,
    _topics_row,
    data_dir_row,
    elasticsearch_rows,
    format_table,
    model_row,
    policy_rows,
)


def test_topics_row_names_missing_topics_and_wrong_partition_counts() -> None:
    wanted = {"a": 6, "b": 1}
    assert _topics_row("topics", wanted, {"a": 6, "b": 1, "other": 3}).ok
    missing = _topics_row("topics", wanted, {"a": 6})
    assert not missing.ok and "b" in missing.detail and "misuse setup" in missing.fix
    wrong = _topics_row("topics", wanted, {"a": 3, "b": 1})
    assert not wrong.ok and "a has 3 (want 6)" in wrong.detail
    assert "MISUSE_TOPIC_PARTITIONS" in wrong.fix


def test_table_prints_a_fix_under_each_failing_row_only() -> None:
    table = format_table([Row("kafka", True, "up", "never shown"),
                          Row("elasticsearch", False, "down", "make up")])
    assert table.splitlines() == ["ok    kafka          up",
                                  "FAIL  elasticsearch  down",
                                  "                     fix: make up"]


def test_data_dir_row(tmp_path: Path) -> None:
    ok = data_dir_row(Settings(data_dir=tmp_path / "state"))
    assert ok.ok and "GiB free" in ok.detail
    blocked = tmp_path / "file"
    blocked.write_text("")
    bad = data_dir_row(Settings(data_dir=blocked / "state"))
    assert not bad.ok and "MISUSE_DATA_DIR" in bad.fix


def test_invalid_policy_and_pattern_bank_fail_with_the_variable_to_set(tmp_path: Path) -> None:
    policy, bank = tmp_path / "policy.yaml", tmp_path / "patterns.yaml"
    policy.write_text("")
    bank.write_text("patterns: []\n")
    rows = policy_rows(Settings(policy_file=policy, jailbreak_patterns_file=bank))
    assert [(row.name, row.ok) for row in rows] == [("policy", False), ("pattern bank", False)]
    assert "MISUSE_POLICY_FILE" in rows[0].fix and "empty" in rows[0].detail
    assert "MISUSE_JAILBREAK_PATTERNS_FILE" in rows[1].fix


def test_the_shipped_policy_and_pattern_bank_are_valid() -> None:
    assert all(row.ok for row in policy_rows(Settings()))


def test_a_model_that_is_not_on_this_machine_fails_offline(tmp_path: Path) -> None:
    row = model_row(Settings(embedding_model=str(tmp_path / "no-model")))
    assert not row.ok and "offline" in row.detail and "MISUSE_EMBEDDING_MODEL" in row.fix


def test_elasticsearch_unreachable_fails_both_rows_with_the_fix() -> None:
    rows = elasticsearch_rows(Settings(elasticsearch_url="http://127.0.0.1:1"))
    assert [row.name for row in rows] == ["elasticsearch", "index templates"]
    assert not any(row.ok for row in rows)
    assert "127.0.0.1:1" in rows[0].detail
    assert all("make up" in row.fix and "MISUSE_ELASTICSEARCH_URL" in row.fix for row in rows)
