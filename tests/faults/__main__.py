"""`make faults`: every fault scenario on the local stack against a fault-free run of the same
traffic; prints the table and writes .bench/faults.json.

    FAULTS_SCALE (0.5: about 13 thousand events), FAULTS_RATE (400 events/s),
    FAULTS_ES_DOWN_SECONDS (40), FAULTS_KAFKA_DOWN_SECONDS (30), FAULTS_STORM_ROUNDS (10),
    FAULTS_ONLY (comma-separated scenario names; the baseline always runs),
    FAULTS_SIDE_BY_SIDE (1: runs going at once)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time

from streams.runtime import clock
from streams.settings import REPO_ROOT
from tests.bench.__main__ import commit
from tests.faults.compare import table
from tests.faults.harness import RunResult, describe
from tests.faults.suite import SuiteOptions, run_suite


def options_from_environment() -> SuiteOptions:
    env = os.environ
    only = tuple(n.strip() for n in env.get("FAULTS_ONLY", "").split(",") if n.strip())
    return SuiteOptions(scale=float(env.get("FAULTS_SCALE", "0.5")),
                        rate=float(env.get("FAULTS_RATE", "400")),
                        es_down_seconds=float(env.get("FAULTS_ES_DOWN_SECONDS", "40")),
                        kafka_down_seconds=float(env.get("FAULTS_KAFKA_DOWN_SECONDS", "30")),
                        storm_rounds=int(env.get("FAULTS_STORM_ROUNDS", "10")), only=only,
                        side_by_side=int(env.get("FAULTS_SIDE_BY_SIDE", "1")))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("kafka").setLevel(logging.WARNING)
    logging.getLogger("elastic_transport").setLevel(logging.WARNING)
    options = options_from_environment()
    work_dir = REPO_ROOT / ".bench" / "faults"
    began = time.monotonic()

    def progress(result: RunResult) -> None:
        print(f"  {result.scenario}: {result.produced} events, drained "
              f"{result.drain_seconds:.0f} s after the fault ({time.monotonic() - began:.0f} s "
              "in)", file=sys.stderr)

    results, rows = run_suite(options, work_dir, progress)
    print(f"\nfaults (scale {options.scale}, {results[0].produced} events at "
          f"{options.rate:.0f}/s; commit {commit()})\n")
    print(table(rows))
    for row in rows:
        problems = {k: row[k] for k in ("worker_exits", "stalls", "refused_by_kafka")
                    if row[k]}
        gaps = {k: v for k, v in row["dead_letters"].items() if v}
        if problems or gaps or row["unabsorbed"]:
            found = {**problems, **gaps, "unabsorbed": row["unabsorbed_details"]}
            print(f"\n{row['fault']}: {json.dumps(found)[:2000]}")
        if row["findings_differing"]:
            print(f"\n{row['fault']}, findings not the baseline's:\n  "
                  + "\n  ".join(row["findings_differing"][:12]))
    out = REPO_ROOT / ".bench" / "faults.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"commit": commit(), "at_ms": clock.now_ms(),
                               "options": dataclasses.asdict(options),
                               "runs": [describe(r) for r in results], "rows": rows},
                              indent=1, default=list))
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
