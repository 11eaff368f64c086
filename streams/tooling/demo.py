"""`misuse demo`: the whole pipeline on simulated traffic, then a summary of what it found."""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from pathlib import Path

import click
from elasticsearch import Elasticsearch

from detectors.network import network_range
from streams.runtime import clock
from streams.runtime.broker import create_topics
from streams.settings import REPO_ROOT, Settings, get_settings
from streams.sinks.elasticsearch import client_options, install_templates, search_sources
from streams.stages import changelog_topics
from streams.tooling.produce import produce_lines
from streams.tooling.progress import Progress
from streams.tooling.runner import WorkerProcess
from streams.tooling.sharing.files import write_bundle, write_transparency_report
from streams.tooling.sharing.stix import ExportOptions
from streams.tooling.simulation import Traffic, preset_options, simulate

WORKER_LOG = REPO_ROOT / ".stack" / "demo-worker.log"
SHARED = REPO_ROOT / ".stack" / "demo-share"


def ensure_stack() -> None:
    status = subprocess.run([REPO_ROOT / "ops" / "stack", "status"], capture_output=True)
    if status.returncode != 0:
        click.echo("starting the local stack (Kafka, Elasticsearch)…")
        subprocess.run([REPO_ROOT / "ops" / "stack", "up"], check=True)


def traffic_entities(traffic: Traffic) -> set[str]:
    """Everything this run's events name: earlier demos left their documents in the same
    indices, and the summary is about this run."""
    names: set[str] = set()
    for event in traffic.events:
        names.update(filter(None, (event.get("account_id"), event["api_key_id"], event["ip"],
                                   network_range(event["ip"]))))
    return names


def summarise(es: Elasticsearch, settings: Settings, traffic: Traffic, since_ms: int) -> None:
    es.indices.refresh(index=f"{settings.index_prefix}*")
    ours = traffic_entities(traffic)
    since = {"range": {"@timestamp": {"gte": since_ms}}}
    alerts = [a for a in search_sources(es, settings, "alerts", since)
              if a["misuse"]["entity"]["id"] in ours or set(a["misuse"]["accounts"]) & ours]
    click.echo(f"\nalerts: {len(alerts)}")
    for rule, count in Counter(a["rule"]["id"] for a in alerts).most_common():
        click.echo(f"  {rule:40s} {count}")
    click.echo("top alerts:")
    for alert in sorted(alerts, key=lambda a: -a["misuse"]["score"])[:8]:
        entity = alert["misuse"]["entity"]
        click.echo(f"  {alert['misuse']['severity']:6s} {entity['kind']:8s} {entity['id'][:24]:24s}"
                   f" {alert['misuse']['reasons'][0][:70]}")
    for campaign in search_sources(es, settings, "campaigns", since):
        misuse = campaign["misuse"]
        if misuse.get("status") != "active" or not set(misuse["accounts"]) & ours:
            continue
        click.echo(f"campaign {misuse['campaign_id']}: {misuse['account_count']} accounts, "
                   f"{misuse['size']} prompts, terms: {', '.join(misuse['label_terms'])}")
        click.echo(f"  sample: {misuse['sample_prompts'][0][:100]}")
    accounts = [a for a in search_sources(es, settings, "accounts", since)
                if a["user"]["id"] in ours]
    statuses = Counter(a["misuse"]["status"] for a in accounts)
    click.echo("accounts: " + (", ".join(f"{n} {s}" for s, n in statuses.items()) or "none"))
    misusers = {label.entity_id for label in traffic.labels}
    # The owner of a leaked key is rightly flagged for review: its key is being misused.
    misusers |= {e["account_id"] for e in traffic.events
                 if e["api_key_id"] in misusers and e.get("account_id")}
    found = {a["misuse"]["entity"]["id"] for a in alerts} | \
        {acct for a in alerts for acct in a["misuse"]["accounts"]}
    labelled = {label.entity_id for label in traffic.labels}
    click.echo(f"labelled misusing entities found: {len(found & labelled)} of {len(labelled)}; "
               f"accounts flagged that were not misusing: "
               f"{len({a['user']['id'] for a in accounts} - misusers)}")
    click.echo(f"browse: {settings.elasticsearch_address}/{settings.index('alerts')}/_search "
               f"(and {settings.index('campaigns')}, {settings.index('accounts')})")


def share(es: Elasticsearch, settings: Settings, start_ms: int, end_ms: int,
          out_dir: Path) -> tuple[Path, Path]:
    """What the team would share and publish about the run: the STIX bundle (TLP:AMBER, no
    account ids) and the transparency report, as `misuse export stix` and `misuse report`
    write them. Returns (bundle, report page)."""
    bundle = out_dir / "misuse-stix.json"
    counts = write_bundle(es, settings, start_ms, end_ms, bundle, ExportOptions())
    page = write_transparency_report(es, settings, start_ms, end_ms, out_dir / "report")
    click.echo(f"\nSTIX 2.1 bundle for peers ({counts['campaign']} campaigns, "
               f"{counts['indicator']} indicators, {counts['attack-pattern']} attack patterns; "
               f"TLP:AMBER): {bundle}")
    click.echo(f"transparency report: {page} (figures: {page.with_name('figures.json')})")
    return bundle, page


def run_demo(preset: str, seed: int) -> None:
    settings = get_settings()
    ensure_stack()
    create_topics(settings, changelog_topics(settings))
    es = Elasticsearch(**client_options(settings))
    install_templates(es, settings)
    options = preset_options(preset)
    started_ms = clock.now_ms() - options["duration_s"] * 1000
    traffic = simulate(seed, started_ms, **options)
    click.echo(f"simulated {len(traffic.events)} usage events ({preset} preset, seed {seed}), "
               f"{len(traffic.labels)} labelled misusing entities")
    produce_lines(settings, [json.dumps(e).encode() for e in traffic.events],
                  settings.topic("api.usage"))
    worker = WorkerProcess(settings, WORKER_LOG)
    # What is in the topic past the last commit: a stopped earlier demo may have left events.
    progress = Progress.of_worker(settings, worker.metrics_url)
    began = time.monotonic()
    try:  # a WorkerError is printed as one line by the CLI, with the log's path
        worker.start()
        worker.wait_drained(progress=progress)
        progress.finish()
        click.echo(f"worker processed the stream in {time.monotonic() - began:.1f} s "
                   f"(start and model load included); log: {WORKER_LOG}")
    finally:
        worker.stop()
    summarise(es, settings, traffic, started_ms)
    share(es, settings, started_ms, clock.now_ms(), SHARED)
