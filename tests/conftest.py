"""Test order for `make test`, which runs files side by side (pytest-xdist, one file per
process at a time, in this order: `--no-loadscope-reorder`, else xdist puts the files with
the most tests first): the files that take minutes go first, so that the many short ones fill
in around them instead of one long file starting last and running alone."""

from __future__ import annotations

import pytest

from streams.runtime.heap import settle_for_streaming

# Longest first (seconds each on two cores shared by four files: faults ~330, detection
# ~320, scale-out ~310 in one test, state ~310 over seven tests, the secured broker ~100, then
# first hour, policy reload and act ~70-100). The four longest start together, one per
# process; the others fill in around them as they end, so no long file starts last and runs
# alone (measured: the four processes ended within 10 s of each other).
LONGEST = ("integration/test_detection.py", "integration/test_faults.py",
           "integration/test_state.py", "integration/test_scale_out.py",
           "integration/test_sharing.py", "integration/test_secure_broker.py",
           "integration/test_act.py", "integration/test_policy_reload.py",
           "integration/test_poison.py", "integration/test_first_hour.py")


def rank(item: pytest.Item) -> int:
    path = item.path.as_posix()
    return next((i for i, name in enumerate(LONGEST) if path.endswith(name)), len(LONGEST))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=rank)  # stable: within a file, and among the rest, the order stays


def pytest_sessionstart(session: pytest.Session) -> None:
    """The stages run in process in many tests: with the worker's collector settings, as in
    the worker (the unit tests, three processes: 179 -> 159 s of CPU)."""
    settle_for_streaming()
