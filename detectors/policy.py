"""The policy: thresholds, windows, severities and the actions each rule may trigger.

Validated here (pure: the caller reads the file), so a bad policy fails at start or at reload
with a message that names the field, and the running policy stays in force.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

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
    action: Action = "flag"
    # The fields the stage running the detector applies (the rest are the detector's own).
    STAGE_FIELDS: ClassVar[frozenset[str]] = frozenset({"enabled", "shadow", "action"})

    def detector_params(self) -> dict[str, Any]:
        """The detector's constructor arguments: the policy says seconds, detectors take ms.
        Every one must be taken (`streams/runtime/rules.py`): none is dropped silently."""
        params: dict[str, Any] = {}
        for name, value in self.model_dump(exclude=set(self.STAGE_FIELDS)).items():
            if name.endswith("_seconds"):
                params[name.removesuffix("_seconds") + "_ms"] = int(value * 1000)
            else:
                params[name] = value
        return params


class CredentialStuffingPolicy(RulePolicy):
    severity: Severity = "high"
    window_seconds: int = Field(300, gt=0)
    min_distinct_keys: int = Field(20, ge=2)
    min_failure_ratio: float = Field(0.8, ge=0, le=1)


class LeakedKeyPolicy(RulePolicy):
    severity: Severity = "high"
    window_seconds: int = Field(600, gt=0)
    min_networks: int = Field(8, ge=2)
    factor: float = Field(4.0, ge=1)
    min_user_agents: int = Field(3, ge=1)
    many_networks: int = Field(40, ge=2)


class JailbreakPolicy(RulePolicy):
    severity: Severity = "high"
    window_seconds: int = Field(600, gt=0)
    similarity_threshold: float = Field(0.75, gt=0, le=1)
    min_matches: int = Field(5, ge=1)
    max_interval_cv: float = Field(0.35, ge=0)
    min_flag_share: float = Field(0.6, ge=0, le=1)
    # Dozens of flagged prompts within the window are a spray whatever their share.
    min_flagged_prompts: int = Field(20, ge=1)
    # Evidence accumulated over hours, halving every half-life: a slow sprayer is found when
    # it reaches the score, with enough of it from prompts with a jailbreak signal.
    half_life_seconds: int = Field(7200, gt=0)
    min_decayed_score: float = Field(10.0, gt=0)
    min_signal_prompts: float = Field(3.0, ge=0)


class JailbreakSpreadPolicy(RulePolicy):
    severity: Severity = "high"
    window_seconds: int = Field(3600, gt=0)
    similarity_threshold: float = Field(0.75, gt=0, le=1)
    min_accounts: int = Field(5, ge=2)


class ScrapingPolicy(RulePolicy):
    window_seconds: int = Field(600, gt=0)
    min_rate_per_minute: int = Field(20, ge=1)
    min_active_minutes: int = Field(8, ge=1)
    min_shape_diversity: float = Field(0.7, ge=0, le=1)
    # Or prompts from templated datasets: many template shapes (prompt openings), none dominant.
    # A product fills one template, or a few with one dominant; a dataset harvest spans dozens.
    min_distinct_shapes: int = Field(8, ge=2)
    max_top_shape_share: float = Field(0.5, gt=0, le=1)
    min_mean_completion_tokens: int = Field(600, ge=0)


class SybilPolicy(RulePolicy):
    window_seconds: int = Field(600, gt=0)
    min_accounts: int = Field(20, ge=2)
    max_account_rate_per_minute: int = Field(10, ge=1)
    min_agent_share: float = Field(0.6, ge=0, le=1)


class CampaignPolicy(RulePolicy):
    severity: Severity = "high"
    min_accounts: int = Field(8, ge=2)
    min_narrowness: float = Field(0.8, ge=0, le=1)
    min_cohesion: float = Field(0.7, ge=0, le=1)
    min_concentration: float = Field(0.5, ge=0, le=1)
    # Or participation: most of the core posts the narrative at least this many times,
    # whatever share of its traffic that is, and coordination is strong.
    min_participation_prompts: int = Field(3, ge=2)
    min_participation: float = Field(0.7, ge=0, le=1)
    min_participation_coordination: float = Field(0.7, ge=0, le=1)
    # ...though not below this share: one prompt in twenty-five is a bystander's.
    min_participation_concentration: float = Field(0.2, ge=0, le=1)
    min_coordination: float = Field(0.5, ge=0, le=1)
    min_score: float = Field(0.6, ge=0, le=1)
    # An operation is a small minority of the accounts active in the window; a narrative sent
    # by more than this share of them is a trend or a popular template.
    max_population_share: float = Field(0.2, gt=0, le=1)
    # A reported campaign is withdrawn (and its page resolved) only after the evidence has
    # stayed below the bar this long in event time: an operation's evidence dips between its
    # posts. 0 withdraws at the first judging round without support.
    withdraw_after_seconds: int = Field(900, ge=0)


class AnomalyPolicy(RulePolicy):
    # A supporting signal only: it adds to an account's risk (its weight there) and never
    # alerts or flags on its own, so it has no severity but "low" and no action but "none".
    severity: Literal["low"] = "low"
    action: Literal["none"] = "none"
    STAGE_FIELDS: ClassVar[frozenset[str]] = RulePolicy.STAGE_FIELDS | {"severity"}
    refit_every_seconds: int = Field(900, gt=0)
    min_accounts: int = Field(50, ge=10)
    contamination: float = Field(0.01, gt=0, le=0.5)


class Rules(_Strict):
    credential_stuffing: CredentialStuffingPolicy = CredentialStuffingPolicy()
    leaked_key: LeakedKeyPolicy = LeakedKeyPolicy()
    jailbreak: JailbreakPolicy = JailbreakPolicy()
    jailbreak_spread: JailbreakSpreadPolicy = JailbreakSpreadPolicy()
    scraping: ScrapingPolicy = ScrapingPolicy()
    sybil: SybilPolicy = SybilPolicy()
    campaign: CampaignPolicy = CampaignPolicy()
    anomaly: AnomalyPolicy = AnomalyPolicy()


class CampaignWindows(_Strict):
    """The campaign stage: its sliding window, clustering thresholds per vector space, and how
    often clusters are refined and judged (event time)."""

    window_seconds: int = Field(6 * 3600, gt=0)
    full_similarity: float = Field(0.75, gt=0, le=1)
    static_similarity: float = Field(0.6, gt=0, le=1)
    static_min_narrowness: float = Field(0.6, ge=0, le=1)
    # Judged in rounds of event time (`CampaignTracker.offer`), each once the input is this
    # late past its end: the embed stage's output interleaves its partitions within ~5 s of
    # event time (its alignment), and up to 10 s more when one is held back.
    judge_every_seconds: int = Field(60, gt=0)
    judge_lateness_seconds: int = Field(15, ge=0)
    # Clusters of one operation are linked by the accounts they share, when sharing that many
    # by chance is less likely than link_max_p (over all pairs tried), and they are either
    # this share of the smaller cluster's accounts or centres this similar (one narrative).
    link_max_p: float = Field(1e-4, gt=0, lt=1)
    link_min_overlap: float = Field(0.5, gt=0, le=1)
    link_similarity: float = Field(0.7, gt=0, le=1)


class Embedding(_Strict):
    sample_every_n: int = Field(20, ge=1)
    max_words: int = Field(64, ge=8)
    lsh_bits: int = Field(3, ge=1, le=8)
    # A prompt with only a static vector that is this close to a known jailbreak in the static
    # space is confirmed with the model. Static vectors of ordinary prompts sit close to
    # everything: on the development halves (world, realtext, simulator) 0.7 sent 66-87 % of
    # other prompts to the model, 0.8 sends 20-45 %, while every prompt the model matched to
    # a jailbreak (653 sprayer prompts) was at >= 0.856 in the static space (0.9 would miss
    # 21 of them).
    jailbreak_tripwire: float = Field(0.8, gt=0, le=1)


class Risk(_Strict):
    half_life_seconds: int = Field(12 * 3600, gt=0)
    flag_threshold: float = Field(0.5, gt=0, lt=1)
    suspend_threshold: float = Field(0.85, gt=0, lt=1)
    suspend_min_detectors: int = Field(2, ge=1)
    weights: dict[str, float] = Field(default_factory=lambda: {
        "credential_stuffing": 1.0, "leaked_key": 1.0, "jailbreak": 1.2, "scraping": 0.8,
        "sybil": 0.8, "campaign": 1.0, "anomaly": 0.5})


class Automation(_Strict):
    # Automated suspension is off unless the policy turns it on.
    suspension_enabled: bool = False
    dry_run: bool = True
    max_suspensions_per_hour: int = Field(10, ge=0)
    # The circuit breaker stops automation and pages on-call when more suspensions are asked
    # for in an hour than this multiple of their usual hourly rate (and at least the minimum);
    # an analyst resumes it (`misuse review --resume-automation`).
    breaker_multiple: float = Field(3.0, gt=1)
    breaker_min_suspensions: int = Field(20, ge=1)
    breaker_baseline_hours: int = Field(168, ge=1)
    # An analyst's signed decision is applied only this long after it was made (and once):
    # a genuine one written back to the topic later is refused as a replay.
    max_decision_age_minutes: int = Field(60, ge=1)


Receiver = Literal["pagerduty", "alertmanager"]


def default_routes() -> dict[Severity, list[Receiver]]:
    return {"critical": ["pagerduty", "alertmanager"], "high": ["pagerduty", "alertmanager"],
            "medium": ["alertmanager"], "low": []}


class Paging(_Strict):
    # Alerts at or above this severity page on-call, unless their rule is excluded; each goes
    # to the receivers its severity routes to (those configured in the settings).
    min_severity: Severity = "high"
    routes: dict[Severity, list[Receiver]] = Field(default_factory=default_routes)
    exclude_rules: list[str] = []
    # One page per group (a campaign, or one rule on one entity) per window...
    group_window_seconds: int = Field(3600, gt=0)
    # ...and at most this many an hour; the next page says how many were held back.
    max_pages_per_hour: int = Field(20, ge=1)


class Policy(_Strict):
    version: Literal[1] = 1
    rules: Rules = Rules()
    campaigns: CampaignWindows = CampaignWindows()
    embedding: Embedding = Embedding()
    risk: Risk = Risk()
    automation: Automation = Automation()
    paging: Paging = Paging()


def policy_from_dict(data: Any) -> Policy:
    """The policy a policy file holds. The file must be whole: one that is empty, or leaves out
    a section or a rule, would run those on built-in defaults without a word (which flag where
    the file may have meant to suspend), so it is refused unless it says `defaults: true`."""
    if data is None:
        raise PolicyError("the policy file is empty; write `defaults: true` in it to run on "
                          "the built-in defaults")
    if not isinstance(data, dict):
        raise PolicyError("the policy must be a mapping at the top level")
    data = dict(data)
    defaults = data.pop("defaults", False)
    if not isinstance(defaults, bool):
        raise PolicyError("defaults: must be true or false")
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise PolicyError(f"invalid policy: {problems}") from None
    missing = [] if defaults else left_out(data)
    if missing:
        raise PolicyError(f"the policy leaves out {', '.join(missing)}: write them, or "
                          "`defaults: true` to run what is left out on built-in defaults")
    return policy


def left_out(data: dict[str, Any]) -> list[str]:
    """The sections and rules a policy mapping does not name."""
    missing = [name for name in Policy.model_fields if name not in data and name != "version"]
    rules = data.get("rules") or {}
    return missing + [f"rules.{name}" for name in Rules.model_fields if name not in rules]
