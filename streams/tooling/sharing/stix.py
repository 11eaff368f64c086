"""A STIX 2.1 bundle of the campaigns and attacks found, for industry peers and researchers: what
they can match on in their own traffic, never what identifies our users.

Per active campaign: a `campaign` (name from its label terms, first and last seen, its evidence
and languages as description), `indicator`s of its shared network ranges and of the SHA-256
of its payloads' canonical text, each `indicates` the campaign, which `uses` the
coordinated-narrative attack pattern. Per attack (credential stuffing network, leaked-key
spread, jailbreak sprayer, sybil farm): one `attack-pattern` per kind, with its MITRE ATT&CK or
ATLAS reference, and per attacking entity an `indicator` that `indicates` it. One `identity`
for the producer creates everything; every object carries the chosen TLP 2.0 marking.

Redaction is as strict as alert reasons, and stricter: no account id unless asked for
(`include_accounts`; then only attackers', as `user-account` patterns), no API key id, no
prompt text (hashes of canonical payloads only), and no address that is not attacking
infrastructure (a leaked key's networks include its owner's, so only those that used two or
more leaked keys are shared). Object ids are derived from what they describe, so exporting the
same range again gives the same ids and a peer's platform updates instead of duplicating.
"""

from __future__ import annotations

import hashlib
import ipaddress
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import stix2

from detectors.narrative import split_narrative
from detectors.text import normalise

Doc = dict[str, Any]

TLP_EXTENSION = "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d"
# The OASIS TLP 2.0 marking definitions (cti-stix-common-objects, tlp-2.0): fixed ids and
# creation time that every consumer recognises; STIX 2.1 predefines only TLP 1.0.
TLP_IDS = {
    "clear": "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
    "green": "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
    "amber": "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
    "amber+strict": "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
}
TLP_CREATED = "2022-10-01T00:00:00.000Z"
# When the producer and the attack patterns were first described: fixed, as their ids are.
DESCRIBED = datetime(2026, 1, 1, tzinfo=UTC)
REDACTION_TAGS = ("[EMAIL]", "[PHONE]", "[CARD]", "[IBAN]", "[SECRET]", "[IP]", "[ADDRESS]")
TRUNCATED = "…"  # detectors/redaction.py redacted_sample's mark


@dataclass(frozen=True)
class Technique:
    name: str
    description: str
    reference: tuple[str, str] | None  # (source, external id)


CAMPAIGN_TECHNIQUE = Technique(
    "Coordinated narrative generation across accounts",
    "One narrative pushed through many accounts of a language-model API, in many wrappers "
    "(persona, format, channel) and languages, to produce content for publication.", None)
TECHNIQUES = {
    "credential_stuffing.key_enumeration": Technique(
        "Credential Stuffing", "Many leaked or guessed API keys tried from one network.",
        ("mitre-attack", "T1110.004")),
    "leaked_key.network_spread": Technique(
        "Use of a leaked API key", "One API key used from many networks and clients at once, "
        "far beyond its own baseline.",
        ("mitre-attack", "T1550.001")),
    "jailbreak.spray": Technique(
        "LLM jailbreak spraying", "Known jailbreak prompts sent in bulk, at machine-regular "
        "timing, to get around a model's safety behaviour.",
        ("mitre-atlas", "AML.T0054")),
    "sybil.shared_client": Technique(
        "Sybil account farm", "Many low-rate accounts on one network range with one client.",
        ("mitre-attack", "T1585")),
}


@dataclass(frozen=True)
class ExportOptions:
    tlp: str = "amber"
    include_accounts: bool = False
    producer: str = "misuse-detector"


def tlp_marking(level: str) -> stix2.v21.MarkingDefinition:
    if level not in TLP_IDS:
        raise ValueError(f"unknown TLP level {level!r}; one of {', '.join(TLP_IDS)}")
    return stix2.v21.MarkingDefinition(
        id=TLP_IDS[level], created=TLP_CREATED, name=f"TLP:{level.upper()}",
        extensions={TLP_EXTENSION: {"extension_type": "property-extension", "tlp_2_0": level}})


def when(timestamp: str) -> datetime:
    """An Elasticsearch date (ISO 8601 with an offset) as a UTC datetime."""
    return datetime.fromisoformat(timestamp).astimezone(UTC)


def stable_id(kind: str, *parts: str) -> str:
    """An id derived from what the object describes, in the version 4 form STIX asks for."""
    digest = hashlib.sha256("|".join(("misuse-detector", kind, *parts)).encode()).digest()
    return f"{kind}--{uuid.UUID(bytes=digest[:16], version=4)}"


def quoted(value: str) -> str:
    """A STIX pattern string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def network_pattern(ranges: Iterable[str]) -> str | None:
    """Addresses in any of the ranges (or equal to an address); None if none is valid."""
    terms = []
    for text in sorted(set(ranges)):
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            continue
        kind = "ipv4-addr" if network.version == 4 else "ipv6-addr"
        if "/" in text:
            terms.append(f"[{kind}:value ISSUBSET {quoted(str(network))}]")
        else:
            terms.append(f"[{kind}:value = {quoted(str(network.network_address))}]")
    return " OR ".join(terms) or None


def user_agent_pattern(agents: Iterable[str]) -> str | None:
    terms = [f"[network-traffic:extensions.'http-request-ext'.request_header.'User-Agent' = "
             f"{quoted(agent)}]" for agent in sorted(set(agents)) if agent and not
             any(tag in agent for tag in REDACTION_TAGS)]
    return " OR ".join(terms) or None


def hash_pattern(digests: Iterable[str]) -> str | None:
    terms = [f"[artifact:hashes.'SHA-256' = {quoted(d)}]" for d in sorted(set(digests))]
    return " OR ".join(terms) or None


def accounts_pattern(accounts: Iterable[str]) -> str | None:
    terms = [f"[user-account:user_id = {quoted(a)}]" for a in sorted(set(accounts)) if a]
    return " OR ".join(terms) or None


def text_digest(text: str) -> str:
    """SHA-256 of the canonical form (detectors/text.py: NFKC, look-alikes folded, invisible
    characters removed), as UTF-8: what a peer computes on its own prompts to match."""
    return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()


def usable(text: str) -> bool:
    """A stored sample whole enough to hash: cut short or redacted, it matches nothing."""
    return bool(text.strip()) and TRUNCATED not in text \
        and not any(tag in text for tag in REDACTION_TAGS)


def payload_digests(samples: Iterable[str]) -> list[str]:
    """The hashes of the payloads (the claims) cut out of a campaign's sample prompts."""
    digests = []
    for sample in samples:
        payload = split_narrative(sample).payload
        if payload is not None and usable(payload):
            digests.append(text_digest(payload))
    return sorted(set(digests))


class BundleBuilder:
    def __init__(self, options: ExportOptions) -> None:
        self.options = options
        self.marking = tlp_marking(options.tlp)
        self.producer = stix2.v21.Identity(
            id=stable_id("identity", options.producer), name=options.producer,
            identity_class="system", created=DESCRIBED, modified=DESCRIBED,
            description="A stream processor that finds misuse of a language-model API in "
                        "its usage events.",
            object_marking_refs=[self.marking.id])
        self.objects: dict[str, Any] = {self.marking.id: self.marking,
                                        self.producer.id: self.producer}

    def common(self, created: datetime, modified: datetime) -> dict[str, Any]:
        return {"created_by_ref": self.producer.id, "created": created,
                "modified": max(created, modified), "object_marking_refs": [self.marking.id]}

    def add(self, obj: Any) -> Any:
        self.objects[obj.id] = obj
        return obj

    def technique(self, key: str, technique: Technique) -> Any:
        refs = [] if technique.reference is None else [
            {"source_name": technique.reference[0], "external_id": technique.reference[1]}]
        return self.add(stix2.v21.AttackPattern(
            id=stable_id("attack-pattern", key), name=technique.name,
            description=technique.description, external_references=refs or None,
            **self.common(DESCRIBED, DESCRIBED)))

    def indicator(self, key: str, name: str, description: str, pattern: str | None,
                  target: Any, first: datetime, last: datetime) -> None:
        if pattern is None:
            return
        indicator = self.add(stix2.v21.Indicator(
            id=stable_id("indicator", key), name=name, description=description,
            pattern=pattern, pattern_type="stix", valid_from=first,
            indicator_types=["malicious-activity"], **self.common(first, last)))
        self.relate(indicator, "indicates", target, first, last)

    def relate(self, source: Any, kind: str, target: Any, first: datetime, last: datetime) -> None:
        self.add(stix2.v21.Relationship(
            id=stable_id("relationship", source.id, kind, target.id), relationship_type=kind,
            source_ref=source.id, target_ref=target.id, **self.common(first, last)))

    def campaign(self, doc: Doc) -> None:
        misuse = doc["misuse"]
        campaign_id, terms = misuse["campaign_id"], misuse.get("label_terms") or []
        first, last = when(misuse["first_seen"]), when(misuse["last_seen"])
        name = f"Campaign {campaign_id}" + (f": {' '.join(terms)}" if terms else "")
        evidence = misuse.get("evidence", {}).get("campaign", {})
        languages = misuse.get("languages") or []
        description = "\n".join([
            f"{misuse.get('account_count', 0)} accounts, {misuse.get('size', 0)} prompts, "
            f"score {misuse.get('score', 0)}; languages: {', '.join(languages) or 'unknown'}.",
            *misuse.get("reasons", [])])
        campaign = self.add(stix2.v21.Campaign(
            id=stable_id("campaign", campaign_id), name=name, description=description,
            aliases=[campaign_id], first_seen=first, last_seen=last,
            objective="Content for publication pushing one narrative",
            **self.common(first, last)))
        self.relate(campaign, "uses", self.technique("campaign", CAMPAIGN_TECHNIQUE),
                    first, last)
        self.indicator(f"{campaign_id}|networks", f"{name}: network ranges",
                       "Network ranges the campaign's accounts shared with each other.",
                       network_pattern(evidence.get("network_ranges", [])), campaign, first,
                       last)
        self.indicator(f"{campaign_id}|user-agents", f"{name}: user agents",
                       "Uncommon user agents the campaign's accounts shared.",
                       user_agent_pattern(evidence.get("user_agents", [])), campaign, first,
                       last)
        self.indicator(f"{campaign_id}|payloads", f"{name}: payload hashes",
                       "SHA-256 of the canonical text (NFKC, look-alike letters folded, "
                       "invisible characters removed; UTF-8) of the narrative's payloads, the "
                       "claims cut out of their wrappers.",
                       hash_pattern(payload_digests(misuse.get("sample_prompts", []))),
                       campaign, first, last)
        if self.options.include_accounts:
            self.indicator(f"{campaign_id}|accounts", f"{name}: accounts",
                           "The campaign's member accounts on the producer's platform.",
                           accounts_pattern(misuse.get("accounts", [])), campaign, first, last)

    def attacks(self, alerts: Sequence[Doc]) -> None:
        by_entity: dict[tuple[str, str], list[Doc]] = defaultdict(list)
        for alert in alerts:
            rule = alert["rule"]["id"]
            if rule in TECHNIQUES and not alert["misuse"].get("shadow"):
                by_entity[(rule, alert["misuse"]["entity"]["id"])].append(alert)
        leaked_networks = networks_of_leaked_keys(alerts)
        for (rule, entity), group in sorted(by_entity.items()):
            pattern = self.technique(rule, TECHNIQUES[rule])
            first = min(when(a["event"]["start"]) for a in group)
            last = max(when(a["@timestamp"]) for a in group)
            detector = rule.split(".", 1)[0]
            evidences = [a["misuse"]["evidence"].get(detector, {}) for a in group]
            key = stable_id("entity", rule, entity)  # no entity id in what is shared
            what = TECHNIQUES[rule].name
            if rule == "credential_stuffing.key_enumeration":
                self.indicator(f"{key}|networks", f"{what}: source network",
                               "The network the keys were tried from.",
                               network_pattern([entity]), pattern, first, last)
            elif rule == "leaked_key.network_spread":
                networks = {n for e in evidences for n in e.get("sample_networks", [])
                            if len(leaked_networks[n]) >= 2}
                self.indicator(f"{key}|networks", f"{what}: networks",
                               "Networks that used two or more leaked API keys.",
                               network_pattern(networks), pattern, first, last)
            elif rule == "sybil.shared_client":
                ranges = network_pattern([entity])
                agents = user_agent_pattern(e.get("user_agent", "") for e in evidences)
                self.indicator(f"{key}|farm", f"{what}: network and client",
                               "The farm's network range and the client its accounts share.",
                               f"{ranges} AND ({agents})" if ranges and agents else ranges,
                               pattern, first, last)
            elif rule == "jailbreak.spray":
                digests = [text_digest(s) for e in evidences
                           for s in e.get("sample_prompts", []) if usable(s)]
                self.indicator(f"{key}|prompts", f"{what}: prompt hashes",
                               "SHA-256 of the canonical text (as for payloads) of the "
                               "jailbreak prompts sprayed.", hash_pattern(digests), pattern,
                               first, last)
            if self.options.include_accounts and rule in ("jailbreak.spray",
                                                          "sybil.shared_client"):
                self.indicator(f"{key}|accounts", f"{what}: accounts",
                               "The attacking accounts on the producer's platform.",
                               accounts_pattern(a for alert in group
                                                for a in alert["misuse"].get("accounts", [])),
                               pattern, first, last)

    def bundle(self) -> stix2.v21.Bundle:
        return stix2.v21.Bundle(objects=list(self.objects.values()))


def networks_of_leaked_keys(alerts: Iterable[Doc]) -> dict[str, set[str]]:
    """Network -> the leaked keys it used: one that used several is attacking infrastructure,
    where a network seen with one key may be the key's owner's own."""
    keys: dict[str, set[str]] = defaultdict(set)
    for alert in alerts:
        if alert["rule"]["id"] == "leaked_key.network_spread":
            evidence = alert["misuse"]["evidence"].get("leaked_key", {})
            for network in evidence.get("sample_networks", []):
                keys[network].add(alert["misuse"]["entity"]["id"])
    return keys


def build_bundle(campaigns: Iterable[Doc], alerts: Sequence[Doc],
                 options: ExportOptions) -> stix2.v21.Bundle:
    """Active campaigns only: a merged one lives on in the campaign it joined, and a withdrawn
    one is no longer supported by its window."""
    builder = BundleBuilder(options)
    for doc in sorted(campaigns, key=lambda d: d["misuse"]["campaign_id"]):
        if doc["misuse"].get("status", "active") == "active":
            builder.campaign(doc)
    builder.attacks(alerts)
    return builder.bundle()
