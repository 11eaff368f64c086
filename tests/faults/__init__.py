"""The fault suite (issue 10): the worker on the real local stack, run once without a fault and
once per fault (Elasticsearch down, the broker down, the worker SIGKILLed three times, a storm
of crafted events), each against the same traffic, compared by every event id on every
internal topic, the alert, account and campaign documents, and the dead letters.
`python -m tests.faults` (`make faults`) prints the table; tests/integration/test_faults.py
runs a smaller one and asserts on it. Definitions of lost, duplicated and unabsorbed are in
tests/faults/compare.py."""
