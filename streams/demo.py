"""`misuse demo`: the whole pipeline on simulated traffic, then a summary of what it found."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import click
from elasticsearch import Elasticsearch

from streams import clock
from streams.broker import consumer_lag, create_topics, produce_lines
from streams.settings import CONSUMED_TOPICS, REPO_ROOT, Settings, get_settings
from streams.simulation import Traffic, simulate
from streams.sinks.elasticsearch import client_options, install_templates



def ensure_stack() -> None:
    status = subprocess.run([REPO_ROOT / "ops" / "stack", "status"], capture_output=True)
    if status.returncode != 0:
        click.echo("starting the local stack (Kafka, Elasticsearch)…")
        subprocess.run([REPO_ROOT / "ops" / "stack", "up"], check=True)


def start_worker(settings: Settings) -> subprocess.Popen[bytes]:
    log_path = REPO_ROOT / ".stack" / "demo-worker.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        return subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"],
                                stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)


def wait_until_drained(settings: Settings, worker: subprocess.Popen[bytes],
                       timeout_s: float = 300) -> None:
    """Until the worker has committed everything on every pipeline topic, twice in a row."""
    topics = [settings.topic(name) for name in CONSUMED_TOPICS]
    deadline = time.monotonic() + timeout_s
    quiet = 0
    while quiet < 2:
        if worker.poll() is not None:
            raise click.ClickException("the worker stopped; see .stack/demo-worker.log")
        if time.monotonic() > deadline:
            raise click.ClickException("the worker did not catch up in time; "
                                       "see .stack/demo-worker.log")
        time.sleep(2)
        quiet = quiet + 1 if consumer_lag(settings, settings.app_id, topics) == 0 else 0


def summarise(es: Elasticsearch, settings: Settings, traffic: Traffic, since_ms: int) -> None:
    es.indices.refresh(index=settings.index("alerts"))
    hits = es.search(index=settings.index("alerts"), size=1000,
                     query={"range": {"misuse.incident_start": {"gte": since_ms}}},
                     sort=[{"misuse.score": "desc"}])["hits"]["hits"]
    alerts: list[dict[str, Any]] = [hit["_source"] for hit in hits]
    click.echo(f"\nalerts: {len(alerts)}")
    for rule, count in Counter(a["rule"]["id"] for a in alerts).most_common():
        click.echo(f"  {rule:45s} {count}")
    click.echo("top entities:")
    for alert in alerts[:10]:
        entity = alert["misuse"]["entity"]
        click.echo(f"  {entity['kind']:8s} {entity['id']:24s} {alert['misuse']['severity']:8s} "
                   f"score {alert['misuse']['score']:.2f}  {alert['misuse']['reasons'][0]}")
    found = {(a["misuse"]["entity"]["kind"], a["misuse"]["entity"]["id"]) for a in alerts}
    labelled = {(label.entity_kind, label.entity_id) for label in traffic.labels}
    click.echo(f"labelled misuse found: {len(found & labelled)} of {len(labelled)}; "
               f"alerts on unlabelled entities: {len(found - labelled)}")
    click.echo(f"browse them: {settings.elasticsearch_url}/{settings.index('alerts')}/_search")


def run_demo(accounts: int, duration_s: int, seed: int) -> None:
    settings = get_settings()
    ensure_stack()
    create_topics(settings)
    es = Elasticsearch(**client_options(settings))
    install_templates(es, settings)
    started_ms = clock.now_ms() - duration_s * 1000
    traffic = simulate(seed, started_ms, duration_s, accounts, stuffing_attacks=2)
    click.echo(f"simulated {len(traffic.events)} usage events from {accounts} benign accounts "
               f"and {len(traffic.labels)} labelled attackers (seed {seed})")
    produce_lines(settings, [json.dumps(e).encode() for e in traffic.events],
                  settings.topic("api.usage"))
    worker = start_worker(settings)
    try:
        began = time.monotonic()
        wait_until_drained(settings, worker)
        click.echo(f"worker processed the stream in {time.monotonic() - began:.1f} s")
    finally:
        worker.terminate()
        worker.wait(timeout=60)
    summarise(es, settings, traffic, started_ms)
