"""The policy: thresholds, windows, severities and the actions each rule may trigger.

Validated here (pure: the caller reads the file), so a bad policy fails at start or at reload
with a message that names the field, and the running policy stays in force.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

Severity = Literal["low", "medium", "high", "critical"]
Action = Literal["none", "flag", "suspend"]


class PolicyError(ValueError):
    """The policy file is not valid; the message names the offending fields."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RulePolicy(_Strict):
    enabled: bool = True
    # Shadow mode: alerts are written, no action is taken.
    shadow: bool = False
    severity: Severity = "medium"
    action: Action = "none"


class CredentialStuffingPolicy(RulePolicy):
    severity: Severity = "high"
    window_seconds: int = Field(300, gt=0)
    min_distinct_keys: int = Field(20, ge=2)
    min_failure_ratio: float = Field(0.8, ge=0, le=1)


class Rules(_Strict):
    credential_stuffing: CredentialStuffingPolicy = CredentialStuffingPolicy()


class Automation(_Strict):
    # Automated suspension is off unless the policy turns it on.
    suspension_enabled: bool = False
    dry_run: bool = True
    max_suspensions_per_hour: int = Field(10, ge=0)


class Policy(_Strict):
    version: Literal[1] = 1
    rules: Rules = Rules()
    automation: Automation = Automation()


def policy_from_dict(data: Any) -> Policy:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PolicyError("the policy must be a mapping at the top level")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise PolicyError(f"invalid policy: {problems}") from None
