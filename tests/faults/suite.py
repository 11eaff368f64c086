"""Every scenario against the same traffic, each compared with the baseline; one after the
other, or side by side (each run has its own worker, names and, for a service it stops, its
own stack)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams.runtime import clock
from tests.faults.compare import compare
from tests.faults.harness import FaultRun, RunResult
from tests.faults.scenarios import Scenario, scenarios
from tests.faults.stacks import OWN_STACK
from tests.faults.traffic import Message, simulated, storm

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SuiteOptions:
    scale: float = 0.5  # share of the full preset's hour (and of its benign accounts)
    rate: float = 400.0  # events offered per second
    es_down_seconds: float = 40.0
    kafka_down_seconds: float = 30.0
    storm_rounds: int = 10  # rounds of every crafted event, spread through the traffic
    only: tuple[str, ...] = ()  # scenario names to run (the baseline always runs)
    # How long a run may take to drain (or ingest to reach a step) before it counts as stalled.
    drain_timeout_seconds: float = 900.0
    # Runs going at once (each with a worker of its own; faults on the suite's own stack).
    side_by_side: int = 1


def run_suite(options: SuiteOptions, work_dir: Path,
              on_result: Callable[[RunResult], None] = lambda result: None
              ) -> tuple[list[RunResult], list[dict[str, Any]]]:
    # Two hours back: every event is in the past, none older than the detectors' windows.
    start_ms = clock.now_ms() - 2 * 3_600_000
    traffic = simulated(options.scale, start_ms)
    mixed, crafted_keys = storm(traffic, options.storm_rounds, start_ms + 3_600_000)
    chosen = [s for s in scenarios(options.es_down_seconds, options.kafka_down_seconds)
              if s.name == "baseline" or not options.only or s.name in options.only]
    own_stack = any(scenario.stopped for scenario in chosen)

    def inputs(scenario: Scenario) -> tuple[list[Message], list[str]]:
        return (mixed, crafted_keys) if scenario.storm else (traffic, [])

    if own_stack:
        OWN_STACK("up")
    try:
        with ThreadPoolExecutor(max_workers=options.side_by_side) as pool:
            runs = [pool.submit(run_one, scenario, *inputs(scenario), work_dir, options.rate,
                                options.drain_timeout_seconds) for scenario in chosen]
            for done in as_completed(runs):
                on_result(done.result())
            results = [run.result() for run in runs]  # in the scenarios' order
    finally:
        if own_stack:
            OWN_STACK("down")
    rows = [compare(results[0], result) for result in results[1:]]
    return results, rows


def run_one(scenario: Scenario, messages: Sequence[Message], crafted_keys: list[str],
            work_dir: Path, rate: float, drain_timeout_s: float) -> RunResult:
    run = FaultRun(scenario, list(messages), crafted_keys, work_dir, rate, drain_timeout_s)
    try:
        return run.run()
    finally:
        run.clean_up()
