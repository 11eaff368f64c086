"""`make bench`: every figure measured in one run on the local stack, printed with the ratios,
and saved as JSON under .bench/ so runs can be compared across commits.

Benchmarks print; they never fail on time. The machine is small and noisy: compare ratios
measured in the same run, and medians over runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from elasticsearch import Elasticsearch

from streams.runtime import clock
from streams.runtime.broker import create_topics
from streams.settings import REPO_ROOT
from streams.sinks.elasticsearch import client_options, install_templates
from streams.stages import changelog_topics
from streams.tooling.runner import WorkerProcess, isolated_environment, remove_run
from streams.tooling.simulation import iter_simulate, preset_options, simulate
from tests.bench import pipeline, stages

SATURATION_SCALE = float(os.environ.get("BENCH_SCALE", "1.5"))
LATENCY_SECONDS = float(os.environ.get("BENCH_LATENCY_SECONDS", "75"))  # 100+ alerts
NAIVE_EVENTS = 300


def commit() -> str:
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=REPO_ROOT)
    return result.stdout.strip() or "unknown"


def show(title: str, figures: dict[str, Any]) -> None:
    print(f"\n{title}")
    for name, value in figures.items():
        if isinstance(value, float):
            value = f"{value:.3f}" if abs(value) < 10 else f"{value:,.1f}"
        elif isinstance(value, dict):
            continue
        print(f"  {name:32s} {value}")


def main() -> None:
    settings, env = isolated_environment("bench", REPO_ROOT / ".bench" / "worker")
    os.environ.update({k: v for k, v in env.items() if k.startswith("MISUSE_")})
    create_topics(settings, changelog_topics(settings))
    es = Elasticsearch(**client_options(settings))
    install_templates(es, settings)
    start_ms = clock.now_ms() - 6 * 3_600_000
    options = preset_options("full", SATURATION_SCALE)
    traffic = simulate(99, start_ms, **options)
    lines = [json.dumps(e).encode() for e in traffic.events]
    prompts = [e["prompt"] for e in traffic.events if e.get("prompt")]
    results: dict[str, Any] = {"commit": commit(), "at_ms": clock.now_ms(),
                               "events": len(lines), "preset": "full",
                               "scale": SATURATION_SCALE}
    try:
        results["consume_only"] = stages.consume_only(settings, lines)
        show("1. consume-only (kafka-python, decode JSON)", results["consume_only"])
        results["encode_only"] = stages.encode_only(settings, prompts[:1024])
        show("2. encode-only (each model, batch 64)", results["encode_only"])
        results["index_only"] = stages.index_only(settings, es)
        show("3. index-only (Elasticsearch bulk, alert documents)", results["index_only"])
        results["in_process"] = stages.stages_in_process(lines)
        show("   every stage in one process, no Kafka (seconds per stage)",
             results["in_process"])

        worker = WorkerProcess(settings, REPO_ROOT / ".bench" / "worker.log", env)
        worker.start()
        try:
            warm = [json.dumps(e).encode() for e in simulate(
                5, start_ms - 3_600_000, **preset_options("stuffing")).events[:500]]
            # Model loaded, tables created, caches warm.
            pipeline.saturation(worker, warm, show_progress=False)
            results["pipeline"] = pipeline.saturation(worker, lines)
            show("4a. full pipeline at saturation (all detectors on)", results["pipeline"])
            half = results["pipeline"]["events_per_s"] / 2
            fresh = pipeline.with_attacks(
                iter_simulate(123, clock.now_ms(), **preset_options("full", 20)),
                every=max(50, int(half / 2)))  # two bursts a second: 100+ alerts a minute
            results["latency"] = pipeline.latency(worker, fresh, half, LATENCY_SECONDS)
            show("4b. event-to-alert latency at half that load", results["latency"])
            results["worker_peak_rss_bytes"] = worker.peak_rss_bytes()
            second = worker.sibling(REPO_ROOT / ".bench" / "worker-2.log",
                                    REPO_ROOT / ".bench" / "worker" / f"{settings.app_id}-2")
            second.start()
            try:
                more = [json.dumps(e).encode() for e in simulate(
                    100, start_ms, **options).events]
                results["two_workers"] = pipeline.saturation(worker, more)
                show("4c. two workers on this machine at saturation (same group)",
                     results["two_workers"])
            finally:
                second.stop()
        finally:
            worker.stop()

        results["naive"] = stages.naive_pipeline(settings, es, traffic.events[:NAIVE_EVENTS])
        show("5. naive pipeline (full model per prompt, one index request per document)",
             results["naive"])
    finally:
        remove_run(settings)

    consume = results["consume_only"]["events_per_s"]
    full = results["pipeline"]["events_per_s"]
    results["ratios"] = {
        "two workers / one": results["two_workers"]["events_per_s"] / full,
        "pipeline / consume-only": full / consume,
        "pipeline / naive": full / results["naive"]["events_per_s"],
        "pipeline / in-process stages": full / results["in_process"]["events_per_s"],
        "embed stage full-model share": results["in_process"]["full_model_share"],
    }
    show("ratios (same run)", results["ratios"])
    print(f"  {'worker peak RSS':32s} {results['worker_peak_rss_bytes'] / 2**20:,.0f} MiB")
    out = REPO_ROOT / ".bench" / f"bench-{results['commit']}-{results['at_ms']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nresults: {out.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
