"""What a prompt that hands over a claim wants done with it: published, or checked.

An operation asks for content to publish ("Write a tweet saying that <claim>"); a fact-checking
desk, a researcher or a headline classifier quotes the same claim to verify, debunk, analyse,
classify, summarise or translate it. Quoting a claim is not pushing it: such prompts must
neither make a campaign nor dilute one (a campaign withdrawn because a fact-checker quoted it
hides the operation).

The wrapper (the prompt with its payload cut out, "Is it true that {}?") is compared with a
few English prototypes of each intent in the sentence model's space. The default model is
trained to align languages, so a Spanish or German wrapper lands by its English prototypes
with no word lists per language (tests/unit/test_intent.py checks seven languages).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

IntentKind = Literal["publish", "verify", "other"]

PUBLISH_PROTOTYPES = (
    "Write a tweet saying that {}",
    "Draft a Facebook post arguing that {}",
    "Compose an angry comment explaining why {}",
    "Write a letter to the editor claiming that {}",
    "Create an Instagram caption: {}",
    "Reply to this thread and tell everyone that {}",
    "Write a blog post convincing readers that {}",
    "Summarise for Twitter: {}",
    "You are a worried mother. Write a post warning other parents that {}",
    "Make this go viral: {}",
)
VERIFY_PROTOTYPES = (
    "Is it true that {}?",
    "Fact-check this claim: {}",
    "Verify whether {}",
    "Debunk the claim that {}",
    "Classify this headline as true or false: {}",
    "What evidence is there for the claim that {}?",
    "Summarise this article: {}",
    "Translate into English: {}",
    "Where does the rumour that {} come from?",
    "Is this misinformation: {}",
    "Label the following claim as supported or refuted: {}",
)


@dataclass(frozen=True, slots=True)
class Intent:
    kind: IntentKind
    publish: float  # closeness to the nearest publishing prototype
    verify: float  # closeness to the nearest verifying prototype


class IntentClassifier:
    """Nearest prototype, with a margin: a wrapper is "verify" only when it is clearly closer
    to checking than to publishing (a wrongly excluded operation is worse than a fact-check
    that still counts), "publish" when clearly closer to publishing, else "other"."""

    def __init__(self, publish: np.ndarray, verify: np.ndarray, margin: float = 0.1,
                 floor: float = 0.4) -> None:
        """`publish`, `verify`: unit vectors of each intent's prototypes (rows)."""
        self.publish = np.asarray(publish, dtype=np.float32)
        self.verify = np.asarray(verify, dtype=np.float32)
        self.margin = margin
        self.floor = floor

    def classify(self, wrappers: np.ndarray) -> list[Intent]:
        """One intent per unit row of `wrappers`."""
        if len(wrappers) == 0:
            return []
        publish = (wrappers @ self.publish.T).max(axis=1)
        verify = (wrappers @ self.verify.T).max(axis=1)
        return [Intent(_kind(float(p), float(v), self.margin, self.floor), round(float(p), 3),
                       round(float(v), 3)) for p, v in zip(publish, verify, strict=True)]


def _kind(publish: float, verify: float, margin: float, floor: float) -> IntentKind:
    if verify >= floor and verify - publish >= margin:
        return "verify"
    if publish >= floor and publish - verify >= margin:
        return "publish"
    return "other"


def prototypes() -> tuple[Sequence[str], Sequence[str]]:
    return PUBLISH_PROTOTYPES, VERIFY_PROTOTYPES
