"""Test order for `make test`, which runs files side by side (pytest-xdist, one file per
process at a time, in this order: `--no-loadscope-reorder`, else xdist puts the files with
the most tests first): the files that take minutes go first, so that the many short ones fill
in around them instead of one long file starting last and running alone."""

from __future__ import annotations

import pytest

from streams.runtime.heap import settle_for_streaming

# Longest first (seconds each on two cores shared by three files: detection ~300, faults
# ~300, state ~250 over seven tests, scale-out ~200 in one test, the secured broker ~60, then
# act, policy reload and poison ~40-65). xdist gives a process another file while it has two
# tests or fewer left: the process running state's last tests takes scale-out, the next one
# free takes sharing and the short files, so no long file starts last and runs alone.
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
