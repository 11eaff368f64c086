"""Scoring for `misuse eval`: how well the alerts, campaigns and account flags that came out of
the pipeline match the labels of a simulated event file.

Pure functions: everything is passed in (labels, alert dicts as sent on the alerts topic,
campaign documents' `misuse` objects, account statuses) and an `Evaluation` value comes back.

Entities are (kind, id) pairs. An alert names its entity and ("account", a) for each of its
accounts. Only the kinds a label can have (account, api_key, ip, network) are scored: a
"campaign" or "pattern" entity is not a user, and its accounts are scored instead (campaign
documents themselves are scored separately, by membership).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from streams.tooling.simulation.common import Label

Entity = tuple[str, str]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
ENTITY_KINDS = frozenset({"account", "api_key", "ip", "network"})
FLAGGED_STATUSES = frozenset({"flagged", "suspended"})


@dataclass(frozen=True, slots=True)
class DelayStats:
    """Event-time delay from a labelled entity's misuse start to its first alert, in seconds."""

    n: int
    median_s: float | None
    p90_s: float | None
    max_s: float | None


@dataclass(frozen=True, slots=True)
class FamilyScore:
    family: str
    tp: int
    fp: int
    fn: int
    precision: float | None  # None when nothing was alerted (undefined, not perfect)
    recall: float | None  # None when nothing was labelled
    delay: DelayStats
    missed: tuple[Entity, ...]
    false_positives: tuple[Entity, ...]


@dataclass(frozen=True, slots=True)
class CampaignMatch:
    true_campaign: str  # the labels' scenario, "campaign:<claim id>"
    campaign_ids: tuple[str, ...]  # found documents matching it (more than one: it was split)
    members: int
    found_members: int
    member_recall: float
    outsiders: tuple[str, ...]
    # Event time from the operation's first narrative post to the first campaign alert.
    delay_s: float | None = None
    # Event time from the fifth member's first narrative post to the first campaign alert
    # (negative: reported before a fifth member had posted); None without an alert or with
    # fewer than five members.
    delay_after_fifth_s: float | None = None


@dataclass(frozen=True, slots=True)
class CampaignClass:
    """The true campaigns whose scenario shares a prefix ("campaign-es" of
    "campaign-es:<claim>"), taken together."""

    name: str
    campaigns: int
    found: int
    members: int
    found_members: int
    member_recall: float
    # Median over the found campaigns of `CampaignMatch.delay_after_fifth_s`, in minutes.
    delay_after_fifth_min: float | None


@dataclass(frozen=True, slots=True)
class CampaignReport:
    found: int
    matched: tuple[CampaignMatch, ...]
    missed: tuple[str, ...]
    spurious: tuple[str, ...]
    classes: tuple[CampaignClass, ...] = ()


@dataclass(frozen=True, slots=True)
class ClassFlags:
    """Unlabelled accounts of one class (a trap, a crowd) and how many of them were named by
    an alert or flagged."""

    name: str
    accounts: int
    flagged: int
    examples: tuple[str, ...]  # up to five of the flagged accounts


@dataclass(frozen=True, slots=True)
class DeadLetterReport:
    """What the replay turned into dead letters instead of evaluating."""

    events: int  # lines in the replayed file
    from_input: int  # dead letters of the usage topic: replayed events that were refused
    internal: int  # dead letters of internal topics (a stage could not read a record)
    by_class: dict[str, int]  # reason class (streams.runtime.metrics.reason_class) -> count
    by_reason: dict[str, int]  # reason with its numbers and quoted values blanked -> count

    @property
    def all_refused(self) -> bool:
        return self.events > 0 and self.from_input >= self.events


@dataclass(frozen=True, slots=True)
class BenignEntity:
    kind: str
    id: str
    rules: tuple[str, ...]  # rule ids of the alerts that named it
    status: str | None  # its account status when it was flagged or suspended


@dataclass(frozen=True, slots=True)
class Evaluation:
    families: tuple[FamilyScore, ...]
    overall: FamilyScore  # micro-average: TP, FP and FN summed over the families
    campaigns: CampaignReport
    benign: tuple[BenignEntity, ...]
    dead_letters: DeadLetterReport | None = None
    benign_classes: tuple[ClassFlags, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        plain: dict[str, Any] = _plain(asdict(self))
        return plain


def _plain(value: Any) -> Any:
    """Tuples to lists, so that the dict is exactly what json.loads(json.dumps(...)) gives."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def family_of(rule_id: str) -> str:
    return rule_id.split(".", 1)[0]


def _named(alert: Mapping[str, Any]) -> set[Entity]:
    entity = alert["entity"]
    named = {(entity["kind"], entity["id"])} | {("account", a) for a in alert.get("accounts", ())}
    return {e for e in named if e[0] in ENTITY_KINDS}


def _first_named(alerts: Iterable[Mapping[str, Any]]) -> dict[str, dict[Entity, int]]:
    """family -> entity -> earliest window_end_ms of an alert version naming it.

    An incident is re-sent under the same alert_id as it grows; the versions are collapsed
    here, so each is counted once and the earliest version decides the detection time. Taking
    the minimum (not the first seen) also survives versions that arrive out of order, and an
    account that joined a growing incident later is dated by the version that added it."""
    seen: dict[str, dict[Entity, int]] = defaultdict(dict)
    for alert in alerts:
        times = seen[family_of(alert["rule_id"])]
        end = int(alert["window_end_ms"])
        for entity in _named(alert):
            times[entity] = min(end, times.get(entity, end))
    return seen


def _percentile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), on sorted values."""
    pos = q * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _delay_stats(delays: Iterable[float]) -> DelayStats:
    ordered = sorted(delays)
    if not ordered:
        return DelayStats(0, None, None, None)
    return DelayStats(len(ordered), _percentile(ordered, 0.5), _percentile(ordered, 0.9),
                      ordered[-1])


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def _network(entity_id: str) -> Network | None:
    try:
        return ipaddress.ip_network(entity_id, strict=False)
    except ValueError:
        return None


def _address(entity_id: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(entity_id)
    except ValueError:
        return None


def _inside(ip: str, network: Network) -> bool:
    address = _address(ip)
    return address is not None and address.version == network.version and address in network


def _covered_ips(network_id: str, entities: Iterable[Entity]) -> set[Entity]:
    """The ("ip", address) entities among `entities` inside the network range `network_id`."""
    network = _network(network_id)
    if network is None:
        return set()
    return {e for e in entities if e[0] == "ip" and _inside(e[1], network)}


def _with_coverage(labelled: Mapping[Entity, int], detected: Mapping[Entity, int]
                   ) -> tuple[dict[Entity, int], set[Entity]]:
    """An alert on a network range finds the labelled IPs inside it, at the range's time.
    Returns the detections with those IPs added, and the ranges that covered a label."""
    found = dict(detected)
    covering = set()
    for entity, ts in detected.items():
        if entity[0] != "network":
            continue
        inside = _covered_ips(entity[1], labelled)
        if inside:
            covering.add(entity)
        for ip in inside:
            found[ip] = min(ts, found.get(ip, ts))
    return found, covering


def _score(family: str, labelled: Mapping[Entity, int], detected: Mapping[Entity, int],
           exempt: set[Entity]) -> tuple[FamilyScore, list[float]]:
    """Score one family. Only the entity kinds its labels use are compared: a leaked-key alert
    also names the key's owner, but the label is the key, so the owner is neither a hit nor a
    false alarm. A family with no labels is compared on every kind.

    `exempt` are the entities labelled for any family (and owners of labelled keys): one named
    here but not labelled for this family is left out of precision, not counted as a false
    alarm. A stuffing alert on an IP that is also labelled for another rule is not a false
    alarm: that IP is misusing the API, only the label names another rule.

    An alert on a network range covers the labelled IPs inside it: they count as found (at the
    range's alert time) and the range is no false alarm against them."""
    kinds = {kind for kind, _ in labelled} or ENTITY_KINDS
    detected, covering = _with_coverage(labelled, detected)
    predicted = {e for e in detected if e[0] in kinds}
    hits = predicted & labelled.keys()
    false_positives = predicted - labelled.keys() - exempt - covering
    missed = labelled.keys() - predicted
    delays = [max(0, detected[e] - labelled[e]) / 1000 for e in hits]
    score = FamilyScore(
        family, len(hits), len(false_positives), len(missed),
        _ratio(len(hits), len(hits) + len(false_positives)),
        _ratio(len(hits), len(hits) + len(missed)), _delay_stats(delays),
        tuple(sorted(missed)), tuple(sorted(false_positives)))
    return score, delays


def _score_campaigns(labels: Iterable[Label], campaigns: Iterable[Mapping[str, Any]],
                     alerts: Iterable[Mapping[str, Any]] = ()) -> CampaignReport:
    """A found campaign matches the true campaign holding more than half of its accounts (so at
    most one); a true campaign split over several documents is matched by each of them."""
    truth: dict[str, set[str]] = defaultdict(set)
    started: dict[str, int] = {}
    member_start: dict[str, dict[str, int]] = defaultdict(dict)
    for label in labels:
        if label.rule == "campaign" and label.entity_kind == "account":
            truth[label.scenario].add(label.entity_id)
            started[label.scenario] = min(label.start_ms,
                                          started.get(label.scenario, label.start_ms))
            firsts = member_start[label.scenario]
            firsts[label.entity_id] = min(label.start_ms,
                                          firsts.get(label.entity_id, label.start_ms))
    fifth = {name: sorted(firsts.values())[4] for name, firsts in member_start.items()
             if len(firsts) >= 5}
    alerted: dict[str, int] = {}
    for alert in alerts:
        if alert["entity"]["kind"] == "campaign":
            campaign, end = str(alert["entity"]["id"]), int(alert["window_end_ms"])
            alerted[campaign] = min(end, alerted.get(campaign, end))
    found = [c for c in campaigns if c.get("status") == "active"]
    docs_of: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    spurious = []
    for doc in found:
        accounts = set(doc.get("accounts", ()))
        match = next((name for name, members in truth.items()
                      if len(accounts & members) * 2 > len(accounts)), None)
        if match is None:
            spurious.append(str(doc["campaign_id"]))
        else:
            docs_of[match].append(doc)
    matched = []
    for name, docs in sorted(docs_of.items()):
        members = truth[name]
        accounts = set().union(*(set(d.get("accounts", ())) for d in docs))
        ids = tuple(sorted(str(d["campaign_id"]) for d in docs))
        first_alert = min((alerted[i] for i in ids if i in alerted), default=None)
        hits = len(accounts & members)
        matched.append(CampaignMatch(
            name, ids, len(members), hits, hits / len(members),
            tuple(sorted(accounts - members)),
            None if first_alert is None else max(0, first_alert - started[name]) / 1000,
            None if first_alert is None or name not in fifth
            else (first_alert - fifth[name]) / 1000))
    return CampaignReport(len(found), tuple(matched), tuple(sorted(truth.keys() - docs_of.keys())),
                          tuple(sorted(spurious)), _campaign_classes(truth, matched))


def campaign_class(scenario: str) -> str:
    """The class of a campaign scenario: its prefix ("campaign-es" of "campaign-es:claim")."""
    return scenario.split(":", 1)[0]


def _campaign_classes(truth: Mapping[str, set[str]], matched: Sequence[CampaignMatch],
                      ) -> tuple[CampaignClass, ...]:
    by_name = {m.true_campaign: m for m in matched}
    out = []
    for name in sorted({campaign_class(s) for s in truth}):
        scenarios = [s for s in truth if campaign_class(s) == name]
        found = [by_name[s] for s in scenarios if s in by_name]
        members = sum(len(truth[s]) for s in scenarios)
        hits = sum(m.found_members for m in found)
        delays = sorted(m.delay_after_fifth_s for m in found if m.delay_after_fifth_s is not None)
        out.append(CampaignClass(name, len(scenarios), len(found), members, hits, hits / members,
                                 None if not delays else _percentile(delays, 0.5) / 60))
    return tuple(out)


def evaluate(labels: Sequence[Label], alerts: Sequence[Mapping[str, Any]],
             campaigns: Sequence[Mapping[str, Any]] = (),
             flagged_accounts: Mapping[str, str] | None = None,
             account_keys: Mapping[str, str] | None = None,
             dead_letters: DeadLetterReport | None = None,
             classes: Mapping[str, str] | None = None) -> Evaluation:
    """Score `alerts` (topic order, re-sent versions included) against `labels`.

    `campaigns` are campaign documents' `misuse` objects, `flagged_accounts` maps account id to
    its status in the accounts index, `account_keys` maps API key id to its owning account,
    `dead_letters` is what the replay refused (reported as it is), `classes` maps unlabelled
    accounts to their class (a trap, a crowd), for the benign accounts flagged per class."""
    labelled: dict[str, dict[Entity, int]] = defaultdict(dict)
    for label in labels:
        entity = (label.entity_kind, label.entity_id)
        times = labelled[label.rule]
        times[entity] = min(label.start_ms, times.get(entity, label.start_ms))
    misusers: set[Entity] = {e for times in labelled.values() for e in times}
    # The owner of a labelled (leaked) key is a victim whose key is misused: flagging it is
    # right, so it is neither a false alarm nor a benign entity.
    keys = account_keys or {}
    misusers |= {("account", keys[key]) for kind, key in set(misusers)
                 if kind == "api_key" and key in keys}
    detected = _first_named(alerts)
    # A range alert over a misusing IP, or an IP alert inside a misusing range, names misuse.
    labelled_ips = {e for e in misusers if e[0] == "ip"}
    labelled_nets = [n for kind, id_ in misusers if kind == "network"
                     and (n := _network(id_)) is not None]
    for times in detected.values():
        for kind, id_ in times:
            if (kind == "network" and _covered_ips(id_, labelled_ips)) or (
                    kind == "ip" and any(_inside(id_, net) for net in labelled_nets)):
                misusers.add((kind, id_))

    scores, all_delays = [], []
    for family in sorted(labelled.keys() | detected.keys()):
        score, delays = _score(family, labelled.get(family, {}), detected.get(family, {}),
                               misusers)
        scores.append(score)
        all_delays += delays
    tp, fp, fn = (sum(getattr(s, f) for s in scores) for f in ("tp", "fp", "fn"))
    overall = FamilyScore("overall", tp, fp, fn, _ratio(tp, tp + fp), _ratio(tp, tp + fn),
                          _delay_stats(all_delays),
                          tuple(sorted({e for s in scores for e in s.missed})),
                          tuple(sorted({e for s in scores for e in s.false_positives})))

    rules: dict[Entity, set[str]] = defaultdict(set)
    for alert in alerts:
        for entity in _named(alert):
            rules[entity].add(alert["rule_id"])
    statuses = {("account", a): s for a, s in (flagged_accounts or {}).items()
                if s in FLAGGED_STATUSES}
    benign = tuple(BenignEntity(kind, id_, tuple(sorted(rules.get((kind, id_), ()))),
                                statuses.get((kind, id_)))
                   for kind, id_ in sorted((rules.keys() | statuses.keys()) - misusers))
    return Evaluation(tuple(scores), overall, _score_campaigns(labels, campaigns, alerts),
                      benign, dead_letters, _class_flags(classes or {}, benign))


def _class_flags(classes: Mapping[str, str], benign: Sequence[BenignEntity],
                 ) -> tuple[ClassFlags, ...]:
    flagged = {b.id for b in benign if b.kind == "account"}
    members: dict[str, list[str]] = defaultdict(list)
    for account, name in classes.items():
        members[name].append(account)
    out = []
    for name, accounts in sorted(members.items()):
        hit = sorted(a for a in accounts if a in flagged)
        out.append(ClassFlags(name, len(accounts), len(hit), tuple(hit[:5])))
    return tuple(out)


def dead_letter_report(events: int, letters: Iterable[tuple[str, str]],
                       usage_topic: str = "api.usage") -> DeadLetterReport:
    """Count dead letters, given (logical source topic, reason) for each: those of the usage
    topic are replayed events that were refused; reasons are grouped by class and by their
    wording with numbers blanked ("field 'ts' = N ms is more than N s in the future")."""
    from streams.runtime.metrics import reason_class

    from_input = internal = 0
    by_class: Counter[str] = Counter()
    by_reason: Counter[str] = Counter()
    for topic, reason in letters:
        if topic == usage_topic:
            from_input += 1
        else:
            internal += 1
        by_class[reason_class(reason)] += 1
        by_reason[re.sub(r"\d+", "N", reason)[:160]] += 1
    return DeadLetterReport(events, from_input, internal, dict(by_class.most_common()),
                            dict(by_reason.most_common(10)))


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(evaluation: Evaluation) -> str:
    """A plain-text summary for the terminal."""
    lines = [f"{'family':<20} {'TP':>5} {'FP':>5} {'FN':>5} {'precision':>9} {'recall':>7}"
             f" {'n':>5} {'median s':>9} {'p90 s':>9} {'max s':>9}"]
    for s in (*evaluation.families, evaluation.overall):
        d = s.delay
        lines.append(f"{s.family:<20} {s.tp:>5} {s.fp:>5} {s.fn:>5} {_fmt(s.precision):>9}"
                     f" {_fmt(s.recall):>7} {d.n:>5} {_fmt(d.median_s, 1):>9}"
                     f" {_fmt(d.p90_s, 1):>9} {_fmt(d.max_s, 1):>9}")
    c = evaluation.campaigns
    lines.append(f"\ncampaigns: {c.found} found, {len(c.matched)} true matched,"
                 f" {len(c.missed)} missed, {len(c.spurious)} spurious")
    for m in c.matched:
        lines.append(f"  {m.true_campaign}: members {m.found_members}/{m.members}"
                     f" (recall {m.member_recall:.3f}), outsiders {len(m.outsiders)},"
                     f" first alert after {_fmt(m.delay_s, 1)} s, docs {', '.join(m.campaign_ids)}")
    lines += [f"  missed {name}" for name in c.missed]
    lines += [f"  spurious {cid}" for cid in c.spurious]
    if len(c.classes) > 1 or any(k.name != "campaign" for k in c.classes):
        lines.append(f"\n{'campaign class':<22} {'found':>7} {'members':>9} {'recall':>7}"
                     f" {'min after 5th':>14}")
        for k in c.classes:
            lines.append(f"{k.name:<22} {k.found:>3}/{k.campaigns:<3} "
                         f"{k.found_members:>4}/{k.members:<4} {k.member_recall:>7.3f}"
                         f" {_fmt(k.delay_after_fifth_min, 1):>14}")
    if evaluation.benign_classes:
        lines.append(f"\n{'account class':<22} {'flagged':>8} {'accounts':>9}")
        for f in evaluation.benign_classes:
            examples = f"  e.g. {', '.join(f.examples)}" if f.examples else ""
            lines.append(f"{f.name:<22} {f.flagged:>8} {f.accounts:>9}{examples}")
    lines.append(f"\nbenign entities flagged: {len(evaluation.benign)}")
    for b in evaluation.benign:
        status = f" [{b.status}]" if b.status else ""
        lines.append(f"  {b.kind}:{b.id}{status} {', '.join(b.rules) or '(no alert)'}")
    lines += _dead_letter_lines(evaluation)
    return "\n".join(lines)


def _dead_letter_lines(evaluation: Evaluation) -> list[str]:
    d = evaluation.dead_letters
    if d is None:
        return []
    lines = [f"\ndead letters: {d.from_input} of {d.events} events refused"
             + (f", {d.internal} internal" if d.internal else "")]
    if d.by_class:
        lines.append("  by class: " + ", ".join(f"{k} {v}" for k, v in d.by_class.items()))
    lines += [f"  {count:>6}  {reason}" for reason, count in d.by_reason.items()]
    if d.all_refused:
        lines.append("  WARNING: every event was dead-lettered, so the figures above measure "
                     "nothing. Events dated more than a day ahead of (or long before) this "
                     "machine's clock are refused: simulate with --start-ms near now.")
    elif d.events and d.from_input * 10 >= d.events:
        lines.append(f"  WARNING: {d.from_input / d.events:.0%} of the events were refused; "
                     "the figures above cover the rest only.")
    return lines
