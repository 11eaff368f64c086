import logging
import os
import time
from pathlib import Path

import pytest
import yaml

from detectors.policy import PolicyError, policy_from_dict
from streams.runtime.policy import PolicyFile, load_policy
from streams.settings import REPO_ROOT


def test_shipped_policy_is_valid_and_keeps_suspension_off():
    policy = load_policy(REPO_ROOT / "ops" / "policy.yaml")
    assert policy.automation.suspension_enabled is False
    assert policy.rules.credential_stuffing.window_seconds > 0


@pytest.mark.parametrize(("data", "field"), [
    ({"rules": {"credential_stuffing": {"window_seconds": -5}}}, "window_seconds"),
    ({"rules": {"credential_stuffing": {"severity": "apocalyptic"}}}, "severity"),
    ({"rules": {"no_such_rule": {}}}, "no_such_rule"),
    ({"automation": {"max_suspensions_per_hour": -1}}, "max_suspensions_per_hour"),
])
def test_invalid_policy_names_the_field(data, field):
    with pytest.raises(PolicyError, match=field):
        policy_from_dict(data)


def test_reload_takes_a_valid_change_and_refuses_an_invalid_one(tmp_path: Path, monkeypatch):
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({"defaults": True,
                                    "rules": {"credential_stuffing": {"min_distinct_keys": 20}}}))
    policy_file = PolicyFile(path)
    monkeypatch.setattr("streams.runtime.policy._CHECK_EVERY_SECONDS", 0.0)

    path.write_text(yaml.safe_dump({"defaults": True,
                                    "rules": {"credential_stuffing": {"min_distinct_keys": 7}}}))
    bump_mtime(path)
    assert policy_file.current().rules.credential_stuffing.min_distinct_keys == 7

    path.write_text("rules: {credential_stuffing: {min_distinct_keys: many}}")
    bump_mtime(path, 2)
    assert policy_file.current().rules.credential_stuffing.min_distinct_keys == 7


def test_an_empty_or_partial_policy_is_refused_unless_it_asks_for_defaults(tmp_path: Path):
    with pytest.raises(PolicyError, match="empty"):
        policy_from_dict(None)
    whole = yaml.safe_load((REPO_ROOT / "ops" / "policy.yaml").read_text())
    partial = dict(whole, rules={k: v for k, v in whole["rules"].items() if k != "campaign"})
    del partial["automation"]
    with pytest.raises(PolicyError, match=r"leaves out automation, rules\.campaign"):
        policy_from_dict(partial)
    assert policy_from_dict(dict(partial, defaults=True)).automation.dry_run is True
    path = tmp_path / "policy.yaml"
    path.write_text("")
    with pytest.raises(PolicyError, match="empty"):
        load_policy(path)


def bump_mtime(path: Path, seconds: int = 1) -> None:
    stamp = time.time() + seconds
    os.utime(path, (stamp, stamp))


def test_a_missing_or_unreadable_file_is_one_warning_and_the_policy_stays(
        tmp_path: Path, monkeypatch, caplog: pytest.LogCaptureFixture):
    path = tmp_path / "policy.yaml"
    seven = yaml.safe_dump({"defaults": True,
                            "rules": {"credential_stuffing": {"min_distinct_keys": 7}}})
    path.write_text(seven)
    policy_file = PolicyFile(path)
    monkeypatch.setattr("streams.runtime.policy._CHECK_EVERY_SECONDS", 0.0)

    def kept() -> bool:
        return policy_file.current().rules.credential_stuffing.min_distinct_keys == 7

    with caplog.at_level(logging.INFO, logger="streams.runtime.policy"):
        path.unlink()
        assert kept() and kept() and kept()
        path.write_text(seven)  # back, the same as before: read again all the same
        assert kept()
        path.unlink()
        path.mkdir()  # a path that cannot be read as a file (root reads any mode)
        assert kept() and kept()
        path.rmdir()
        path.write_bytes(b"\xff\xfe not text")
        assert kept() and kept()
    assert [(r.levelname, r.getMessage().split()[0]) for r in caplog.records] == [
        ("WARNING", "policy_file_unreadable"), ("INFO", "policy_reloaded"),
        ("WARNING", "policy_file_unreadable"), ("ERROR", "policy_reload_refused")]
    assert "No such file or directory" in caplog.records[0].getMessage()
    assert "not UTF-8" in caplog.records[3].getMessage()
