"""The faults, as steps taken when a share of the traffic has been produced."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Step:
    at: float  # share of the traffic produced (or ingested) when the step begins
    action: str  # "stop elasticsearch", "stop kafka" (for `seconds`, then back) or "kill"
    seconds: float = 0.0
    # "produced": offered to api.usage; "ingested": committed by the ingest stage, so that a
    # kill lands while the worker works (not while its predecessor's successor recovers).
    on: str = "produced"


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    steps: tuple[Step, ...] = ()
    storm: bool = False  # the traffic mixed with crafted bad events

    @property
    def stopped(self) -> set[str]:
        """The services its steps stop: the run takes them from the suite's own stack."""
        return {step.action.removeprefix("stop ") for step in self.steps
                if step.action.startswith("stop ")}


def scenarios(es_down_s: float, kafka_down_s: float) -> tuple[Scenario, ...]:
    return (
        Scenario("baseline"),
        Scenario("elasticsearch down", (Step(0.3, "stop elasticsearch", es_down_s),)),
        Scenario("broker down", (Step(0.3, "stop kafka", kafka_down_s),)),
        # Early (state barely built), mid-stream (every stage busy) and once ingest has read
        # everything (the embedding and campaign stages still draining); each successor
        # starts with an empty data directory, as on another machine: its state comes from
        # the changelogs.
        Scenario("worker SIGKILL x3", (Step(0.15, "kill", on="ingested"),
                                       Step(0.55, "kill", on="ingested"),
                                       Step(1.0, "kill", on="ingested"))),
        Scenario("crafted-event storm", storm=True),
        # No fault: the same input must give the same findings (evidence, risk scores), not
        # only the same ids.
        Scenario("fault-free again"),
    )
