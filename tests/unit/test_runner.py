"""The runner judges a worker by its own part of a log that earlier runs may share."""

import subprocess
from pathlib import Path

import pytest

from streams.runner import WorkerError, WorkerProcess
from streams.settings import Settings


def test_a_crash_of_an_earlier_run_in_a_shared_log_does_not_fail_this_run(tmp_path: Path):
    log = tmp_path / "worker.log"
    log.write_bytes(b"[earlier run] Crashed reason=KeyError('x')\n")
    worker = WorkerProcess(Settings(), log)
    worker.process = subprocess.Popen(["sleep", "30"])  # a running process standing in
    try:
        worker.log_offset = log.stat().st_size  # what start() records
        worker._wait(lambda: True, timeout_s=5, what="ready")  # not failed by the old crash
        with log.open("ab") as out:
            out.write(b"[this run] Crashed reason=ValueError('y')\n")
        with pytest.raises(WorkerError, match="a worker service crashed"):
            worker._wait(lambda: False, timeout_s=5, what="ready")
    finally:
        worker.stop(kill=True)
