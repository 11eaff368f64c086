"""One module per stage; importing this package registers every agent on the app."""

from streams.agents import detect_network_abuse, index_alerts, ingest

__all__ = ["detect_network_abuse", "index_alerts", "ingest"]
