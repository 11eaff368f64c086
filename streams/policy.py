"""Loads ops/policy.yaml and reloads it when the file changes, without a restart.

A reload that fails validation is logged and refused: the policy in force stays.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import yaml

from detectors.policy import Policy, PolicyError, policy_from_dict
from streams.settings import get_settings

log = logging.getLogger(__name__)
# Checking the file's mtime on every batch would be a syscall per batch; once a second is plenty.
_CHECK_EVERY_SECONDS = 1.0


def load_policy(path: Path) -> Policy:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"cannot read policy file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"policy file {path} is not valid YAML: {exc}") from None
    return policy_from_dict(data)


class PolicyFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.policy = load_policy(path)
        self._mtime = path.stat().st_mtime
        self._checked = time.monotonic()

    def current(self) -> Policy:
        now = time.monotonic()
        if now - self._checked < _CHECK_EVERY_SECONDS:
            return self.policy
        self._checked = now
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            return self.policy
        if mtime != self._mtime:
            self._mtime = mtime
            try:
                self.policy = load_policy(self.path)
                log.info("policy_reloaded path=%s", self.path)
            except PolicyError as exc:
                log.error("policy_reload_refused path=%s error=%r", self.path, str(exc))
        return self.policy


_policy_file: PolicyFile | None = None


def current_policy() -> Policy:
    global _policy_file
    if _policy_file is None:
        _policy_file = PolicyFile(get_settings().policy_file)
    return _policy_file.current()
