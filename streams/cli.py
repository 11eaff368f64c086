"""The `misuse` command: setup, worker, produce, simulate, demo."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from streams.settings import get_settings


@click.group()
def main() -> None:
    """misuse-detector: finds misuse of a language-model API in its usage events."""


@main.command()
def setup() -> None:
    """Create the topics and install the index templates (idempotent)."""
    from elasticsearch import Elasticsearch

    from streams.broker import create_topics
    from streams.sinks.elasticsearch import client_options, install_templates

    settings = get_settings()
    created = create_topics(settings)
    click.echo(f"topics: {len(created)} created" + (f" ({', '.join(created)})" if created else ""))
    client = Elasticsearch(**client_options(settings))
    installed = install_templates(client, settings)
    click.echo(f"index templates: {', '.join(installed)}")


@main.command()
@click.option("--loglevel", default="info", show_default=True)
def worker(loglevel: str) -> None:
    """Run the stream worker (all stages) until stopped."""
    from faust.worker import Worker

    from streams import agents  # noqa: F401  (registers the agents)
    from streams.app import app
    from streams.policy import current_policy

    current_policy()  # an invalid policy stops the worker here, with the reason
    check_elasticsearch_templates()
    Worker(app, loglevel=loglevel).execute_from_commandline()


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
        click.echo(f"warning: Elasticsearch at {settings.elasticsearch_url} is not reachable "
                   f"({exc.__class__.__name__}); alerts wait in Kafka until it is", err=True)
    except TemplatesMissingError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--topic", default=None, help="Defaults to the usage topic (api.usage).")
def produce(path: Path, topic: str | None) -> None:
    """Replay a JSONL file of usage events into Kafka, keyed by account."""
    from streams.broker import produce_lines

    settings = get_settings()
    count = produce_lines(settings, path.read_bytes().splitlines(),
                          settings.topic("api.usage") if topic is None else topic)
    click.echo(f"produced {count} events from {path}")


@main.command()
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write events to this JSONL file (labels beside it as *.labels.jsonl).")
@click.option("--kafka", "to_kafka", is_flag=True, help="Send the events to the usage topic.")
@click.option("--seed", default=7, show_default=True)
@click.option("--accounts", default=300, show_default=True, help="Benign accounts.")
@click.option("--duration", default=1800, show_default=True, help="Event-time span, seconds.")
@click.option("--start-ms", type=int, default=None, help="Event time of the first event; "
              "defaults to now minus the duration.")
def simulate(out_path: Path | None, to_kafka: bool, seed: int, accounts: int, duration: int,
             start_ms: int | None) -> None:
    """Generate realistic usage traffic with labelled misuse."""
    from streams import clock
    from streams.simulation import simulate as run_simulation

    if out_path is None and not to_kafka:
        raise click.UsageError("give --out FILE, --kafka, or both")
    start = start_ms if start_ms is not None else clock.now_ms() - duration * 1000
    traffic = run_simulation(seed, start, duration, accounts)
    lines = [json.dumps(event).encode() for event in traffic.events]
    if out_path is not None:
        out_path.write_bytes(b"\n".join(lines) + b"\n")
        labels_path = labels_path_for(out_path)
        labels_path.write_text("".join(json.dumps(label.to_dict()) + "\n"
                                       for label in traffic.labels))
        click.echo(f"wrote {len(lines)} events to {out_path}, "
                   f"{len(traffic.labels)} labels to {labels_path}")
    if to_kafka:
        from streams.broker import produce_lines

        settings = get_settings()
        count = produce_lines(settings, lines, settings.topic("api.usage"))
        click.echo(f"produced {count} events")


def labels_path_for(events_path: Path) -> Path:
    return events_path.with_name(events_path.name.removesuffix(".jsonl") + ".labels.jsonl")


@main.command()
@click.option("--accounts", default=300, show_default=True, help="Benign accounts.")
@click.option("--duration", default=1800, show_default=True, help="Event-time span, seconds.")
@click.option("--seed", default=None, type=int, help="Defaults to a new seed each run.")
def demo(accounts: int, duration: int, seed: int | None) -> None:
    """Start the stack if needed, set up, run the worker on simulated traffic, and summarise."""
    from streams.demo import run_demo

    run_demo(accounts=accounts, duration_s=duration,
             seed=seed if seed is not None else int(time.time()))


if __name__ == "__main__":
    main()
