"""The same events in any arrival order give the same alerts and the same account statuses.

The input is spread over six partitions by account, as the gateway's producer does, and the
stages before the embedding model (ingest, the network-range detectors, risk) run in process,
each time with another seeded interleaving of their partitions' batches (`InProcessPipeline`'s
`interleave`): what a worker's fetches do in a replay or a backlog. Ingest reads in event-time
order as in the worker (`streams/runtime/alignment.py`); without that, the same interleavings give
other incident ids, which the last test shows.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import replace

import pytest

from detectors.policy import Policy
from streams.runtime.driver import StageSpec
from streams.runtime.messages import AlertRecord, DocumentRecord
from streams.runtime.outbox import partition_for
from streams.stages import STAGES
from streams.tooling.inprocess import Collected, InProcessPipeline
from streams.tooling.simulation import preset_options, simulate

START_MS = 1_790_000_000_000
STAGE_NAMES = ("ingest", "detect_network_abuse", "score_risk")
INTERLEAVINGS = (1, 2, 3)


@pytest.fixture(scope="module")
def partitions() -> dict[int, list[bytes]]:
    """The full mix, by the partition its account's key goes to; events without an account
    (failed logins) go anywhere, as a keyless send does."""
    traffic = simulate(11, START_MS, **preset_options("full", 0.5))
    spread: dict[int, list[bytes]] = defaultdict(list)
    anywhere = random.Random(0)
    for event in traffic.events:
        account = event.get("account_id")
        partition = partition_for(account.encode(), 6) if account else anywhere.randrange(6)
        spread[partition].append(json.dumps(event).encode())
    return spread


def outcome(collected: Collected) -> tuple[set[tuple[str, str, str]], dict[str, str]]:
    """The alert ids (with rule and entity), and each account's status at the end."""
    alerts = {(r.alert.rule_id, r.alert.entity.id, r.alert.alert_id)
              for r in collected.records["misuse.alerts"] if isinstance(r, AlertRecord)}
    statuses = {r.id: r.source["misuse"]["status"] for r in collected.records["misuse.documents"]
                if isinstance(r, DocumentRecord) and r.index == "accounts"}
    return alerts, statuses


def run(partitions: dict[int, list[bytes]], specs: list[StageSpec], seed: int | None
        ) -> tuple[set[tuple[str, str, str]], dict[str, str]]:
    pipeline = InProcessPipeline(specs, Policy(), now_ms=lambda: START_MS + 10 ** 8)
    return outcome(pipeline.run("api.usage", partitions,
                                interleave=None if seed is None else random.Random(seed)))


def worker_stages() -> list[StageSpec]:
    return [spec for spec in STAGES if spec.stage.name in STAGE_NAMES]


def test_any_interleaving_of_the_partitions_gives_the_same_alerts_and_statuses(
        partitions: dict[int, list[bytes]]) -> None:
    in_order = run(partitions, worker_stages(), seed=None)
    alerts, statuses = in_order
    rules = {rule for rule, _, _ in alerts}
    # The mix's attacks that span many accounts or addresses, so many partitions, are found.
    assert {"credential_stuffing.key_enumeration", "sybil.shared_client"} <= rules
    assert "flagged" in statuses.values()
    for seed in INTERLEAVINGS:
        assert run(partitions, worker_stages(), seed) == in_order, f"interleaving {seed}"


def test_without_reading_in_event_time_order_the_same_interleavings_change_incident_ids(
        partitions: dict[int, list[bytes]]) -> None:
    """What the test above would catch: ingest reading its partitions as they come."""
    unordered = [replace(spec, align_seconds=None) for spec in worker_stages()]
    in_order_alerts, _ = run(partitions, unordered, seed=None)
    assert any(run(partitions, unordered, seed)[0] != in_order_alerts for seed in INTERLEAVINGS)
