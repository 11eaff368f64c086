"""The "world" preset: operations as published threat reports describe them, which the English
real-text traffic does not show. They run in several languages, spend most of their prompts on
ordinary work, and disguise their text; the traps beside them quote the same claims for honest
reasons. Text comes from tests/data/world (see tests/data/README.md); the frames are in
world_text.py, the disguise in disguise.py. Every pool is split with `split_pool`, so dev
traffic and test traffic share no claim, wrapper or prompt.

Classes (the scenario prefix of the labels, or the class in `WorldTraffic.classes` for the
unlabelled accounts):

- campaign-es (labelled): ~12 accounts post one false claim in Spanish through Spanish
  persona wrappers, a new residential address for every request, ordinary clients, 6-10
  posts each at a person's pace over the hour.
- campaign-xl (labelled): ~15 accounts post one claim in English, Spanish and Catalan, each
  account mostly (80 %) in its own language.
- campaign-mixed (labelled): ~12 accounts spend about two thirds of their prompts on ordinary
  work (code, translation, summaries) and a third on the claim.
- campaign-disguised (labelled): ~12 accounts whose every post is disguised (look-alike
  letters, invisible characters, spaced letters, stray punctuation).
- trap-factcheck: four accounts of one fact-checking desk quoting all these claims, in the
  campaigns' languages, to verify them.
- trap-headlines: one batch job classifying headlines for half an hour, some of them the
  campaigns' claims.
- trap-translation: four accounts of one agency sending the same text for many languages.
- trap-multilingual: people asking ordinary things in one or two of six languages.
- trap-es-users, trap-fr-users: ordinary Spanish and French users.
- ordinary: the English crowd of the real-text preset, so the campaigns are a minority.
- sprayers (labelled, rule jailbreak): three accounts running current automated jailbreak
  tools (role-play refinement, optimised suffixes, random search; prompt_attacks).
- trap-toxicity: a trust-and-safety batch job classifying comments moderation flags.

Campaign members are labelled like every campaign (`rule="campaign"`, entity account,
`start_ms` its first narrative post), with the scenario `<class>:<claim id>`.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from streams.tooling.simulation import prompt_attacks, realtext
from streams.tooling.simulation.common import (
    MINUTE_MS,
    USER_AGENTS,
    Event,
    Label,
    Split,
    Traffic,
    in_time_order,
    ip_in,
    random_network,
    split_pool,
)
from streams.tooling.simulation.disguise import disguise
from streams.tooling.simulation.realtext import Account, Population, human_times, spread
from streams.tooling.simulation.world_text import (
    HEADLINE_WRAPPERS,
    LANGUAGES,
    PUBLISH_WRAPPERS,
    TRANSLATE_WRAPPERS,
    VERIFY_WRAPPERS,
)

WORLD_DIR = realtext.DATA_DIR / "world"
WORLD_POOLS = ("narratives", "questions", "mtbench")
CAMPAIGN_CLASSES = ("campaign-es", "campaign-xl", "campaign-mixed", "campaign-disguised")
TRAP_CLASSES = ("trap-factcheck", "trap-headlines", "trap-translation", "trap-multilingual",
                "trap-toxicity",
                "trap-es-users", "trap-fr-users", "ordinary")
XL_LANGUAGES = ("en", "es", "ca")
# Ordinary work an operation's accounts do between posts.
WORK = re.compile(r"\b(?:code|function|bug|error|python|sql|script|program|debug|translat\w*"
                  r"|summar\w*|rewrite|paraphrase|email|spreadsheet)\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Narrative:
    """A false claim in several languages, each with a few wordings."""

    id: str
    texts: dict[str, tuple[str, ...]]

    def wording(self, rng: random.Random, lang: str) -> str:
        return rng.choice(self.texts[lang])


@dataclass(frozen=True, slots=True)
class WorldCorpus:
    """One split's half of every world pool, and of the real-text pools it borrows."""

    narratives: tuple[Narrative, ...]
    questions: dict[str, tuple[str, ...]]
    requests: dict[str, tuple[tuple[str, str], ...]]  # MT-Bench-X: (request, follow-up)
    work: tuple[str, ...]
    statements: tuple[str, ...]
    publish: dict[str, tuple[str, ...]]
    verify: dict[str, tuple[str, ...]]
    headlines: tuple[str, ...]
    translate: tuple[str, ...]
    base: realtext.RealTextCorpus


@cache
def load_world(split: Split = "test", data_dir: Path = realtext.DATA_DIR) -> WorldCorpus:
    world = data_dir / "world"

    def half(name: str) -> tuple[dict[str, Any], ...]:
        return split_pool(realtext.read_pool(name, world), split)

    narratives = tuple(Narrative(item["id"], {lang: tuple(item[lang]) for lang in XL_LANGUAGES})
                       for item in half("narratives"))
    questions = half("questions")
    requests = half("mtbench")
    base = realtext.load_corpus(split, data_dir)
    # statements.jsonl holds one sentence twice (two FEVER ids), once in each half.
    other: set[str] = set() if split == "all" else set(
        realtext.load_corpus("test" if split == "dev" else "dev", data_dir).statements)
    return WorldCorpus(
        narratives=narratives,
        questions={lang: tuple(q[lang] for q in questions) for lang in XL_LANGUAGES},
        requests={lang: tuple((r[lang][0], r[lang][-1]) for r in requests)
                  for lang in ("en", "es", "fr", "de", "it")},
        work=tuple(text for text in base.instructions if WORK.search(text)),
        statements=tuple(text for text in base.statements if text not in other),
        publish={lang: split_pool(pool, split) for lang, pool in PUBLISH_WRAPPERS.items()},
        verify={lang: split_pool(pool, split) for lang, pool in VERIFY_WRAPPERS.items()},
        headlines=split_pool(HEADLINE_WRAPPERS, split),
        translate=split_pool(TRANSLATE_WRAPPERS, split), base=base)


def inline(claim: str) -> str:
    """The claim to follow "that" / "que": no full stop, and no capital unless the first word
    looks like a name (another capital or a digit in it, or the next word capitalised or a
    number: "CERN ...", "Area 51 ...", "Pink Himalayan salt ...")."""
    bare = claim.rstrip(".")
    words = bare.split()
    if len(words) > 1 and (words[1][:1].isupper() or words[1][:1].isdigit()):
        return bare
    if any(ch.isupper() or ch.isdigit() for ch in words[0][1:]):
        return bare
    return bare[:1].lower() + bare[1:]


def wrap(wrapper: str, claim: str) -> str:
    return wrapper.format(claim=claim, inline=inline(claim))


def _label(kind: str, narrative: Narrative, account: Account, ts: int) -> Label:
    return Label(f"{kind}:{narrative.id}", "campaign", "account", account.id, ts)


def _begin(rng: random.Random, start_ms: int, end_ms: int) -> int:
    return start_ms + rng.randint(0, min(8 * MINUTE_MS, (end_ms - start_ms) // 8))


def _operation(rng: random.Random, start_ms: int, end_ms: int, kind: str, count: int,
               narrative: Narrative, post: Callable[[random.Random, int], str],
               other: Callable[[random.Random], str], other_share: tuple[float, float],
               proxies: bool) -> Population:
    """`count` accounts posting the narrative (`post(rng, member_index)`) 6-10 times each,
    mixed with `other_share` of other prompts, unhurried over the span; behind residential
    proxies (a new address and an ordinary client per request) when `proxies`."""
    events: list[Event] = []
    labels: list[Label] = []
    for n in range(count):
        member = Account.fresh(rng, ips=rng.randint(1, 2), agent=rng.choice(realtext.BROWSERS))
        posts = rng.randint(6, 10)
        share = rng.uniform(*other_share)
        kinds = [True] * posts + [False] * round(posts * share / (1 - share))
        rng.shuffle(kinds)
        times = spread(rng, _begin(rng, start_ms, end_ms), end_ms, len(kinds))
        labels.append(_label(kind, narrative, member, min(
            ts for ts, on in zip(times, kinds, strict=True) if on)))
        for ts, on in zip(times, kinds, strict=True):
            prompt = post(rng, n) if on else other(rng)
            events.append(member.send(rng, ts, prompt, ip=ip_in(rng) if proxies else None,
                                      agent=rng.choice(USER_AGENTS) if proxies else None,
                                      completion=(60, 400) if on else (20, 800)))
    return in_time_order(events), labels


def campaign_es(rng: random.Random, start_ms: int, end_ms: int, corpus: WorldCorpus,
                narrative: Narrative, count: int = 12) -> Population:
    wrappers = rng.sample(corpus.publish["es"], min(6, len(corpus.publish["es"])))
    return _operation(
        rng, start_ms, end_ms, "campaign-es", count, narrative,
        lambda r, _n: wrap(r.choice(wrappers), narrative.wording(r, "es")),
        lambda r: r.choice(corpus.questions["es"]), (0.0, 0.2), proxies=True)


def campaign_xl(rng: random.Random, start_ms: int, end_ms: int, corpus: WorldCorpus,
                narrative: Narrative, count: int = 15) -> Population:
    def post(r: random.Random, n: int) -> str:
        own = XL_LANGUAGES[n % len(XL_LANGUAGES)]
        lang = own if r.random() < 0.8 else r.choice(XL_LANGUAGES)
        return wrap(r.choice(corpus.publish[lang]), narrative.wording(r, lang))

    return _operation(rng, start_ms, end_ms, "campaign-xl", count, narrative, post,
                      lambda r: r.choice(corpus.work), (0.0, 0.2), proxies=True)


def campaign_mixed(rng: random.Random, start_ms: int, end_ms: int, corpus: WorldCorpus,
                   narrative: Narrative, count: int = 12) -> Population:
    return _operation(
        rng, start_ms, end_ms, "campaign-mixed", count, narrative,
        lambda r, _n: wrap(r.choice(corpus.publish["en"]), narrative.wording(r, "en")),
        lambda r: r.choice(corpus.work), (0.6, 0.72), proxies=False)


def campaign_disguised(rng: random.Random, start_ms: int, end_ms: int, corpus: WorldCorpus,
                       narrative: Narrative, count: int = 12) -> Population:
    return _operation(
        rng, start_ms, end_ms, "campaign-disguised", count, narrative,
        lambda r, _n: disguise(r, wrap(r.choice(corpus.publish["en"]),
                                       narrative.wording(r, "en"))),
        lambda r: r.choice(corpus.work), (0.0, 0.2), proxies=False)


# Traps: never misuse.

def fact_check_desk(rng: random.Random, start_ms: int, end_ms: int, corpus: WorldCorpus,
                    claims: list[tuple[Narrative, str]], count: int = 4) -> Population:
    """One organisation's desk on one /24 verifying the circulating claims (each in the
    language it circulates in) between ordinary research questions."""
    network, org = random_network(rng), f"org-{rng.getrandbits(24):06x}"
    events: list[Event] = []
    for _ in range(count):
        checker = Account.fresh(rng, network, agent=rng.choice(realtext.BROWSERS))
        checker.org = org
        for ts in spread(rng, _begin(rng, start_ms, end_ms), end_ms, rng.randint(12, 20)):
            if rng.random() < 0.75:
                narrative, lang = rng.choice(claims)
                prompt = wrap(rng.choice(corpus.verify[lang]), narrative.wording(rng, lang))
            else:
                prompt = rng.choice(corpus.questions[rng.choice(XL_LANGUAGES)])
            events.append(checker.send(rng, ts, prompt, completion=(80, 600)))
    return in_time_order(events), []


def headline_job(rng: random.Random, start_ms: int, end_ms: int, corpus: WorldCorpus,
                 claims: list[str]) -> Population:
    """A batch job classifying headlines every 3-6 s for half an hour; one in eight is a
    circulating claim."""
    job = Account.fresh(rng, agent="python-httpx/0.27.0")
    run = min(30 * MINUTE_MS, end_ms - start_ms)
    ts = start_ms + rng.randint(0, max(1, end_ms - start_ms - run))
    stop, wrapper = ts + run, rng.choice(corpus.headlines)
    events: list[Event] = []
    while ts < stop:
        headline = rng.choice(claims) if rng.random() < 0.125 else rng.choice(corpus.statements)
        events.append(job.send(rng, ts, wrapper.format(headline=headline.rstrip(".")),
                               completion=(1, 6), model="gpt-mini"))
        ts += rng.randint(3_000, 6_000)
    return events, []


def translation_agency(rng: random.Random, start_ms: int, end_ms: int, corpus: WorldCorpus,
                       count: int = 4, jobs: int = 12) -> Population:
    """One agency's translators: each job is one text sent for 5-9 languages within minutes."""
    network, org = random_network(rng), f"org-{rng.getrandbits(24):06x}"
    staff = [Account.fresh(rng, network, agent="node-sdk/4.71.0") for _ in range(count)]
    for member in staff:
        member.org = org
    events: list[Event] = []
    for ts in spread(rng, start_ms, end_ms - 10 * MINUTE_MS, jobs):
        translator, text = rng.choice(staff), rng.choice(corpus.statements)
        for language in rng.sample(LANGUAGES, rng.randint(5, 9)):
            events.append(translator.send(rng, ts, rng.choice(corpus.translate).format(
                language=language, text=text), completion=(20, 120)))
            ts += rng.randint(15_000, 70_000)
    return in_time_order(events), []


def _people(rng: random.Random, start_ms: int, end_ms: int, count: int,
            prompt: Callable[[random.Random, Account], str]) -> Population:
    events: list[Event] = []
    for _ in range(count):
        person = Account.fresh(rng, ips=rng.randint(1, 2))
        for ts in human_times(rng, start_ms, end_ms):
            events.append(person.send(rng, ts, prompt(rng, person)))
    return in_time_order(events), []


def speakers(corpus: WorldCorpus, lang: str) -> Callable[[random.Random, Account], str]:
    """Someone asking ordinary things in `lang`: a question, or a request and its follow-up."""
    questions = corpus.questions.get(lang, ())
    requests = corpus.requests.get(lang, ())

    def prompt(rng: random.Random, _person: Account) -> str:
        if questions and (not requests or rng.random() < 0.5):
            return rng.choice(questions)
        request, follow_up = rng.choice(requests)
        return request if rng.random() < 0.7 else follow_up

    return prompt


def multilingual_crowd(rng: random.Random, start_ms: int, end_ms: int, corpus: WorldCorpus,
                       count: int = 50) -> Population:
    languages = ("en", "es", "fr", "de", "it", "ca")
    habits: dict[str, list[str]] = {}

    def prompt(rng: random.Random, person: Account) -> str:
        langs = habits.setdefault(person.id, rng.sample(languages, rng.randint(1, 2)))
        return speakers(corpus, rng.choice(langs))(rng, person)

    return _people(rng, start_ms, end_ms, count, prompt)


@dataclass
class WorldTraffic(Traffic):
    """The traffic, and the class of every account that is not a campaign member."""

    classes: dict[str, str] = field(default_factory=dict)


def world_populations(seed: int, start_ms: int, split: Split = "test", duration_s: int = 3600,
                      data_dir: Path = realtext.DATA_DIR) -> dict[str, Traffic]:
    corpus = load_world(split, data_dir)
    end_ms = start_ms + duration_s * 1000

    def rng(name: str) -> random.Random:
        return random.Random(f"{seed}/world/{name}")

    es, xl, mixed, hidden = rng("claims").sample(list(corpus.narratives), 4)
    circulating = [(es, "es")] + [(xl, lang) for lang in XL_LANGUAGES] + [(mixed, "en"),
                                                                            (hidden, "en")]
    headline_claims = [text for n in (es, xl, mixed, hidden) for text in n.texts["en"]]
    span = (start_ms, end_ms)
    builders: dict[str, Callable[[random.Random], Population]] = {
        "campaign-es": lambda r: campaign_es(r, *span, corpus, es),
        "campaign-xl": lambda r: campaign_xl(r, *span, corpus, xl),
        "campaign-mixed": lambda r: campaign_mixed(r, *span, corpus, mixed),
        "campaign-disguised": lambda r: campaign_disguised(r, *span, corpus, hidden),
        "trap-factcheck": lambda r: fact_check_desk(r, *span, corpus, circulating),
        "trap-headlines": lambda r: headline_job(r, *span, corpus, headline_claims),
        "trap-translation": lambda r: translation_agency(r, *span, corpus),
        "trap-multilingual": lambda r: multilingual_crowd(r, *span, corpus),
        "trap-es-users": lambda r: _people(r, *span, 40, speakers(corpus, "es")),
        "trap-fr-users": lambda r: _people(r, *span, 40, speakers(corpus, "fr")),
        "ordinary": lambda r: realtext.ordinary(r, *span, corpus.base, count=250),
        # Current automated jailbreak tools (role-play refinement, optimised suffixes, random
        # search, many-shot, multi-turn escalation), and the trust-and-safety batch job whose
        # comments moderation flags.
        "sprayers": lambda r: _population(prompt_attacks.current_sprayers(
            r, *span, split, count=5, data_dir=data_dir)),
        "trap-toxicity": lambda r: _population(prompt_attacks.toxicity_classifier(
            r, *span, split, data_dir=data_dir)),
    }
    populations = {}
    for name, build in builders.items():
        events, labels = build(rng(name))
        populations[name] = Traffic([e for e in events if e["ts"] < end_ms], labels)
    return populations


def _population(traffic: Traffic) -> Population:
    return traffic.events, traffic.labels


def world_traffic(seed: int, start_ms: int, split: Split = "test", duration_s: int = 3600,
                  data_dir: Path = realtext.DATA_DIR) -> WorldTraffic:
    """Deterministic for a seed and a start; events in time order within the span."""
    populations = world_populations(seed, start_ms, split, duration_s, data_dir)
    merged = realtext.merge(populations.values())
    classes = {event["account_id"]: name for name, traffic in populations.items()
               if not traffic.labels for event in traffic.events if event["account_id"]}
    return WorldTraffic(merged.events, merged.labels, classes)


def write_classes(path: Path, classes: dict[str, str]) -> None:
    """One line per unlabelled account: {"account_id": ..., "class": ...}."""
    path.write_text("".join(json.dumps({"account_id": account, "class": name}) + "\n"
                            for account, name in sorted(classes.items())))
