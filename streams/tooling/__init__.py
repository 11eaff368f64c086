"""Tools around the worker, never imported by it: the traffic simulator, evaluation, the
in-process runner, the demo, replay, progress, the worker runner the tests and tools start
workers with, doctor, the Kibana pack installer, friendly errors and event-line checks."""
