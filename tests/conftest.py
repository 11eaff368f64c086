"""Test order for `make test`, which runs files side by side (pytest-xdist, one file per
process at a time): the files that take minutes go first, so that the many short ones fill in
around them instead of one long file starting last and running alone."""

from __future__ import annotations

import pytest

# Longest first (seconds each, measured alone on two cores: faults ~240 side by side, scale-out
# ~180, state ~150, detection ~130, act and policy reload ~60).
LONGEST = ("integration/test_faults.py", "integration/test_scale_out.py",
           "integration/test_state.py", "integration/test_detection.py",
           "integration/test_act.py", "integration/test_policy_reload.py")


def rank(item: pytest.Item) -> int:
    path = item.path.as_posix()
    return next((i for i, name in enumerate(LONGEST) if path.endswith(name)), len(LONGEST))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=rank)  # stable: within a file, and among the rest, the order stays
