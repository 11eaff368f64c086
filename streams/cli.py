"""The `misuse` command: setup, worker, produce, simulate, review, eval, demo, export, report,
kibana."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import click

from streams.settings import get_settings
from streams.tooling.errors import MisuseGroup, set_debug
from streams.tooling.simulation.common import Split


@click.group(cls=MisuseGroup)
@click.option("--debug", is_flag=True, expose_value=False, is_eager=True, callback=set_debug,
              help="Print the traceback of a failure, not only its one-line summary.")
def main() -> None:
    """misuse-detector: finds misuse of a language-model API in its usage events."""


@main.command()
def setup() -> None:
    """Create the topics and install the index templates (idempotent)."""
    from elasticsearch import Elasticsearch

    from streams.runtime.broker import create_topics
    from streams.sinks.elasticsearch import client_options, install_templates
    from streams.stages import changelog_topics

    settings = get_settings()
    created = create_topics(settings, changelog_topics(settings))
    click.echo(f"topics: {len(created)} created" + (f" ({', '.join(created)})" if created else ""))
    client = Elasticsearch(**client_options(settings))
    installed = install_templates(client, settings)
    click.echo(f"index templates: {', '.join(installed)}")


@main.command()
@click.option("--loglevel", default="info", show_default=True)
def worker(loglevel: str) -> None:
    """Run the stream worker (all stages) until stopped."""
    from streams.embedding.model import check_model_available
    from streams.logs import install_outage_filter, install_rate_limits, worker_logging_config
    from streams.runtime import metrics
    from streams.runtime.broker import require_topics
    from streams.runtime.faust_wall import CrashCounter, Worker
    from streams.runtime.heap import settle_for_streaming
    from streams.runtime.policy import current_policy
    from streams.runtime.sealing import require_key
    from streams.settings import TOPIC_NAMES
    from streams.stages import build_app, changelog_topics

    settings = get_settings()
    require_key(settings.internal_key, settings.kafka_security_protocol)
    current_policy()  # an invalid policy stops the worker here, with the reason
    check_model_available(settings.embedding_model)
    # Kafka down or topics missing: one line now, not an agent crash after a minute.
    require_topics(settings, [settings.topic(name) for name in TOPIC_NAMES]
                   + list(changelog_topics(settings)))
    check_elasticsearch_templates()
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # RocksDB makes only the leaf
    install_rate_limits()
    install_outage_filter()
    app = build_app(settings)
    # The imports and the app are built: out of every later collection, including the full
    # one Faust's store runs for each table at each rebalance (14 of them at a start, 2 s).
    settle_for_streaming()
    # Readiness and crashes on /metrics, for whoever runs the worker (streams/tooling/runner.py);
    # the worker installs the app's log handlers when it sets up logging.
    app.conf.loghandlers = [
        CrashCounter(lambda service: metrics.worker_crashes.labels(service).inc())]

    def ready() -> None:
        settle_for_streaming()
        metrics.worker_ready.set(1)

    Worker(app, loglevel=loglevel, on_ready=ready,
           logging_config=worker_logging_config(settings.log_format)).execute_from_commandline()


def check_elasticsearch_templates() -> None:
    """Missing templates stop the worker; Elasticsearch being down only delays indexing."""
    from elasticsearch import Elasticsearch, TransportError

    from streams.sinks.elasticsearch import (
        TemplatesMissingError,
        check_templates,
        client_options,
    )

    settings = get_settings()
    try:
        check_templates(Elasticsearch(**client_options(settings)), settings)
    except TransportError as exc:
        click.echo(f"warning: Elasticsearch at {settings.elasticsearch_address} is not reachable "
                   f"({exc.__class__.__name__}); alerts wait in Kafka until it is", err=True)
    except TemplatesMissingError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
def doctor() -> None:
    """Check the settings, Kafka, Elasticsearch, the policy, the model and the data
    directory; each failing row says how to fix it."""
    from streams.tooling.doctor import format_table, run_checks, settings_row

    settings, row = settings_row()
    # Invalid settings stop the worker before anything else; nothing else can be checked.
    rows = [row, *(run_checks(settings) if settings is not None else [])]
    click.echo(format_table(rows))
    if not all(row.ok for row in rows):
        raise click.exceptions.Exit(1)


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--topic", default=None, help="Defaults to the usage topic (api.usage).")
def produce(path: Path, topic: str | None) -> None:
    """Replay a JSONL file of usage events into Kafka, keyed by account.

    Each line is checked as the worker checks an event: every valid line is sent, and each
    invalid one is reported on stderr as FILE:LINE: reason and not sent; the exit status is 2
    when any line was refused. Fix those lines and run it again: sending a line twice is
    harmless, as the detectors drop an event id they have already seen in their windows and
    every document has a deterministic id, so a replay overwrites instead of duplicating."""
    from streams.runtime import clock
    from streams.tooling.event_lines import Line, checked_lines
    from streams.tooling.produce import send_lines

    settings = get_settings()
    refused = 0

    def reported(lines: Iterator[Line]) -> Iterator[Line]:
        nonlocal refused
        for line in lines:
            if line.problem:
                refused += 1
                click.echo(f"{path}:{line.number}: {line.problem}", err=True)
            yield line

    lines = checked_lines(path.read_bytes().splitlines(), clock.now_ms(),
                          settings.max_future_skew_seconds * 1000)
    count = send_lines(settings, reported(lines),
                       settings.topic("api.usage") if topic is None else topic)
    click.echo(f"produced {count} events from {path}"
               + (f"; {refused} line(s) refused, above" if refused else ""))
    if refused:
        raise click.exceptions.Exit(2)


@main.command()
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write events to this JSONL file (labels beside it as *.labels.jsonl).")
@click.option("--kafka", "to_kafka", is_flag=True, help="Send the events to the usage topic.")
@click.option("--preset", default="full", show_default=True,
              type=click.Choice(["stuffing", "campaign", "attacks", "full", "realtext", "world"]),
              help="'realtext': labelled traffic built from the real public text in tests/data; "
                   "'world': campaigns in several languages, mixed with work, disguised, with "
                   "their traps (classes of the unlabelled accounts in *.classes.jsonl).")
@click.option("--split", default="all", show_default=True,
              type=click.Choice(["dev", "test", "all"]),
              help="Draw claims, wrappers and templates from the development or test half.")
@click.option("--scale", default=1.0, show_default=True,
              help="1 gives ~24 thousand events for 'full', 10 ~360 thousand, 100 ~5 million.")
@click.option("--seed", default=7, show_default=True)
@click.option("--start-ms", type=int, default=None, help="Event time of the first event; "
              "defaults to now minus the preset's duration.")
def simulate(out_path: Path | None, to_kafka: bool, preset: str, split: Split, scale: float,
             seed: int, start_ms: int | None) -> None:
    """Generate realistic usage traffic with labelled misuse (streamed: any scale fits)."""
    from streams.runtime import clock
    from streams.tooling.simulation import Simulation, Traffic, plan_simulation, preset_options
    from streams.tooling.simulation.realtext import realtext_traffic
    from streams.tooling.simulation.world import world_traffic, write_classes

    if out_path is None and not to_kafka:
        raise click.UsageError("give --out FILE, --kafka, or both")
    classes: dict[str, str] = {}
    traffic: Traffic
    if preset in ("realtext", "world"):
        start = start_ms if start_ms is not None else clock.now_ms() - 3_600_000
        if preset == "world":
            world = world_traffic(seed, start, split, duration_s=3600)
            traffic, classes = world, world.classes
        else:
            traffic = realtext_traffic(seed, start, split, duration_s=3600)
        plan = Simulation(traffic.labels, iter(traffic.events))
    else:
        options = preset_options(preset, scale)
        start = start_ms if start_ms is not None else \
            clock.now_ms() - options["duration_s"] * 1000
        plan = plan_simulation(seed, start, split=split, **options)
    lines: Iterator[bytes] = (json.dumps(event).encode() for event in plan.events)
    with contextlib.ExitStack() as stack:
        if out_path is not None:
            labels_path = labels_path_for(out_path)
            labels_path.write_text("".join(json.dumps(label.to_dict()) + "\n"
                                           for label in plan.labels))
            click.echo(f"wrote {len(plan.labels)} labels to {labels_path}")
            classes_path_for(out_path).unlink(missing_ok=True)  # a stale one would mislead eval
            if classes:
                write_classes(classes_path_for(out_path), classes)
                click.echo(f"wrote {len(classes)} account classes to "
                           f"{classes_path_for(out_path)}")
            lines = written(lines, stack.enter_context(out_path.open("wb")))
        if to_kafka:
            from streams.tooling.produce import produce_lines

            settings = get_settings()
            count = produce_lines(settings, lines, settings.topic("api.usage"))
        else:
            count = sum(1 for _ in lines)
    click.echo(f"{count} events" + (f" to {out_path}" if out_path else "")
               + (" and to Kafka" if to_kafka else ""))


def written(lines: Iterable[bytes], sink: IO[bytes]) -> Iterator[bytes]:
    """The lines, each also written to `sink`: one pass over a simulation of any size."""
    for line in lines:
        sink.write(line + b"\n")
        yield line


def labels_path_for(events_path: Path) -> Path:
    return events_path.with_name(events_path.name.removesuffix(".jsonl") + ".labels.jsonl")


def classes_path_for(events_path: Path) -> Path:
    return events_path.with_name(events_path.name.removesuffix(".jsonl") + ".classes.jsonl")


ALLOWLIST_DAYS = 90


ACT_DECISIONS = ("approved", "rejected", "resume")  # read by the act stage
ALERT_DECISIONS = ("acknowledged", "closed")


@main.command()
@click.argument("account", required=False)
@click.option("--decision", required=True, type=click.Choice(
    ["cleared", "allowlisted", "unlisted", *ACT_DECISIONS, *ALERT_DECISIONS]),
              help="On an account: cleared (reviewed, not misuse), allowlisted (never flag, "
                   "until --until), unlisted (end an allowlisting); on the suspension "
                   "waiting for it (over the hourly cap or held by the circuit breaker): "
                   "approved, rejected; resume: automation after the breaker opened "
                   "(ACCOUNT: automation); on an alert (--alert): acknowledged, closed "
                   "(with --reason).")
@click.option("--alert", "alert_id", help="The alert the decision is on.")
@click.option("--reason", "close_reason", type=click.Choice(
    ["true_positive", "false_positive", "benign_positive", "duplicate"]),
              help="Why an alert is closed; a false positive stops feeding account risk.")
@click.option("--until", "until", type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S%z",
                                                                 "%Y-%m-%d"]),
              help="End of the allowlisting (UTC if no offset); 90 days from now if not given: "
                   "an allowlisting is reviewed again, never forever.")
@click.option("--analyst", required=True, help="Who decided, for the audit record.")
@click.option("--note", default="", help="Why.")
def review(account: str | None, decision: str, alert_id: str | None,
           close_reason: str | None, until: datetime | None, analyst: str, note: str) -> None:
    """Record an analyst's decision on an account, on the suspension waiting for it, or on
    an alert; the worker never overrides it."""
    from streams.runtime import clock
    from streams.runtime.messages import FeedbackRecord
    from streams.runtime.review import sign

    settings = get_settings()
    key = settings.review_keys.get(analyst)
    if key is None:
        raise click.ClickException(
            f"no review key for analyst {analyst!r}: decisions are signed, and the worker "
            "applies only those signed with a key in MISUSE_REVIEW_KEYS")
    now_ms = clock.now_ms()
    if decision in ALERT_DECISIONS:
        records = alert_decisions(alert_id, decision, close_reason, analyst, note, now_ms)
    elif account is None:
        raise click.UsageError(f"--decision {decision} is on an ACCOUNT")
    else:
        until_ms = None
        if until is not None:
            until_ms = int((until if until.tzinfo else until.replace(tzinfo=UTC))
                           .timestamp() * 1000)
        elif decision == "allowlisted":
            until_ms = now_ms + ALLOWLIST_DAYS * 86_400_000
        records = [FeedbackRecord(account_id=account, decision=decision, until_ms=until_ms,
                                  analyst=analyst, note=note, ts_ms=now_ms,
                                  decision_id=uuid.uuid4().hex)]
    send_decisions([sign(record, key) for record in records],
                   "misuse.account-actions" if decision in ACT_DECISIONS else "misuse.feedback")
    click.echo(f"{decision}: {alert_id or account} (by {analyst})")


def alert_decisions(alert_id: str | None, decision: str, close_reason: str | None,
                    analyst: str, note: str, now_ms: int) -> list[Any]:
    """The alert's status, written on its document, and a decision for each account it fed
    (or one without an account, for its page)."""
    from elasticsearch import Elasticsearch

    from streams.runtime.messages import FeedbackRecord
    from streams.runtime.review import AlertNotFoundError, mark_alert
    from streams.sinks.elasticsearch import client_options

    if alert_id is None:
        raise click.UsageError(f"--decision {decision} needs --alert ALERT_ID")
    if decision == "closed" and close_reason is None:
        raise click.UsageError("closing an alert needs --reason")
    settings = get_settings()
    try:
        accounts, group = mark_alert(Elasticsearch(**client_options(settings)), settings,
                                     alert_id, decision, close_reason or "", analyst, now_ms)
    except AlertNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    return [FeedbackRecord(account_id=account, decision=decision, analyst=analyst,
                           ts_ms=now_ms, note=note, alert_id=alert_id,
                           close_reason=close_reason or "",
                           page_group=group if n == 0 else "", decision_id=uuid.uuid4().hex)
            for n, account in enumerate(accounts or [""])]


def send_decisions(records: list[Any], topic: str) -> None:
    from streams.runtime.broker import producer, require_topics
    from streams.runtime.messages import feedback_batch

    settings = get_settings()
    require_topics(settings, [settings.topic(topic)])
    kafka = producer(settings)
    for record in records:
        kafka.send(settings.topic(topic), key=record.account_id.encode(),
                   value=feedback_batch([record]))
    kafka.flush()
    kafka.close()


@main.command(name="eval")
@click.argument("events", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Defaults to EVENTS with .labels.jsonl (as `misuse simulate` writes).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the results as JSON, to compare runs.")
@click.option("--keep", is_flag=True, help="Keep the run's indices in Elasticsearch.")
@click.option("--runs", default=1, show_default=True, type=click.IntRange(1, 5),
              help="Replay this many times; exit 1 unless every replay found the same "
                   "(accounts and risk scores, campaigns and members, alerts and evidence).")
def evaluate(events: Path, labels: Path | None, json_out: Path | None, keep: bool,
             runs: int) -> None:
    """Replay labelled events through the real pipeline and print precision, recall,
    campaigns found and detection delay per detector."""
    from streams.tooling.evaluation import format_table
    from streams.tooling.findings import differences
    from streams.tooling.replay import replay_and_evaluate

    classes = classes_path_for(events)
    result, findings = replay_and_evaluate(events, labels or labels_path_for(events), keep,
                                           classes if classes.is_file() else None)
    click.echo(format_table(result))
    if json_out is not None:
        json_out.write_text(json.dumps(result.to_dict(), indent=2))
        click.echo(f"results: {json_out}")
    differing = 0
    for run in range(2, runs + 1):
        _, again = replay_and_evaluate(events, labels or labels_path_for(events), keep,
                                       classes if classes.is_file() else None)
        lines = differences(findings, again)
        differing += bool(lines)
        click.echo(f"replay {run}: " + ("the same findings as replay 1" if not lines else
                                        "differs from replay 1 in:\n  " + "\n  ".join(lines)))
    if differing:
        raise SystemExit(1)


@main.command()
@click.option("--preset", default="full", show_default=True,
              type=click.Choice(["stuffing", "campaign", "attacks", "full"]))
@click.option("--seed", default=None, type=int, help="Defaults to a new seed each run.")
def demo(preset: str, seed: int | None) -> None:
    """Start the stack if needed, set up, run the worker on simulated traffic, and summarise."""
    from streams.tooling.demo import run_demo

    run_demo(preset, seed if seed is not None else int(time.time()))


DATE_FORMATS = ["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]


def time_range(start: datetime | None, end: datetime | None) -> tuple[int, int]:
    """(from, to) in epoch ms: UTC where no offset is given; to defaults to now and from to
    seven days before it."""
    def epoch_ms(moment: datetime) -> int:
        return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() * 1000)

    end_ms = epoch_ms(end) if end is not None else int(time.time() * 1000)
    start_ms = epoch_ms(start) if start is not None else end_ms - 7 * 86_400_000
    if start_ms >= end_ms:
        raise click.UsageError("--from must be before --to")
    return start_ms, end_ms


def range_options(command: Any) -> Any:
    command = click.option("--to", "end", type=click.DateTime(DATE_FORMATS),
                           help="End of the range (UTC if no offset); now if not given.")(command)
    return click.option("--from", "start", type=click.DateTime(DATE_FORMATS),
                        help="Start of the range (UTC if no offset); seven days before --to "
                             "if not given.")(command)


@main.group(name="export")
def export() -> None:
    """Share what was found with peers, in a standard format."""


@export.command(name="stix")
@range_options
@click.option("--out", "out_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path), help="The bundle's file.")
@click.option("--tlp", default="amber", show_default=True,
              type=click.Choice(["clear", "green", "amber", "amber+strict"]),
              help="The TLP 2.0 marking on every object: how far peers may pass it on.")
@click.option("--include-accounts", is_flag=True,
              help="Also the attacking accounts' ids (campaign members, sprayers, farms).")
@click.option("--producer", default="misuse-detector", show_default=True,
              help="The identity that creates every object (your team's name).")
def export_stix(start: datetime | None, end: datetime | None, out_path: Path, tlp: str,
                include_accounts: bool, producer: str) -> None:
    """A STIX 2.1 bundle of the range's campaigns and attacks, read from Elasticsearch:
    indicators of their networks, user agents and payload hashes (never prompt text, e-mail
    or a user's address), attack patterns with their MITRE references."""
    from elasticsearch import Elasticsearch

    from streams.sinks.elasticsearch import client_options
    from streams.tooling.sharing.files import write_bundle
    from streams.tooling.sharing.stix import ExportOptions

    start_ms, end_ms = time_range(start, end)
    settings = get_settings()
    counts = write_bundle(Elasticsearch(**client_options(settings)), settings, start_ms,
                          end_ms, out_path, ExportOptions(tlp, include_accounts, producer))
    click.echo(f"STIX bundle: {out_path} (" + ", ".join(
        f"{n} {kind}" for kind, n in sorted(counts.items())) + f"; TLP:{tlp.upper()})")


@main.command()
@range_options
@click.option("--out", "out_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="Folder for report.html and figures.json.")
def report(start: datetime | None, end: datetime | None, out_dir: Path) -> None:
    """A transparency report of the range, read from Elasticsearch: alerts, campaigns,
    accounts, suspensions, pages and detection delay, as one HTML page with its charts
    embedded, and the same figures as JSON."""
    from elasticsearch import Elasticsearch

    from streams.sinks.elasticsearch import client_options
    from streams.tooling.sharing.files import write_transparency_report

    start_ms, end_ms = time_range(start, end)
    settings = get_settings()
    page = write_transparency_report(Elasticsearch(**client_options(settings)), settings,
                                     start_ms, end_ms, out_dir)
    click.echo(f"report: {page} (figures: {out_dir / 'figures.json'})")


@main.group()
def kibana() -> None:
    """Kibana saved objects for analysts: data views, saved searches, the dashboard."""


@kibana.command(name="install")
@click.option("--url", required=True, envvar="MISUSE_KIBANA_URL",
              help="Kibana's base URL, e.g. http://127.0.0.1:5601.")
@click.option("--api-key", envvar="MISUSE_KIBANA_API_KEY", help="Kibana API key (encoded).")
@click.option("--user", envvar="MISUSE_KIBANA_USER", help="Basic auth, with --password.")
@click.option("--password", envvar="MISUSE_KIBANA_PASSWORD")
@click.option("--space", default=None, help="Kibana space; the default space if not given.")
@click.option("--file", "pack", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Saved objects to import; defaults to ops/kibana/misuse.ndjson.")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for Kibana.")
def install_kibana(url: str, api_key: str | None, user: str | None, password: str | None,
                   space: str | None, pack: Path | None, timeout: float) -> None:
    """Import the saved objects into Kibana (overwriting earlier versions of them)."""
    from streams.tooling import kibana as pack_installer

    try:
        result = pack_installer.install(
            url, index_prefix=get_settings().index_prefix, pack=pack or pack_installer.PACK_FILE,
            space=space, api_key=api_key, user=user, password=password, timeout=timeout)
    except pack_installer.KibanaImportError as exc:
        raise click.ClickException(str(exc)) from None
    for error in result.errors:
        click.echo(f"not imported: {error}", err=True)
    if not result.success:
        raise click.ClickException(f"import incomplete: {result.success_count} objects "
                                   f"imported, {len(result.errors)} refused")
    click.echo(f"imported {result.success_count} objects into Kibana at "
               f"{pack_installer.printable_url(url)}")


if __name__ == "__main__":
    main()
