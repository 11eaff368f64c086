"""What a newcomer sees: each foreseen failure is one line with where and the fix, and
`misuse doctor` against the real stack, healthy and with Elasticsearch unreachable."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.runtime.broker import create_topics
from streams.settings import REPO_ROOT
from streams.stages import changelog_topics
from streams.tooling.runner import isolated_environment, remove_run

from .conftest import Pipeline

pytestmark = pytest.mark.integration
NOWHERE = "127.0.0.1:1"


def misuse(*args: str, env: dict[str, str] | None = None,
           **overrides: str) -> subprocess.CompletedProcess[str]:
    # Two seconds is plenty to find no broker on a closed local port.
    env = dict(os.environ if env is None else env, MISUSE_KAFKA_BOOTSTRAP_TIMEOUT_SECONDS="2",
               **overrides)
    return subprocess.run([sys.executable, "-m", "streams.cli", *args], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)


def assert_one_line(result: subprocess.CompletedProcess[str], *parts: str) -> str:
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def isolated(tmp_path: Path) -> Iterator[dict[str, str]]:
    """An environment with topics, indices and group of its own, nothing set up yet (and
    whatever the test set up removed after it)."""
    settings, env = isolated_environment("first-hour", tmp_path)
    yield env
    remove_run(settings)


@pytest.fixture
def events(tmp_path: Path) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_text('{"event_id": "e1", "account_id": "a1"}\n')
    return path


@pytest.mark.parametrize("command", [["setup"], ["produce", "EVENTS"], ["worker"]])
def test_kafka_unreachable(command: list[str], events: Path, isolated: dict[str, str]) -> None:
    args = [str(events) if a == "EVENTS" else a for a in command]
    assert_one_line(misuse(*args, env=isolated, MISUSE_KAFKA_BOOTSTRAP=NOWHERE),
                    f"Kafka is not reachable at {NOWHERE}", "make up", "MISUSE_KAFKA_BOOTSTRAP")


def test_elasticsearch_unreachable(isolated: dict[str, str]) -> None:
    assert_one_line(misuse("setup", env=isolated, MISUSE_ELASTICSEARCH_URL=f"http://{NOWHERE}"),
                    f"Elasticsearch is not reachable at http://{NOWHERE}", "make up",
                    "MISUSE_ELASTICSEARCH_URL")


def test_elasticsearch_unauthorised(isolated: dict[str, str]) -> None:
    # The local cluster has no security; credentials it cannot check are simply ignored, so
    # this checks only that a wrong-port URL with credentials never prints the password.
    line = assert_one_line(misuse("setup", env=isolated,
                                  MISUSE_ELASTICSEARCH_URL=f"http://user:hunter2@{NOWHERE}"),
                           NOWHERE, "MISUSE_ELASTICSEARCH_URL")
    assert "hunter2" not in line


def test_missing_topics(events: Path, isolated: dict[str, str]) -> None:
    assert_one_line(misuse("produce", str(events), env=isolated), "api.usage",
                    "misuse setup")
    assert_one_line(misuse("worker", env=isolated), "topic(s) missing", "misuse setup")


def test_missing_templates(tmp_path: Path) -> None:
    settings, env = isolated_environment("first-hour", tmp_path)
    create_topics(settings, changelog_topics(settings))
    try:
        assert_one_line(misuse("worker", env=env), "index template",
                        settings.elasticsearch_address.removeprefix("http://"), "misuse setup")
    finally:
        remove_run(settings)


def test_invalid_policy(tmp_path: Path, isolated: dict[str, str]) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules: [\n")
    assert_one_line(misuse("worker", env=isolated, MISUSE_POLICY_FILE=str(policy)),
                    str(policy), "MISUSE_POLICY_FILE")


def test_unreadable_input_file(tmp_path: Path) -> None:
    assert_one_line(misuse("produce", str(tmp_path / "missing.jsonl")), "missing.jsonl",
                    "does not exist", "produce --help")
    assert_one_line(misuse("eval", str(tmp_path)), str(tmp_path), "is a directory")


def test_model_that_cannot_load_offline(tmp_path: Path, isolated: dict[str, str]) -> None:
    assert_one_line(misuse("worker", env=isolated,
                           MISUSE_EMBEDDING_MODEL=str(tmp_path / "no-model")),
                    "offline", "MISUSE_EMBEDDING_MODEL")


def test_debug_shows_the_traceback(isolated: dict[str, str]) -> None:
    result = misuse("--debug", "setup", env=isolated, MISUSE_KAFKA_BOOTSTRAP=NOWHERE)
    assert result.returncode != 0 and "Traceback" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: Kafka is not reachable")


def rows(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """Doctor's table: check name -> status."""
    table = {}
    for line in result.stdout.splitlines():
        status, _, rest = line.partition("  ")
        if status.strip() in ("ok", "WARN", "FAIL"):
            table[rest.strip().split("  ")[0]] = status.strip()
    return table


def test_doctor_healthy_and_with_elasticsearch_unreachable(isolated: dict[str, str]) -> None:
    assert misuse("setup", env=isolated).returncode == 0
    healthy = misuse("doctor", env=isolated)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    table = rows(healthy)
    assert set(table) >= {"kafka", "topics", "changelog topics", "worker lag", "elasticsearch",
                          "index templates", "policy", "pattern bank", "embedding model",
                          "data directory"}
    # The open local stack runs on the development key, and says so.
    assert table.pop("internal key") == "WARN"
    assert set(table.values()) == {"ok"}
    assert "no worker group" in healthy.stdout

    down = misuse("doctor", env=isolated, MISUSE_ELASTICSEARCH_URL=f"http://{NOWHERE}")
    assert down.returncode != 0
    table = rows(down)
    assert table["elasticsearch"] == table["index templates"] == "FAIL"
    assert table["kafka"] == table["policy"] == "ok"
    assert down.stdout.count("fix: start the local stack with `make up`, or set "
                             "MISUSE_ELASTICSEARCH_URL") == 2
    assert NOWHERE in down.stdout


def test_doctor_reports_lag_per_stage_of_a_running_worker(pipeline: Pipeline) -> None:
    pipeline.produce([{"event_id": "doctor-1", "ts": 1_790_000_000_000, "account_id": "a",
                       "api_key_id": "k", "ip": "192.0.2.1", "endpoint": "/v1/chat",
                       "status": 200}])
    pipeline.wait_drained()
    result = misuse("doctor", env=pipeline.worker.env)
    table = rows(result)
    assert {"lag ingest", "lag index"} <= set(table), result.stdout
    assert "no worker group" not in result.stdout
