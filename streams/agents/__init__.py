"""One module per stage; importing this package registers every agent on the app."""

from streams.agents import (
    detect_campaigns,
    detect_network_abuse,
    detect_pattern_spread,
    embed_prompts,
    index_documents,
    ingest,
    score_risk,
)

__all__ = ["detect_campaigns", "detect_network_abuse", "detect_pattern_spread", "embed_prompts",
           "index_documents", "ingest", "score_risk"]
