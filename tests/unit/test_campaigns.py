"""The campaign judge on a synthetic window of traffic: a coordinated group pushing a narrative,
ordinary users who touch the same narrative once, a crowd pasting a popular template, a crowd
writing cover letters, and background noise. Vectors are a topic direction plus noise."""

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pytest

from detectors.campaigns import RULE_ID, CampaignJudge, campaign_alert, label_terms
from detectors.clustering import ClusterPoint, OnlineClusterer
from detectors.text import normalise, text_key

T0 = 1_790_000_000_000
MINUTE = 60_000
WINDOW = 120 * MINUTE
DIM = 64
DAY = 86_400_000
SDK_AGENTS = ("OpenAI/Python 1.54.0", "OpenAI/NodeJS 4.71.0", "python-requests/2.32.3",
              "curl/8.5.0", "Anthropic-ish/0.9")

OPENERS = ("Write a tweet saying", "Compose a short post claiming", "Draft an angry comment that",
           "Make a Facebook update explaining", "Produce three hashtags and a caption:",
           "Pen a reply arguing")
CLAIMS = ("mayor Quimby rigged the Springfield election", "the Springfield vote was stolen by "
          "Quimby's people", "ballots in Springfield were faked to keep Quimby in office",
          "Quimby's officials destroyed Springfield ballots", "the Springfield count was a fraud "
          "organised by the mayor")


@dataclass
class World:
    points: list[ClusterPoint] = field(default_factory=list)
    activity: Counter = field(default_factory=Counter)
    key_first_seen: dict = field(default_factory=dict)
    bots: list[str] = field(default_factory=list)
    template_accounts: set = field(default_factory=set)
    letter_accounts: set = field(default_factory=set)


def unit(v):
    return v / np.linalg.norm(v)


def noisy(rng, direction, cosine):
    """A unit vector at about `cosine` to `direction`."""
    noise = rng.normal(size=DIM)
    noise -= (noise @ direction) * direction
    noise = unit(noise) * np.sqrt(1 / cosine**2 - 1)
    return unit(direction + noise).astype(np.float32)


def add(world, rng, account, ts, vector, prompt, key, ip, agent, count=True):
    n = len(world.points)
    world.points.append(ClusterPoint(
        event_id=f"ev-{n}", ts_ms=int(ts), vector=vector, account_id=account, api_key_id=key,
        ip=ip, user_agent=agent, prompt_sample=prompt, text_key=text_key(normalise(prompt))))
    if count:
        world.activity[account] += 1


def off_topic(world, rng, account, key, ip, agent, n):
    """Prompts the account sends elsewhere (other partitions): counted, not clustered."""
    world.activity[account] += n


COPIED = "Write a tweet saying the Springfield election was rigged"


def build_world(seed=11, coordinated=True, bots_copy_template=False, outsiders_copy=0):
    rng = np.random.default_rng(seed)
    directions = {name: unit(rng.normal(size=DIM)) for name in ("narrative", "template", "letter")}
    world = World()

    # The coordinated group: 12 new accounts in 3 /24 ranges, 6 bursts of 2 prompts each, and
    # 3 other prompts each: 80% of their traffic is the narrative.
    ranges = ("203.0.113", "198.51.100", "192.0.2")
    for i in range(12):
        account = f"bot-{i:02d}"
        world.bots.append(account)
        key = f"bk-{i}"
        ip = f"{ranges[i % 3]}.{10 + i}" if coordinated else \
            f"{rng.integers(1, 223)}.{rng.integers(0, 255)}.{rng.integers(0, 255)}.7"
        agent = "Mozilla/5.0 (X11; Linux x86_64) Chrome/119.0" if coordinated else \
            SDK_AGENTS[i % len(SDK_AGENTS)]
        world.key_first_seen[key] = T0 - 3_600_000 if coordinated else \
            T0 - int(rng.integers(30 * DAY, 900 * DAY))
        for burst in range(6):
            for k in range(2):
                if coordinated:
                    ts = T0 + burst * 15 * MINUTE + rng.integers(0, 40_000)
                else:
                    ts = T0 + rng.integers(0, WINDOW - MINUTE)
                if bots_copy_template:
                    prompt = COPIED
                else:
                    prompt = f"{OPENERS[(i + burst + k) % 6]} {CLAIMS[(i * 2 + burst + k) % 5]}"
                if not coordinated:  # independent people write in their own words
                    letters = "abcdefghijklmnopqrstuvwxyz"
                    prompt += f" (my own take {letters[i]}{letters[burst * 2 + k]})"
                add(world, rng, account, ts, noisy(rng, directions["narrative"], 0.9),
                    prompt, key, ip, agent)
        off_topic(world, rng, account, key, ip, agent, 3)

    # Ordinary users who once ask about the same story, among many other prompts.
    for i in range(10):
        account = f"citizen-{i}"
        world.key_first_seen[f"ck-{i}"] = T0 - 300 * DAY
        add(world, rng, account, T0 + rng.integers(0, WINDOW - MINUTE),
            noisy(rng, directions["narrative"], 0.9),
            f"Is it true that {CLAIMS[i % 5]}?", f"ck-{i}", f"100.{64 + i}.{i}.9",
            SDK_AGENTS[i % 5])
        off_topic(world, rng, account, f"ck-{i}", "", "", 9)

    # A text gone viral: ordinary accounts send the very text the group copies, once each.
    for i in range(outsiders_copy):
        account = f"sharer-{i}"
        world.key_first_seen[f"vk-{i}"] = T0 - int(rng.integers(30 * DAY, 900 * DAY))
        add(world, rng, account, T0 + rng.integers(0, WINDOW - MINUTE),
            noisy(rng, directions["narrative"], 0.9), COPIED, f"vk-{i}",
            f"100.{i % 200}.{i % 7}.3", SDK_AGENTS[i % 5])
        off_topic(world, rng, account, f"vk-{i}", "", "", 9)

    # A popular template: 200 accounts fill in the same product-description prompt. Very tight
    # vectors; most accounts do plenty else, some only this (their share is 100%).
    products = ("espresso machine", "hiking boots", "desk lamp", "yoga mat", "phone case",
                "kettle", "backpack", "water bottle")
    for i in range(200):
        account = f"shop-{i}"
        world.template_accounts.add(account)
        key = f"sk-{i}"
        world.key_first_seen[key] = T0 - int(rng.integers(30 * DAY, 900 * DAY))
        ip = f"{rng.integers(1, 223)}.{rng.integers(0, 255)}.{rng.integers(0, 255)}.{i % 200 + 1}"
        for _ in range(1 + i % 2):
            prompt = (f"Write a product description for our {products[rng.integers(0, 8)]} in a "
                      f"friendly tone, under {rng.integers(5, 20) * 10} words")
            add(world, rng, account, T0 + rng.integers(0, WINDOW - MINUTE),
                noisy(rng, directions["template"], 0.97), prompt, key, ip, SDK_AGENTS[i % 5])
        if i % 5:
            off_topic(world, rng, account, key, ip, "", int(rng.integers(8, 40)))

    # Cover letters: a broad task, so looser vectors, hundreds of unrelated people.
    for i in range(300):
        account = f"seeker-{i}"
        world.letter_accounts.add(account)
        key = f"jk-{i}"
        world.key_first_seen[key] = T0 - int(rng.integers(DAY, 900 * DAY))
        ip = f"{rng.integers(1, 223)}.{rng.integers(0, 255)}.{rng.integers(0, 255)}.{i % 250 + 1}"
        add(world, rng, account, T0 + rng.integers(0, WINDOW - MINUTE),
            noisy(rng, directions["letter"], 0.85),
            f"Write a cover letter for a job as a {('nurse', 'teacher', 'developer')[i % 3]}",
            key, ip, SDK_AGENTS[i % 5])
        off_topic(world, rng, account, key, ip, "", int(rng.integers(0, 12)))

    # Background: unrelated one-off prompts.
    for i in range(250):
        add(world, rng, f"user-{i}", T0 + rng.integers(0, WINDOW - MINUTE),
            unit(rng.normal(size=DIM)).astype(np.float32), f"random question {i}",
            f"uk-{i}", f"10.{i % 250}.{i % 7}.1", SDK_AGENTS[i % 5])
        world.key_first_seen[f"uk-{i}"] = T0 - 400 * DAY
    world.points.sort(key=lambda p: (p.ts_ms, p.event_id))
    return world


def run(world, judge=None):
    judge = judge or CampaignJudge()
    clusterer = OnlineClusterer(window_ms=WINDOW, bin_ms=MINUTE)
    next_refine = T0 + 10 * MINUTE
    for point in world.points:
        if point.ts_ms >= next_refine:
            clusterer.refine()
            next_refine += 10 * MINUTE
        clusterer.add(point)
    clusterer.refine()
    census = clusterer.census()
    assessments = [
        judge.assess(clusterer.snapshot(cid), world.activity,
                     key_first_seen_ms=world.key_first_seen, census=census)
        for cid in clusterer.cluster_ids(min_accounts=judge.min_accounts)
    ]
    return clusterer, assessments


@pytest.fixture(scope="module")
def coordinated():
    world = build_world()
    clusterer, assessments = run(world)
    return world, clusterer, assessments


def findings(assessments):
    return [a.finding for a in assessments if a.finding is not None]


def test_coordinated_group_is_one_campaign_with_its_members_and_no_outsiders(coordinated):
    world, _, assessments = coordinated
    [finding] = findings(assessments)
    members = set(finding.accounts)
    assert len(members & set(world.bots)) >= 0.9 * len(world.bots)
    assert members <= set(world.bots)
    assert finding.evidence["timing_sync"] > 0.5
    assert finding.evidence["shared_networks"] > 0.5
    assert finding.evidence["new_key_share"] > 0.5
    assert finding.evidence["concentration"] >= 0.7
    assert 0.0 <= finding.score <= 1.0
    assert set(finding.label_terms) & {"springfield", "quimby", "ballots", "election", "mayor"}
    assert 1 <= len(finding.sample_prompts) <= 5
    assert all("Springfield" in p or "Quimby" in p for p in finding.sample_prompts)
    assert all(ip.rsplit(".", 1)[0] in {"203.0.113", "198.51.100", "192.0.2"}
               for ip in finding.ips)
    assert any("network ranges" in reason for reason in finding.reasons)


def test_what_the_screen_passes_over_could_never_be_a_campaign(coordinated):
    """`may_find` lets the tracker skip judging a group from its prompts per account: every
    cluster it turns away fails on accounts when judged in full, and the campaign passes."""
    _, clusterer, assessments = coordinated
    judge = CampaignJudge()
    ids = clusterer.cluster_ids(min_accounts=judge.min_accounts)
    screened = [judge.may_find([clusterer.account_posts(cid)]) for cid in ids]
    assert not all(screened), "the world has clusters of one-off prompts to turn away"
    for passes, assessment in zip(screened, assessments, strict=True):
        if not passes:
            assert assessment.finding is None and "accounts" in assessment.failed
    assert all(passes for passes, a in zip(screened, assessments, strict=True) if a.finding)


def test_the_user_agents_its_members_share_are_in_the_evidence(coordinated):
    """For peers to match on (misuse export stix): only agents mostly the group's own."""
    _, _, assessments = coordinated
    [finding] = findings(assessments)
    assert finding.evidence["user_agents"] == ["Mozilla/5.0 (X11; Linux x86_64) Chrome/119.0"]


def test_crowds_are_not_campaigns_and_say_why(coordinated):
    world, clusterer, assessments = coordinated
    crowds = [a for a in assessments if a.finding is None and a.evidence["cluster_accounts"] >= 50]
    assert crowds, "the template and cover-letter crowds should form large clusters"
    for assessment in crowds:
        assert "coordination" in assessment.failed
        assert assessment.evidence["coordination"] < 0.3
    template = max(assessments, key=lambda a: len(
        set(clusterer.snapshot(a.cluster_id).accounts) & world.template_accounts))
    assert template.finding is None
    assert template.evidence["narrowness"] > 0.9  # tight content alone is not enough
    assert template.evidence["popularity"] > 0.5
    # Only the few accounts that send nothing else concentrate on it; they are not coordinated.
    assert template.evidence["core_accounts"] < 0.5 * template.evidence["cluster_accounts"]


def test_popular_template_is_popularity_even_for_its_concentrated_users(coordinated):
    world, clusterer, assessments = coordinated
    for assessment in assessments:
        accounts = set(clusterer.snapshot(assessment.cluster_id).accounts)
        if len(accounts & (world.template_accounts | world.letter_accounts)) > len(accounts) / 2:
            assert assessment.finding is None


def test_uncoordinated_focused_accounts_are_not_a_campaign():
    """Same narrative and concentration, but independent timing, networks, agents and keys."""
    world = build_world(coordinated=False)
    _, assessments = run(world)
    assert findings(assessments) == []
    narrative = [a for a in assessments if a.evidence["core_accounts"] >= 8
                 and a.evidence["concentration"] > 0.7 and a.evidence["template_share"] < 0.5]
    assert narrative and all("coordination" in a.failed for a in narrative)


def test_copying_inside_the_group_is_reuse_copying_a_viral_text_is_popularity(coordinated):
    _, copied = run(build_world(bots_copy_template=True))
    _, _, original = coordinated
    bots = next(a for a in copied if a.finding is not None)
    # One text shared by the group and nobody else: coordination, not popularity.
    assert bots.evidence["payload_reuse"] > 0.8
    assert bots.evidence["popularity"] < 0.1
    assert bots.evidence["coordination"] >= next(
        a for a in original if a.finding is not None).evidence["coordination"]

    _, viral = run(build_world(bots_copy_template=True, outsiders_copy=60))
    shared = next(a for a in viral if a.evidence["core_accounts"] >= 8)
    # The same text also sent by 60 ordinary accounts: it is viral, so it says less.
    assert shared.evidence["popularity"] > 0.5
    assert shared.evidence["payload_reuse"] < 0.5 * bots.evidence["payload_reuse"]
    assert shared.evidence["content"] < bots.evidence["content"]
    assert shared.evidence["score"] < bots.evidence["score"]


def test_alert_has_one_stable_identity_as_the_campaign_grows(coordinated):
    world, _, assessments = coordinated
    [finding] = findings(assessments)
    alert = campaign_alert(finding, "high")
    assert alert.rule_id == RULE_ID and alert.detector == "campaign"
    assert alert.entity.kind == "campaign" and alert.entity.id == finding.campaign_id
    assert alert.incident_start_ms == finding.first_seen_ms
    assert alert.accounts == finding.accounts
    assert alert.evidence["label_terms"] == list(finding.label_terms)

    # Later in the window the group keeps posting: same campaign id, same alert id.
    clusterer = OnlineClusterer(window_ms=WINDOW, bin_ms=MINUTE)
    half = [p for p in world.points if p.ts_ms < T0 + 50 * MINUTE]
    judge = CampaignJudge()
    alerts = []
    for part in (half, world.points):
        for point in part:
            clusterer.add(point)
        clusterer.refine()
        census = clusterer.census()
        for cid in clusterer.cluster_ids(min_accounts=8):
            found = judge.judge(clusterer.snapshot(cid), world.activity,
                                key_first_seen_ms=world.key_first_seen, census=census)
            if found is not None:
                alerts.append(campaign_alert(found, "high"))
    assert len(alerts) == 2
    assert alerts[0].alert_id == alerts[1].alert_id
    assert alerts[1].evidence["size"] > alerts[0].evidence["size"]


def test_too_few_accounts_is_not_a_campaign(coordinated):
    world, clusterer, assessments = coordinated
    [finding] = findings(assessments)
    strict = CampaignJudge(min_accounts=len(finding.accounts) + 1)
    census = clusterer.census()
    snapshot = clusterer.snapshot(finding.campaign_id)
    assessment = strict.assess(snapshot, world.activity, key_first_seen_ms=world.key_first_seen,
                               census=census)
    assert assessment.finding is None and assessment.failed == ("accounts",)


def test_label_terms_pick_the_shared_subject():
    prompts = [f"{opener} {claim}" for opener in OPENERS[:3] for claim in CLAIMS]
    terms = label_terms(prompts)
    assert "springfield" in terms and len(terms) == 5
    assert label_terms(["the and of", ""]) == ()


def test_template_share_counts_the_cross_account_pairs_that_share_most_words():
    """Pairs of one account, and samples with no words, are not counted; a pair shares most
    words at Jaccard >= 0.5 (here 3 of 5 words)."""
    texts = [("a", "Vote for X today"), ("a", "vote for x today!"), ("b", "vote for Y today"),
             ("c", "cats are nice"), ("d", "...")]
    points = [ClusterPoint(f"e{n}", n, np.zeros(DIM), account, "k", "198.51.100.1", "", text,
                           text) for n, (account, text) in enumerate(texts)]
    # Cross-account pairs among the four with words: a-b twice, a-c twice, b-c; similar: a-b.
    assert CampaignJudge()._template_share(points) == 2 / 5
    assert CampaignJudge()._template_share(points[:2]) == 0.0  # one account: no pair
