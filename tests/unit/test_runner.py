"""The runner learns readiness and crashes from the worker's own /metrics, never its log
(streams/tooling/runner.py); a small HTTP server stands in for the worker's web port."""

import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from streams.settings import Settings
from streams.tooling.runner import WorkerError, WorkerProcess


class Served:
    """What the stand-in's /metrics says, changeable while it serves."""

    text = ""


@pytest.fixture
def metrics() -> Iterator[tuple[Served, int]]:
    served = Served()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = served.text.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield served, server.server_address[1]
    finally:
        server.shutdown()


def ready(value: int, crashes: int = 0) -> str:
    """What a worker serves, written by prometheus_client as the worker's registry is."""
    registry = CollectorRegistry()
    Gauge("misuse_worker_ready", "ready", registry=registry).set(value)
    counter = Counter("misuse_worker_crashes", "crashes", ["service"], registry=registry)
    if crashes:
        counter.labels("faust.agents").inc(crashes)
    return generate_latest(registry).decode()


def running_worker(tmp_path: Path, port: int) -> WorkerProcess:
    worker = WorkerProcess(Settings(), tmp_path / "worker.log",
                           env={"MISUSE_WEB_HOST": "127.0.0.1", "MISUSE_WEB_PORT": str(port)})
    worker.process = subprocess.Popen(["sleep", "30"])  # a running process standing in
    return worker


def test_ready_is_what_the_worker_says_on_its_metrics(metrics, tmp_path: Path) -> None:
    served, port = metrics
    worker = running_worker(tmp_path, port)
    try:
        # A log saying "Ready" or "Crashed" means nothing: only the worker's own word does.
        (tmp_path / "worker.log").write_bytes(b"[^Worker]: Ready\nCrashed reason=KeyError()\n")
        served.text = ready(0)
        assert not worker.crashed() and not worker.stopped()
        with pytest.raises(WorkerError, match="not ready in"):
            worker._wait(lambda: worker.metric_ready(), timeout_s=1, what="ready")
        served.text = ready(1)
        worker._wait(lambda: worker.metric_ready(), timeout_s=5, what="ready")
    finally:
        worker.stop(kill=True)


def test_a_crashed_service_fails_the_wait_though_the_process_lives(metrics, tmp_path: Path
                                                                   ) -> None:
    served, port = metrics
    worker = running_worker(tmp_path, port)
    try:
        (tmp_path / "worker.log").write_bytes(b"Crashed reason=ValueError('y')\n")
        served.text = ready(1, crashes=1)
        assert worker.crashed() and worker.stopped()
        with pytest.raises(WorkerError, match=r"a worker service crashed: ValueError\('y'\)"):
            worker._wait(lambda: False, timeout_s=5, what="caught up")
    finally:
        worker.stop(kill=True)


def test_a_worker_whose_web_port_is_not_up_has_not_crashed(tmp_path: Path) -> None:
    worker = running_worker(tmp_path, port=9)  # discard: nothing listens
    try:
        assert not worker.crashed() and not worker.metric_ready()
    finally:
        worker.stop(kill=True)
