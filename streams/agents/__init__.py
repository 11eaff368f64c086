"""One module per stage; importing this package registers every stage on the app, each run
by the same loop (`streams/stage_agent.py`), and the Elasticsearch indexer."""

from streams.agents import index_documents
from streams.agents.detect_campaigns import DetectCampaigns
from streams.agents.detect_network_abuse import NetworkAbuse
from streams.agents.detect_pattern_spread import PatternSpread
from streams.agents.embed_prompts import EmbedPrompts
from streams.agents.ingest import Ingest
from streams.agents.score_risk import RiskStage
from streams.stage_agent import register_stage

register_stage("ingest", ["api.usage"], Ingest, within=0.2)
register_stage("detect_network_abuse", ["misuse.events.by-network"], NetworkAbuse,
               within=0.2)
register_stage("embed_prompts", ["misuse.prompts"], EmbedPrompts, batch_size=8,
               within=1.0, blocking=True)
register_stage("detect_pattern_spread", ["misuse.jailbreak-matches"], PatternSpread,
               batch_size=100, within=1.0)
register_stage("detect_campaigns", ["misuse.prompt-vectors"], DetectCampaigns, within=1.0)
register_stage("score_risk", ["misuse.signals", "misuse.feedback"], RiskStage, within=0.5)

__all__ = ["index_documents"]
