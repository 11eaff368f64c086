"""One module per stage; `STAGES` says where each runs. `build_app` makes the worker: the Faust
app with every stage run by the same loop (`streams/runtime/stage_agent.py`), and the sinks: the
Elasticsearch indexer and the deliverer of suspension requests and pages; and `/metrics`."""

from __future__ import annotations

from streams.runtime.app import create_app
from streams.runtime.driver import StageSpec
from streams.runtime.faust_wall import App, set_producer_buffer
from streams.runtime.metrics import register_lag_timer, register_metrics_page
from streams.runtime.outage import outages
from streams.runtime.stage_agent import Topics, register_stage
from streams.settings import Settings
from streams.sinks.deliver import register_deliverer
from streams.sinks.index_documents import register_indexer
from streams.stages.act import ActStage
from streams.stages.detect_campaigns import DetectCampaigns
from streams.stages.detect_network_abuse import NetworkAbuse
from streams.stages.detect_pattern_spread import PatternSpread
from streams.stages.embed_prompts import EmbedPrompts
from streams.stages.ingest import Ingest
from streams.stages.score_risk import RiskStage

STAGES = (
    # Aligned: the stages after it are keyed otherwise, and see its partitions interleaved.
    StageSpec(Ingest, ("api.usage",), within=0.2, align_seconds=5.0),
    # Aligned: a partition minutes behind the others in event time would have its ranges'
    # windows dropped as idle mid-attack (Housekeeping), splitting one incident into two
    # alerts; seen once in make test, on a busy machine.
    StageSpec(NetworkAbuse, ("misuse.events.by-network",), within=0.2, align_seconds=5.0),
    # Small batches: one blocking model step per loop turn stays short. Aligned: its output
    # is the campaign stage's single partition, judged as event time passes, and a partition
    # running minutes behind the others kept an operation's posts out of the windows judged
    # (first report on the real worker, world test half: Spanish 15.3 -> 8.1 min).
    StageSpec(EmbedPrompts, ("misuse.prompts",), batch_size=8, within=1.0, blocking=True,
              align_seconds=5.0),
    StageSpec(PatternSpread, ("misuse.jailbreak-matches",), batch_size=100, within=1.0),
    # Judging clusters takes up to a second: off the loop, where the other stages run.
    # A tick: the points of the last batch before the input pauses are judged without waiting
    # for more traffic.
    StageSpec(DetectCampaigns, ("misuse.prompt-vectors",), build=DetectCampaigns.restored,
              within=1.0, blocking=True, tick_seconds=5.0),
    StageSpec(RiskStage, ("misuse.signals", "misuse.feedback"), within=0.5),
    StageSpec(ActStage, ("misuse.account-actions",), within=0.5),
)


def changelog_topics(settings: Settings) -> dict[str, int]:
    """Every stage table's changelog topic (Faust names it `<app id>-<table>-changelog`) and
    its partitions: those of the topic the stage reads, as Faust requires."""
    return {f"{settings.app_id}-{table}-changelog": settings.partitions(spec.reads[0])
            for spec in STAGES for table in spec.stage.tables}


def build_app(settings: Settings) -> App:
    app = create_app(settings)
    # Table writes queue their changelog messages in the producer's buffer. Past
    # `max_messages` (100) Faust stalls every stream until the buffer ebbs, waiting a loop
    # turn per message sent: a batch's state write-back often passes 100 keys, and the stalls
    # (0.1-0.7 s each, hundreds a minute at half load) were most of the event-to-alert
    # latency. The buffer holds at most a few batches' write-backs either way.
    set_producer_buffer(app, 10_000)
    topics = Topics(app, settings)
    for spec in STAGES:
        register_stage(app, topics, spec)
    register_indexer(app, topics)
    register_deliverer(app, topics)
    register_metrics_page(app)
    register_lag_timer(app, settings)
    # An outage's summaries, and the end of one that ends by going quiet, need a clock.
    app.timer(5.0, name="report_outages")(_report_outages)
    return app


async def _report_outages() -> None:
    outages.tick()
