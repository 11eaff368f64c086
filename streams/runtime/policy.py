"""Loads ops/policy.yaml and reloads it when the file changes, without a restart.

A reload that fails validation is logged and refused: the policy in force stays. So does a
file that goes missing or cannot be read (a deploy half done, a permission changed): a warning
once, and the next version of the file that can be read is loaded.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import yaml

from detectors.policy import Policy, PolicyError, policy_from_dict
from streams.settings import get_settings

log = logging.getLogger(__name__)
# Checking the file's mtime on every batch would be a syscall per batch; once a second is plenty.
_CHECK_EVERY_SECONDS = 1.0


class PolicyFileUnreadableError(PolicyError):
    """The policy file is missing or cannot be read: not a policy to refuse, a file to wait for."""


def load_policy(path: Path) -> Policy:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyFileUnreadableError(
            f"cannot read policy file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise PolicyError(f"policy file {path} is not UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"policy file {path} is not valid YAML: {exc}") from None
    return policy_from_dict(data)


def _version(path: Path) -> tuple[int, int, int, int]:
    """What changes when the file is written, replaced or has its permissions changed (the
    change time), so that a file made readable again is read again."""
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_size


class PolicyFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.policy = load_policy(path)
        self._version: tuple[int, int, int, int] | None = _version(path)
        self._checked = time.monotonic()
        self._unreadable = False

    def current(self) -> Policy:
        now = time.monotonic()
        if now - self._checked < _CHECK_EVERY_SECONDS:
            return self.policy
        self._checked = now
        try:
            version = _version(self.path)
        except OSError as exc:
            self._version = None  # whatever comes back is read, even an identical file
            self._keep_running(os.strerror(exc.errno) if exc.errno else str(exc))
            return self.policy
        if version == self._version:
            return self.policy
        self._version = version
        try:
            self.policy = load_policy(self.path)
            log.info("policy_reloaded path=%s", self.path)
        except PolicyFileUnreadableError as exc:
            self._keep_running(str(exc))
            return self.policy
        except PolicyError as exc:
            log.error("policy_reload_refused path=%s error=%r", self.path, str(exc))
        self._unreadable = False
        return self.policy

    def _keep_running(self, reason: str) -> None:
        """Once per spell of a missing or unreadable file."""
        if not self._unreadable:
            log.warning("policy_file_unreadable path=%s error=%r keeping=running_policy",
                        self.path, reason)
        self._unreadable = True


_policy_file: PolicyFile | None = None


def current_policy() -> Policy:
    global _policy_file
    if _policy_file is None:
        _policy_file = PolicyFile(get_settings().policy_file)
    return _policy_file.current()
