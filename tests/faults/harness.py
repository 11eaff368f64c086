"""One fault run on the local stacks: a worker of its own (topics, indices, group, state), the
traffic offered at a steady rate, the fault's steps taken on the way (on the suite's own
stack, `tests/faults/stacks.py`), then the wait until everything is drained and Elasticsearch
has settled, and what the run left behind."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from elasticsearch import Elasticsearch
from kafka import KafkaProducer

from streams.runtime.broker import (
    connection_options,
    consumer_lag,
    group_offsets,
)
from streams.settings import CONSUMED_TOPICS, REPO_ROOT, Settings
from streams.sinks.elasticsearch import client_options
from streams.tooling.runner import WorkerError, WorkerProcess, isolated_environment, remove_run
from tests.faults.observe import Observation, fingerprint, observe
from tests.faults.scenarios import Scenario, Step
from tests.faults.stacks import OWN_STACK
from tests.faults.traffic import BROKER_MESSAGE_LIMIT, Message
from tests.faults.worker_log import loud_lines

log = logging.getLogger(__name__)
# Longer than the campaign stage's 5 s tick: a drained worker may still publish a campaign.
SETTLE_SECONDS = 7.0
# The worker of every test run (here and tests/integration). A killed worker's partitions go
# to its successor once the group gives up on it: 25 s here instead of Faust's 60 s, so that
# a kill costs less of a test run. Not less: with tests side by side on two cores, a starved
# worker missed 10 s of heartbeats, was put out of its group and read batches again.
# Production keeps 60 s.
WORKER_ENV = {"MISUSE_TOPIC_PARTITIONS": "3", "MISUSE_INDEX_BATCH_SECONDS": "0.5",
              "BROKER_SESSION_TIMEOUT": "25"}


@dataclass
class RunResult:
    scenario: str
    observation: Observation
    drain_seconds: float
    produced: int
    # Crafted messages Kafka itself refused to take (over its message size limit): they never
    # entered the pipeline, so no dead letter is owed for them.
    refused_by_kafka: list[str] = field(default_factory=list)
    crafted_keys: list[str] = field(default_factory=list)
    # The worker stopping on its own (not a kill of ours), with its reason.
    worker_exits: list[str] = field(default_factory=list)
    # The worker alive but not catching up (its lag stuck), with the partitions behind.
    stalls: list[str] = field(default_factory=list)
    # Per step of the fault: the worker's log records at WARNING or above (and tracebacks)
    # from the step until the next one, or until the run settled.
    log_lines: list[dict[str, int]] = field(default_factory=list)


class PacedProducer(threading.Thread):
    """Offers the messages at `rate` per second, as an API gateway would, and keeps going
    through a broker outage (its sends wait and retry)."""

    def __init__(self, settings: Settings, messages: list[Message], rate: float) -> None:
        super().__init__(daemon=True)
        self.settings, self.messages, self.rate = settings, messages, rate
        self.sent = 0
        self.failures: dict[str, str] = {}  # key of a message Kafka refused -> why
        self.finished_at: float | None = None

    def run(self) -> None:
        options = {**connection_options(self.settings), "max_request_size": 8 * 1024 * 1024}
        producer = KafkaProducer(**options, linger_ms=5, max_block_ms=300_000,
                                 delivery_timeout_ms=300_000, request_timeout_ms=30_000)
        # The broker's refusal of a message over its size limit is fatal to an idempotent
        # producer (every later batch is aborted too): such messages go through another one.
        oversize = KafkaProducer(**options, enable_idempotence=False, acks=1)
        topic = self.settings.topic("api.usage")
        pending = []
        began = time.monotonic()
        try:
            for index, message in enumerate(self.messages):
                delay = began + index / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                sender = oversize if message.size > BROKER_MESSAGE_LIMIT else producer
                pending.append((message, sender.send(topic, key=message.key,
                                                     value=message.value)))
                self.sent = index + 1
            producer.flush()
            oversize.flush()
            for message, future in pending:
                try:
                    future.get(timeout=300)
                except Exception as exc:  # the broker refused it: recorded, not raised
                    key = (message.key or b"").decode(errors="replace")
                    self.failures[key] = f"{type(exc).__name__}: {exc}"[:200]
        finally:
            producer.close()
            oversize.close()
            self.finished_at = time.monotonic()


class FaultRun:
    def __init__(self, scenario: Scenario, messages: list[Message], crafted_keys: list[str],
                 work_dir: Path, rate: float, drain_timeout_s: float = 900) -> None:
        self.scenario, self.messages, self.crafted_keys = scenario, messages, crafted_keys
        self.work_dir, self.rate, self.drain_timeout_s = work_dir, rate, drain_timeout_s
        slug = scenario.name.split()[0].lower()
        self.settings, self.env = isolated_environment(
            f"faults-{slug}", work_dir / "data", OWN_STACK.endpoints(scenario.stopped))
        self.env.update(WORKER_ENV)
        self.settings = self.settings.model_copy(update={"topic_partitions": 3})
        self.log_path = work_dir / f"worker-{slug}.log"
        self.worker = WorkerProcess(self.settings, self.log_path, self.env)
        self.exits: list[str] = []
        self.stalls: list[str] = []  # the worker alive but its lag not going down
        self.step_offsets: list[int] = []  # where the log was when each step began

    def run(self) -> RunResult:
        setup = subprocess.run([sys.executable, "-m", "streams.cli", "setup"], env=self.env,
                               cwd=REPO_ROOT, capture_output=True, text=True)
        if setup.returncode:
            raise RuntimeError(f"misuse setup failed: {setup.stdout}{setup.stderr}")
        self.worker.start()
        producer = PacedProducer(self.settings, self.messages, self.rate)
        producer.start()
        fault_end = 0.0
        try:
            for step in self.scenario.steps:
                self.wait_for(step, producer)
                self.take(step)
                fault_end = time.monotonic()
            producer.join()
            assert producer.finished_at is not None
            fault_end = max(fault_end, producer.finished_at)
            settled_at = self.wait_settled()
            observation = observe(self.settings)
            log_lines = self.log_lines_per_step()
        finally:
            self.worker.stop()
        return RunResult(self.scenario.name, observation, settled_at - fault_end,
                         producer.sent, sorted(producer.failures), self.crafted_keys,
                         self.exits, self.stalls, log_lines)

    def wait_for(self, step: Step, producer: PacedProducer) -> None:
        due = step.at * len(self.messages)
        if step.on == "produced":
            while producer.sent < due and producer.is_alive():
                time.sleep(0.05)
            return
        topic = self.settings.topic("api.usage")
        deadline = time.monotonic() + self.drain_timeout_s
        while group_offsets(self.settings, self.settings.app_id, [topic])[topic][0] < due:
            if time.monotonic() > deadline:
                self.stalls.append(f"ingest did not commit {step.at:.0%} of the traffic in "
                                   f"{self.drain_timeout_s:.0f} s: {self.worker.lag_report()}")
                return
            self.check_alive()
            time.sleep(0.2)

    def take(self, step: Step) -> None:
        log.info("fault scenario=%r step=%r", self.scenario.name, step)
        self.step_offsets.append(self.log_size())
        if step.action == "kill":
            self.restart_elsewhere(kill=True)
            return
        service = step.action.removeprefix("stop ")
        OWN_STACK("stop", service)
        time.sleep(step.seconds)
        OWN_STACK("start", service)
        self.check_alive()

    def restart_elsewhere(self, kill: bool) -> None:
        """SIGKILL (or find dead) the worker and start one with an empty data directory."""
        self.worker.stop(kill=kill)
        data_dir = self.work_dir / "data" / f"restart-{uuid.uuid4().hex[:6]}"
        self.worker = WorkerProcess(self.settings, self.log_path,
                                    dict(self.env, MISUSE_DATA_DIR=str(data_dir)))
        self.worker.start()

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_lines_per_step(self) -> list[dict[str, int]]:
        if not self.step_offsets:  # the baseline: no fault, no step
            return []
        ends = [*self.step_offsets[1:], self.log_size()]
        return [loud_lines(self.log_path, start, end)
                for start, end in zip(self.step_offsets, ends, strict=True)]

    def check_alive(self) -> None:
        """A worker that stopped on its own is a finding: it is noted, and a successor
        started, so that the run still shows what was lost."""
        if not self.worker.stopped():
            return
        process = self.worker.process
        tail = self.worker.log_tail(1500).replace("\n", " | ")
        self.exits.append(f"exit {process.poll() if process else '?'}: {tail[-600:]}")
        self.restart_elsewhere(kill=True)

    def wait_settled(self) -> float:
        """When every consumed topic was drained and Elasticsearch kept still for
        SETTLE_SECONDS after it: the time of the last look that changed nothing."""
        es = Elasticsearch(**client_options(self.settings))
        topics = [self.settings.topic(name) for name in CONSUMED_TOPICS]
        deadline = time.monotonic() + self.drain_timeout_s
        try:
            while True:
                try:
                    self.worker.wait_drained(max(1.0, deadline - time.monotonic()))
                except WorkerError:
                    if time.monotonic() > deadline:
                        self.stalls.append(f"not drained in {self.drain_timeout_s:.0f} s: "
                                           f"{self.worker.lag_report()}")
                        return time.monotonic()
                    self.check_alive()
                    continue
                before, looked_at = fingerprint(es, self.settings), time.monotonic()
                time.sleep(SETTLE_SECONDS)
                if consumer_lag(self.settings, self.settings.app_id, topics) == 0 \
                        and fingerprint(es, self.settings) == before:
                    return looked_at
        finally:
            es.close()

    def clean_up(self) -> None:
        """Indices, templates and topics of this run (the stacks are shared by every run)."""
        remove_run(self.settings)


def describe(result: RunResult) -> dict[str, Any]:
    return {"scenario": result.scenario, "produced": result.produced,
            "drain_seconds": round(result.drain_seconds, 1),
            "refused_by_kafka": result.refused_by_kafka, "worker_exits": result.worker_exits,
            "stalls": result.stalls, "log_lines": result.log_lines,
            **result.observation.to_json()}

