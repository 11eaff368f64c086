"""`misuse doctor`: is this machine ready to run the worker, and is the worker keeping up?

Each check is a small function returning a `Row`; a check that needs a service that is down
reports that instead of waiting for it again. The CLI only prints the table.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streams.settings import TOPIC_NAMES, Settings
from streams.tooling.errors import one_line

# A few prompts of the usual length, to time the model (not a benchmark: `make bench` is).
SAMPLE_PROMPTS = [
    "Summarise the attached quarterly report in three bullet points for the board.",
    "Translate this paragraph into French, keeping the technical terms in English.",
    "Write a polite reply declining the meeting invitation for next Tuesday afternoon.",
    "Explain the difference between a process and a thread to a new engineer.",
] * 8


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    warning: bool = False  # ok, but not for production


def _failed(name: str, exc: Exception, settings: Settings, fix: str = "") -> Row:
    """A row for a check that raised: the one-line error says what and where, and its fix."""
    line = one_line(exc, settings) or f"{type(exc).__name__}: {exc}"
    detail, _, found_fix = line.rpartition(": ") if not fix else (line, "", fix)
    return Row(name, False, detail or line, fix or found_fix)


def settings_row() -> tuple[Settings | None, Row]:
    """The settings read from the environment (and .env), or the one line that stops the
    worker from starting with them: a malformed secret, URL or JSON list."""
    try:
        settings = Settings()
    except ValueError as exc:  # pydantic's ValidationError, pydantic-settings' SettingsError
        return None, _failed("settings", exc, Settings.model_construct())
    return settings, Row("settings", True, "MISUSE_* variables valid")


def _admin(settings: Settings) -> Any:
    from streams.runtime.broker import admin_client

    return admin_client(settings, bootstrap_timeout_ms=5000)


def kafka_rows(settings: Settings) -> list[Row]:
    """Reachable; topics and changelogs present with their partitions; the worker's lag."""
    from streams.stages import changelog_topics

    try:
        admin = _admin(settings)
    except Exception as exc:
        down = _failed("kafka", exc, settings)
        skipped = Row("", False, "not checked: Kafka is not reachable", down.fix)
        return [down, *(Row(name, skipped.ok, skipped.detail, skipped.fix)
                        for name in ("topics", "changelog topics"))]
    try:
        metadata = admin.describe_topics()
        partitions = {t["name"]: len(t["partitions"]) for t in metadata}
        brokers = len(admin.describe_cluster().get("brokers", []))
        rows = [Row("kafka", True, f"{settings.kafka_bootstrap}, {brokers} broker(s)")]
        topics = {settings.topic(name): settings.partitions(name) for name in TOPIC_NAMES}
        rows.append(_topics_row("topics", topics, partitions))
        rows.append(_topics_row("changelog topics", changelog_topics(settings), partitions))
        try:
            rows.extend(lag_rows(settings, admin))
        except Exception as exc:
            rows.append(_failed("worker lag", exc, settings, "see the worker's log"))
        return rows
    finally:
        admin.close()


def _topics_row(name: str, wanted: dict[str, int], partitions: dict[str, int]) -> Row:
    missing = sorted(set(wanted) - set(partitions))
    if missing:
        return Row(name, False, f"{len(missing)} of {len(wanted)} missing: "
                   + ", ".join(missing[:3]) + (" …" if len(missing) > 3 else ""),
                   "run `misuse setup`")
    wrong = [f"{topic} has {partitions[topic]} (want {count})"
             for topic, count in sorted(wanted.items()) if partitions[topic] != count]
    if wrong:
        # Faust refuses a changelog whose partitions differ from its source topic's.
        return Row(name, False, "; ".join(wrong[:2]),
                   "set MISUSE_TOPIC_PARTITIONS to the cluster's count, or use a new "
                   "MISUSE_TOPIC_PREFIX and run `misuse setup`")
    counts = sorted(set(wanted.values()), reverse=True)
    return Row(name, True, f"{len(wanted)} present, partitions "
               + "/".join(str(c) for c in counts) + " as configured")


def lag_rows(settings: Settings, admin: Any) -> list[Row]:
    """Messages each stage has not yet committed, when the worker's group has committed."""
    from streams.runtime.broker import consumer_client
    from streams.stages import STAGES

    groups = {group["group_id"] for group in admin.list_groups()}
    committed = admin.list_group_offsets(settings.app_id).get(settings.app_id, {}) \
        if settings.app_id in groups else {}
    if not committed:
        return [Row("worker lag", True, f"no worker group ({settings.app_id} has committed "
                                        "nothing): start one with `misuse worker`")]
    stages = {spec.stage.name: spec.reads for spec in STAGES}
    stages["index"] = ("misuse.alerts", "misuse.documents")
    consumer = consumer_client(settings, bootstrap_timeout_ms=5000)
    try:
        rows = []
        for stage, reads in stages.items():
            parts = [tp for tp in committed if tp.topic in {settings.topic(r) for r in reads}]
            ends = consumer.end_offsets(parts) if parts else {}
            lag = sum(max(0, ends[tp] - committed[tp].offset) for tp in parts)
            rows.append(Row(f"lag {stage}", True, f"{lag} message(s) behind"
                            if parts else "nothing committed yet"))
        return rows
    finally:
        consumer.close()


def elasticsearch_rows(settings: Settings) -> list[Row]:
    """Reachable and its version; the templates and the alerts alias installed."""
    from elasticsearch import Elasticsearch

    from streams.sinks.elasticsearch import client_options, index_templates

    client = Elasticsearch(**dict(client_options(settings), request_timeout=5, max_retries=0))
    try:
        # `GET /` is not served by every distribution; the nodes API is.
        nodes = client.nodes.info(filter_path="nodes.*.version")
        versions = sorted({n["version"] for n in nodes.get("nodes", {}).values()})
    except Exception as exc:
        down = _failed("elasticsearch", exc, settings)
        return [down, Row("index templates", False, "not checked: Elasticsearch is not "
                          "reachable", down.fix)]
    rows = [Row("elasticsearch", True, f"{settings.elasticsearch_address}, version "
                + ", ".join(versions))]
    try:
        missing: list[str] = []
        alias, aliased = settings.index("alerts"), False
        for name in index_templates(settings):
            found = _template(client, name)
            if found is None:
                missing.append(name)
            elif alias in found.get("template", {}).get("aliases", {}):
                aliased = True
    except Exception as exc:
        return [*rows, _failed("index templates", exc, settings)]
    if missing:
        rows.append(Row("index templates", False, "missing: " + ", ".join(missing),
                        "run `misuse setup`"))
    elif not aliased:
        rows.append(Row("index templates", False, f"installed, but none declares the alias "
                        f"{alias}", "run `misuse setup` to install the current templates"))
    else:
        rows.append(Row("index templates", True, f"{len(index_templates(settings))} installed, "
                        f"alias {alias}"))
    return rows


def _template(client: Any, name: str) -> dict[str, Any] | None:
    from elasticsearch import NotFoundError

    try:
        found = client.indices.get_index_template(name=name)["index_templates"]
    except NotFoundError:
        return None
    return dict(found[0]["index_template"]) if found else None


def policy_rows(settings: Settings) -> list[Row]:
    import yaml

    from detectors.jailbreak import patterns_from_dict
    from streams.runtime.policy import load_policy

    rows = []
    try:
        load_policy(settings.policy_file)
        rows.append(Row("policy", True, str(settings.policy_file)))
    except Exception as exc:
        rows.append(_failed("policy", exc, settings))
    try:
        text = settings.jailbreak_patterns_file.read_text(encoding="utf-8")
        patterns = patterns_from_dict(yaml.safe_load(text))
        rows.append(Row("pattern bank", True,
                        f"{len(patterns)} patterns in {settings.jailbreak_patterns_file}"))
    except Exception as exc:
        rows.append(_failed("pattern bank", exc, settings,
                            "fix the file, or set MISUSE_JAILBREAK_PATTERNS_FILE"))
    return rows


def model_row(settings: Settings) -> Row:
    """Loads the model offline, as the worker does (drift check included), and times it on a
    few prompts: model, backend, precision, drift from the model's reference, prompts/s."""
    from streams.embedding.loader import drift_result, load_encoder
    from streams.embedding.model import EncoderDriftError

    os.environ["HF_HUB_OFFLINE"] = "1"  # a doctor that downloads would hide the problem
    try:
        began = time.perf_counter()
        encoder = load_encoder(settings.embedding_model, settings.embed_device,
                               settings.embed_precision, settings.embed_backend,
                               settings.cache_dir)
        loaded_s = time.perf_counter() - began
        drift = drift_result(encoder, settings.cache_dir)  # cached by the load
        began = time.perf_counter()
        encoder.encode(SAMPLE_PROMPTS)
        rate = len(SAMPLE_PROMPTS) / (time.perf_counter() - began)
    except EncoderDriftError as exc:
        return Row("embedding model", False, str(exc),
                   "unset MISUSE_EMBED_PRECISION (fp32), or for int8 set "
                   "MISUSE_EMBED_BACKEND=onnx (checked: within the bounds)")
    except Exception as exc:
        return _failed("embedding model", exc, settings)
    precision = getattr(encoder, "precision", "fp32")
    checked = "reference" if drift is None else \
        f"drift median {drift.median:.4f} p1 {drift.p1:.4f}"
    return Row("embedding model", True, f"{settings.embedding_model} ({encoder.backend} "
               f"{precision}, {checked}) on {settings.embed_device}: loaded offline in "
               f"{loaded_s:.1f} s, {rate:.0f} prompts/s")


def data_dir_row(settings: Settings) -> Row:
    path = settings.data_dir
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".doctor-"):
            pass
        free = shutil.disk_usage(path).free
    except OSError as exc:
        return Row("data directory", False, f"{path}: {exc.strerror or exc}",
                   "set MISUSE_DATA_DIR to a writable folder")
    ok = free >= 1 << 30  # RocksDB state and its compactions need room to breathe
    return Row("data directory", ok, f"{path} writable, {free / (1 << 30):.1f} GiB free",
               "" if ok else "free some space, or set MISUSE_DATA_DIR to a larger disk")


def internal_key_row(settings: Settings) -> Row:
    """Whether the worker seals its records with a key of its own (never shown)."""
    from streams.runtime.sealing import InternalKeyMissingError, require_key

    fix = ("set MISUSE_INTERNAL_KEY to a long random secret, the same on every worker "
           "(`openssl rand -base64 32`)")
    try:
        require_key(settings.internal_key, settings.kafka_security_protocol)
    except InternalKeyMissingError:
        return Row("internal key", False, "MISUSE_INTERNAL_KEY is not set, and the broker is "
                   "secured: the worker will not start", fix)
    if settings.internal_keys.development:
        return Row("internal key", True, "records are signed with the development key "
                   "(MISUSE_INTERNAL_KEY unset): anyone can forge them", fix, warning=True)
    count = len(settings.internal_key)
    return Row("internal key", True, "set" + (f", {count} keys (rotation: the first signs)"
                                              if count > 1 else ""))


CHECKS: tuple[Callable[[Settings], list[Row]], ...] = (
    lambda s: [internal_key_row(s)], kafka_rows, elasticsearch_rows, policy_rows,
    lambda s: [model_row(s)], lambda s: [data_dir_row(s)],
)


def run_checks(settings: Settings) -> list[Row]:
    rows: list[Row] = []
    for check in CHECKS:
        rows.extend(check(settings))
    return rows


def format_table(rows: list[Row]) -> str:
    width = max(len(row.name) for row in rows)
    lines = []
    for row in rows:
        status = "FAIL" if not row.ok else "WARN" if row.warning else "ok  "
        lines.append(f"{status}  {row.name:<{width}}  {row.detail}")
        if (not row.ok or row.warning) and row.fix:
            lines.append(f"{'':4}  {'':<{width}}  fix: {row.fix}")
    return "\n".join(lines)
