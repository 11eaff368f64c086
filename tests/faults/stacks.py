"""Where a fault run's Kafka and Elasticsearch are. A run whose fault stops a service gets that
service from the fault suite's own stack (ops/stack with a run folder and ports of its own)
and the other from the shared one: stopping Elasticsearch for one run then stops nothing
another run, or another test, is using, so the runs can go side by side."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

from streams.settings import REPO_ROOT

SERVICES = ("kafka", "elasticsearch")


@dataclass(frozen=True, slots=True)
class Stack:
    kafka_port: int
    elasticsearch_port: int
    controller_port: int
    run_folder: str

    @property
    def environment(self) -> dict[str, str]:
        """ops/stack's settings for this stack."""
        return {"MISUSE_STACK_DIR": self.run_folder, "MISUSE_KAFKA_PORT": str(self.kafka_port),
                "MISUSE_KAFKA_CONTROLLER_PORT": str(self.controller_port),
                "MISUSE_ES_PORT": str(self.elasticsearch_port)}

    def endpoints(self, services: set[str]) -> dict[str, str]:
        """The worker settings that point it at this stack's `services`."""
        found = {}
        if "kafka" in services:
            found["MISUSE_KAFKA_BOOTSTRAP"] = f"127.0.0.1:{self.kafka_port}"
        if "elasticsearch" in services:
            found["MISUSE_ELASTICSEARCH_URL"] = f"http://127.0.0.1:{self.elasticsearch_port}"
        return found

    def __call__(self, *command: str) -> None:
        """`ops/stack <command>` on this stack: up, down, stop <service>, start <service>."""
        result = subprocess.run([str(REPO_ROOT / "ops" / "stack"), *command],
                                env={**os.environ, **self.environment},
                                capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"ops/stack {' '.join(command)} ({self.run_folder}): "
                               f"{result.stdout}{result.stderr}")


# The suite's own stack: beside the shared one (9092, 9093, 9200), under the git-ignored .stack.
OWN_STACK = Stack(kafka_port=9192, elasticsearch_port=9201, controller_port=9193,
                  run_folder=str(REPO_ROOT / ".stack" / "faults"))
