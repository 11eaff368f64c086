"""Sinks own their batching, retries and failures (Quix Streams style: setup / write)."""
