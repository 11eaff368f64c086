"""The alert rules in ops/prometheus: their shape, the metrics they name, their runbooks.

Prometheus is not run here. promtool (on the PATH, or put into the cache's bin/ by
`ops/tools install`, which `make test` runs) checks the rules and runs their unit tests; a
small PromQL scan checks balanced brackets and known metric names as well.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RULES_DIR = REPO / "ops" / "prometheus"
RULES_FILE = RULES_DIR / "misuse-rules.yml"
RULES_TESTS_FILE = RULES_DIR / "misuse-rules.test.yml"
RUNBOOKS_DIR = REPO / "ops" / "runbooks"

# The names the worker exposes (ops/prometheus/README.md), and Prometheus' own `up`.
WORKER_METRICS = {
    "misuse_stage_events_in_total", "misuse_stage_events_out_total", "misuse_deadletters_total",
    "misuse_stage_batch_duration_seconds", "misuse_event_to_alert_latency_seconds",
    "misuse_consumer_lag", "misuse_embedding_path_total", "misuse_embedding_pending_prompts",
    "misuse_elasticsearch_bulk_failures_total", "misuse_elasticsearch_retries_total",
    "misuse_webhook_deliveries_total", "misuse_worker_ready", "misuse_worker_crashes_total",
    "misuse_state_unreadable_total",
}
HISTOGRAMS = {"misuse_stage_batch_duration_seconds", "misuse_event_to_alert_latency_seconds"}
HISTOGRAM_SERIES = {f"{name}_{suffix}" for name in HISTOGRAMS
                    for suffix in ("bucket", "sum", "count")}
KNOWN_SERIES = {"up"} | WORKER_METRICS | HISTOGRAM_SERIES
# The alerts the issue asks for, by what they watch.
REQUIRED_ALERTS = {
    "worker down": "up",
    "lag growing": "misuse_consumer_lag",
    "dead-letter rate": "misuse_deadletters_total",
    "Elasticsearch failures": "misuse_elasticsearch_bulk_failures_total",
    "embedding backlog": "misuse_embedding_pending_prompts",
}
PROMQL_WORDS = {
    # aggregations and their modifiers
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "by", "without", "on", "ignoring", "group_left", "group_right",
    # binary operators and modifiers
    "and", "or", "unless", "bool", "offset",
    # functions used in alerting
    "rate", "irate", "increase", "delta", "idelta", "deriv", "predict_linear", "absent",
    "absent_over_time", "avg_over_time", "max_over_time", "min_over_time", "sum_over_time",
    "histogram_quantile", "clamp_min", "clamp_max", "scalar", "vector", "abs", "time",
    "changes", "resets", "label_replace",
}
DURATION = re.compile(r"^\d+[smhdwy]$")


def load_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in load_rules() if "alert" in rule]


def promql_series_names(expr: str) -> set[str]:
    """The metric names an expression selects: every identifier left once strings, label
    matchers, range selectors, grouping label lists, numbers and PromQL's own words are
    taken out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", text)
    text = re.sub(r"(?<![\w:])\d+(?:\.\d+)?(?:e[+-]?\d+)?", " ", text)
    names = set(re.findall(r"[A-Za-z_:][\w:]*", text))
    return names - PROMQL_WORDS


def brackets_balance(expr: str) -> bool:
    closing = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for char in re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr):
        if char in "([{":
            stack.append(char)
        elif char in closing and (not stack or stack.pop() != closing[char]):
            return False
    return not stack


def test_the_rules_file_has_groups_of_uniquely_named_alerts() -> None:
    document = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))
    assert set(document) == {"groups"}
    group_names = [group["name"] for group in document["groups"]]
    assert len(group_names) == len(set(group_names))
    names = [rule["alert"] for rule in alerts()]
    assert names and len(names) == len(set(names))
    assert all(set(rule) >= {"alert", "expr"} for rule in load_rules())


@pytest.mark.parametrize("rule", alerts(), ids=lambda rule: rule["alert"])
def test_each_alert_has_a_duration_severity_summary_and_runbook(rule: dict[str, Any]) -> None:
    assert DURATION.match(str(rule.get("for", ""))), "every alert waits before firing"
    assert rule["labels"]["severity"] in {"warning", "critical"}
    assert rule["annotations"]["summary"].strip()
    runbook = rule["annotations"]["runbook_url"].split("#")[0]
    assert runbook.startswith("ops/runbooks/")
    page = REPO / runbook
    assert page.is_file(), f"{rule['alert']}: no runbook at {runbook}"
    text = page.read_text(encoding="utf-8")
    assert rule["alert"] in text
    for section in ("## What it means", "## How to check", "## What to do"):
        assert section in text, f"{runbook} lacks {section!r}"


@pytest.mark.parametrize("rule", alerts(), ids=lambda rule: rule["alert"])
def test_each_expression_names_only_the_worker_metrics(rule: dict[str, Any]) -> None:
    expr = rule["expr"]
    assert brackets_balance(expr), expr
    names = promql_series_names(expr)
    assert names, f"{rule['alert']} selects no metric"
    assert names <= KNOWN_SERIES, f"unknown metric names {names - KNOWN_SERIES}"
    # Every selector is scoped to the worker's scrape job, so another job's metrics of the
    # same name never fire these alerts.
    selectors = re.findall(r"([A-Za-z_:][\w:]*)\s*\{([^{}]*)\}", expr)
    assert len(selectors) == len(re.findall(r"[A-Za-z_:][\w:]*\s*\{", expr))
    assert all('job="misuse-worker"' in matchers for _, matchers in selectors), expr
    assert all(name in KNOWN_SERIES for name, _ in selectors)


def test_the_required_alerts_are_all_there() -> None:
    watched = {name for rule in alerts() for name in promql_series_names(rule["expr"])}
    missing = {what for what, metric in REQUIRED_ALERTS.items() if metric not in watched}
    assert not missing


def test_worker_down_also_fires_when_no_worker_is_scraped() -> None:
    exprs = [rule["expr"] for rule in alerts() if "up" in promql_series_names(rule["expr"])]
    assert any('absent(up{job="misuse-worker"})' in expr for expr in exprs)


def test_the_promql_scan_catches_what_it_should() -> None:
    assert promql_series_names('sum by (topic) (rate(foo_total{a="b(c"}[5m])) > 1e3') \
        == {"foo_total"}
    assert not brackets_balance("sum(rate(x[5m])")
    assert brackets_balance('x{a="}"}')


def test_the_readme_lists_every_metric_and_alert() -> None:
    readme = (RULES_DIR / "README.md").read_text(encoding="utf-8")
    assert all(f"`{name}`" in readme for name in WORKER_METRICS)
    assert all(rule["alert"] in readme for rule in alerts())
    index = (RUNBOOKS_DIR / "README.md").read_text(encoding="utf-8")
    assert all(rule["alert"] in index for rule in alerts())


def test_every_alert_has_a_promtool_unit_test_where_it_fires() -> None:
    document = yaml.safe_load(RULES_TESTS_FILE.read_text(encoding="utf-8"))
    assert document["rule_files"] == [RULES_FILE.name]
    fired = {case["alertname"] for test in document["tests"]
             for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert fired == {rule["alert"] for rule in alerts()}


def promtool() -> str:
    """promtool on the PATH, or where `ops/tools install` (run by `make test`) put it."""
    cache = Path(os.environ.get("MISUSE_CACHE", Path.home() / ".cache" / "misuse-detector"))
    found = shutil.which("promtool") or shutil.which("promtool", path=str(cache / "bin"))
    assert found, "promtool is not installed: run ops/tools install"
    return found


def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(RULES_FILE)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alerts_fire_on_their_unit_test_series() -> None:
    result = subprocess.run([promtool(), "test", "rules", RULES_TESTS_FILE.name],
                            cwd=RULES_DIR, capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
