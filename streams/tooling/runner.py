"""A `misuse worker` in a child process, for the demo, `misuse eval`, the benchmarks and the
integration tests: start it, wait until it is ready or has caught up, measure it, stop it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from elasticsearch import Elasticsearch
from kafka.errors import KafkaError

from streams.runtime.broker import admin_client, consumer_lag, partition_offsets
from streams.settings import CONSUMED_TOPICS, REPO_ROOT, Settings
from streams.sinks.elasticsearch import client_options
from streams.tooling.progress import PENDING_RECORDS, WORKER_CRASHES, WORKER_READY, worker_metric


class WorkerError(RuntimeError):
    """The worker exited, crashed an agent, or did not get there in time; the message ends
    with the tail of its log, which is at `log_path`."""

    def __init__(self, message: str, log_path: Path | None = None) -> None:
        super().__init__(message)
        self.log_path = log_path


class WorkerProcess:
    def __init__(self, settings: Settings, log_path: Path, env: dict[str, str] | None = None
                 ) -> None:
        self.settings = settings
        self.log_path = log_path
        self.env = dict(os.environ if env is None else env)
        self.process: subprocess.Popen[bytes] | None = None
        # Where this process's part of the log begins: a log shared with earlier runs must not
        # fail this one with their crashes.
        self.log_offset = 0

    def sibling(self, log_path: Path, data_dir: Path) -> WorkerProcess:
        """Another worker of the same consumer group on this machine: it shares the partitions
        with this one, with a state directory and a web port of its own."""
        env = dict(self.env, MISUSE_DATA_DIR=str(data_dir), MISUSE_WEB_PORT=str(free_port()))
        return WorkerProcess(self.settings, log_path, env)

    def start(self, timeout_s: float = 180) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"],
                                            env=self.env, cwd=REPO_ROOT, stdout=log,
                                            stderr=subprocess.STDOUT)
        try:
            self._wait(self.metric_ready, timeout_s, "ready")
        except WorkerError:
            self.stop(kill=True)
            raise

    @property
    def metrics_url(self) -> str:
        """The worker's /metrics: its web port is in its environment when it has one of its
        own (`isolated_environment`, `sibling`), else the settings'."""
        host = self.env.get("MISUSE_WEB_HOST", self.settings.web_host)
        port = self.env.get("MISUSE_WEB_PORT", str(self.settings.web_port))
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/metrics"

    def wait_drained(self, timeout_s: float = 900,
                     progress: Callable[[], None] | None = None) -> None:
        """Until the worker has committed every message of every topic it reads and holds
        nothing it has not acted on (its stages' pending records: points committed but not
        judged yet), twice in a row (a stage may still be sending when another has just
        caught up). `progress` is called on every poll (`streams.tooling.progress.Progress` prints
        every few seconds)."""
        topics = self.consumed_topics
        quiet = 0

        def drained() -> bool:
            nonlocal quiet
            if progress is not None:
                progress()
            try:
                lag = consumer_lag(self.settings, self.settings.app_id, topics)
            except (KafkaError, KeyError):
                # Right after the broker comes back, kafka-python's end_offsets can miss a
                # partition whose leader is not known yet (KeyError): not caught up, ask again.
                lag = None
            caught_up = lag == 0 and worker_metric(self.metrics_url, PENDING_RECORDS) == 0
            quiet = quiet + 1 if caught_up else 0
            return quiet >= 2

        self._wait(drained, timeout_s, "caught up", poll_s=1.0, detail=self.lag_report)

    @property
    def consumed_topics(self) -> list[str]:
        return [self.settings.topic(name) for name in CONSUMED_TOPICS]

    def lag_report(self) -> str:
        """What the worker has not finished: the partitions with uncommitted messages
        (committed/end offsets) and its stages' pending records."""
        try:
            offsets = partition_offsets(self.settings, self.settings.app_id,
                                        self.consumed_topics)
        except (KafkaError, KeyError) as exc:
            return f"offsets not known ({exc!r})"
        behind = sorted(f"{tp.topic.removeprefix(self.settings.topic_prefix)}[{tp.partition}] "
                        f"{committed}/{end}"
                        for tp, (committed, end) in offsets.items() if committed < end)
        pending = worker_metric(self.metrics_url, PENDING_RECORDS)
        return f"{', '.join(behind) or 'no lag'}; pending records {pending}"

    def peak_rss_bytes(self) -> int:
        """The worker's peak resident memory so far (Linux VmHWM)."""
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def stopped(self) -> bool:
        """The process ended, or one of its services crashed (Faust may keep the process of a
        crashed worker alive)."""
        return self.process is None or self.process.poll() is not None or self.crashed()

    def metric_ready(self) -> bool:
        """Up, its tables recovered, as the worker itself says on /metrics."""
        return worker_metric(self.metrics_url, WORKER_READY) == 1

    def crashed(self) -> bool:
        """One of its services crashed, as the worker itself counts on /metrics."""
        return bool(worker_metric(self.metrics_url, WORKER_CRASHES, "_total"))

    def log_tail(self, chars: int = 4000) -> str:
        return self._log_bytes()[-chars:].decode("utf-8", errors="replace")

    def _log_bytes(self) -> bytes:
        """This process's part of the log."""
        with self.log_path.open("rb") as log:
            log.seek(self.log_offset)
            return log.read()

    def crash_reason(self) -> str:
        """The first crash in this run's log, on one line, with the fix where one is known."""
        line = next((line for line in self._log_bytes().splitlines()
                     if b"Crashed reason" in line), b"(no reason in the log)")
        reason = " ".join(line.split(b"Crashed reason=", 1)[-1].decode(errors="replace")
                          .replace("\\n", " ").split())[:300]
        if "ConsistencyError" in reason:
            reason += (f": the worker's local state is ahead of Kafka, whose topics were reset; "
                       f"remove {self.env.get('MISUSE_DATA_DIR', self.settings.data_dir)} "
                       "and start again")
        return reason

    def _wait(self, condition: Callable[[], bool], timeout_s: float, what: str,
              poll_s: float = 0.5, detail: Callable[[], str] | None = None) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process is None or self.process.poll() is not None:
                raise WorkerError(f"the worker exited before it was {what}:\n{self.log_tail()}",
                                  self.log_path)
            if self.crashed():
                raise WorkerError(f"a worker service crashed: {self.crash_reason()}\n"
                                  f"{self.log_tail()}", self.log_path)
            if condition():
                return
            if time.monotonic() > deadline:
                found = f" ({detail()})" if detail else ""
                raise WorkerError(f"the worker was not {what} in {timeout_s:.0f} s{found}; log "
                                  f"{self.log_path}:\n{self.log_tail()}", self.log_path)
            time.sleep(poll_s)


def isolated_environment(run_name: str, data_root: Path,
                         settings: Mapping[str, str] | None = None
                         ) -> tuple[Settings, dict[str, str]]:
    """Settings and a child environment with topics, indices, consumer group and state of
    their own, so an evaluation or a benchmark leaves the production names alone. `settings`:
    more `MISUSE_` variables for both (another broker, say)."""
    run = f"{run_name}-{uuid.uuid4().hex[:8]}"
    overrides = {"MISUSE_TOPIC_PREFIX": f"{run}.", "MISUSE_INDEX_PREFIX": f"misuse-{run}-",
                 "MISUSE_APP_ID": f"misuse-{run}", "MISUSE_DATA_DIR": str(data_root / run),
                 "MISUSE_WEB_PORT": str(free_port()), **(settings or {})}
    fields = {k.removeprefix("MISUSE_").lower(): v for k, v in overrides.items()}
    return Settings.model_validate(fields), dict(os.environ, **overrides)


def remove_run(settings: Settings) -> None:
    """Everything an isolated run made on the stack: its indices and index templates, and its
    topics and changelogs. Left behind, every run's topics stay in the broker's metadata,
    which each worker decodes whole when it starts: with four thousand leftover topics a
    worker took 11 s of CPU to start, 6 s on a clean broker."""
    es = Elasticsearch(**client_options(settings))
    try:
        es.indices.delete(index=f"{settings.index_prefix}*", ignore_unavailable=True)
        # 404 when there are none (a run that never got as far as `misuse setup`).
        templates = es.options(ignore_status=404).indices.get_index_template(
            name=f"{settings.index_prefix}*")
        for template in templates.get("index_templates", []):
            es.indices.delete_index_template(name=template["name"])
    finally:
        es.close()
    admin = admin_client(settings)
    try:
        ours = [t for t in admin.list_topics()
                if t.startswith((settings.topic_prefix, settings.app_id))]
        if ours:
            admin.delete_topics(ours)
    finally:
        admin.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
