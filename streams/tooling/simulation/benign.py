"""Benign crowds: people and apps at their own pace, including crowds that share one public
prompt template. None of them is misuse; the template crowds are there so that "many accounts
sending similar prompts" is not mistaken for a campaign.

Each crowd is one generator over a heap of accounts keyed by their next request time, so a
crowd of any size yields its events in time order with memory proportional to its accounts.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from streams.tooling.simulation.common import (
    ENDPOINTS,
    MINUTE_MS,
    MODELS,
    USER_AGENTS,
    Event,
    ip_in,
    quiet_moderation,
    usage_event,
)

TASKS = (
    "Summarize this article about {topic} in three bullet points.",
    "Explain {topic} to a ten-year-old.",
    "Write a short poem about {topic}.",
    "What are the pros and cons of {topic}?",
    "Draft a polite email to my landlord about {topic}.",
    "Give me a study plan to learn {topic} in four weeks.",
    "Translate into French: 'I would like to know more about {topic}.'",
    "Write a Python function that helps with {topic}.",
    "Compare {topic} with its main alternatives in a table.",
    "List five interview questions about {topic}.",
    "Fix the grammar: 'me and him has been thinking about {topic} alot'",
    "What is the history of {topic}?",
    "Suggest a name for a startup working on {topic}.",
    "Outline a blog post on {topic} for beginners.",
    "I'm giving a talk on {topic} next week. What should the three main sections be?",
    "Can you recommend some good books on {topic}?",
    "What are common beginner mistakes with {topic}?",
    "Turn these notes into a paragraph: {topic}, deadline friday, ask Sam for numbers",
    "Make a checklist for getting started with {topic}.",
    "My friend says {topic} is overrated. What would be a fair counterargument?",
    "Write a unit test for a function related to {topic}.",
    "Explain the jargon people use when talking about {topic}.",
    "Give me a weekend project idea involving {topic}.",
    "Rewrite this sentence to sound more professional: 'we kinda messed up the {topic} thing'",
    "How do I explain {topic} to my manager in two sentences?",
    "Create a quiz with five questions on {topic} for my class.",
)
TOPICS = (
    "sourdough baking", "kubernetes autoscaling", "the french revolution", "tax deductions",
    "marathon training", "quantum computing", "urban gardening", "rust lifetimes",
    "renewable energy storage", "the stock market", "sleep hygiene", "jazz improvisation",
    "machine learning ethics", "home espresso", "climate adaptation", "medieval castles",
    "SQL window functions", "remote team management", "bird migration", "electric bikes",
    "personal budgeting", "react hooks", "volcanoes", "chess openings", "dog training",
    "watercolor painting", "postgres indexing", "houseplant care", "the roman empire",
    "learning japanese", "photography composition", "sailing basics", "typescript generics",
    "composting", "public speaking", "the water cycle", "startup fundraising", "knitting",
    "bread machines", "container security", "data visualization", "first aid",
    "beekeeping", "cycling nutrition", "graph databases", "negotiating a raise",
)

# Public templates that many unrelated accounts paste: the template crowds.
SENTIMENT_TEMPLATE = ("Classify the sentiment of this review as positive, negative or neutral: "
                      "{review}")
COVER_LETTER_TEMPLATE = ("Write a cover letter for a {job} position at {company} highlighting "
                         "{skill}")
PRODUCTS = (
    "blender", "running shoes", "phone case", "hotel room", "pizza", "headphones", "vacuum",
    "coffee grinder", "novel", "desk chair", "rain jacket", "router", "yoga mat", "tent",
    "e-reader", "kettle", "backpack", "air fryer", "monitor", "car rental",
)
OPINIONS = (
    "works exactly as described", "broke after two weeks", "is fine for the price",
    "exceeded my expectations", "arrived late and scratched", "is honestly just okay",
    "was a total waste of money", "is the best purchase I made this year",
    "does the job but the manual is useless", "smells weird but performs well",
    "stopped charging after a month", "made my mornings so much easier",
)
ASIDES = (
    "", " Shipping was quick.", " Customer service never replied.", " Would buy again.",
    " My kids love it.", " Not sure I'd recommend it.", " Five stars.", " Two stars, sadly.",
    " The color is different from the photos.", " Setup took ten minutes.",
)
JOBS = (
    "junior data analyst", "registered nurse", "backend engineer", "marketing coordinator",
    "warehouse supervisor", "UX designer", "high school math teacher", "paralegal",
    "customer success manager", "electrician apprentice", "product manager", "barista",
    "financial analyst", "dental hygienist", "DevOps engineer", "graphic designer",
    "sales associate", "research assistant", "HR generalist", "line cook",
)
COMPANIES = (
    "Brightleaf Analytics", "Northwind Health", "Copperline Logistics", "Bluefin Software",
    "Maple & Oak Bakery", "Harbor City Schools", "Quillfield Legal", "Sunpeak Solar",
    "Redwood Dental", "Lumen Retail", "Atlas Freight", "Cobalt Labs", "Greenway Grocers",
    "Pinecrest Hospital", "Orbit Media", "Stonebridge Bank",
)
SKILLS = (
    "my attention to detail", "five years of customer-facing experience", "SQL and Python",
    "leading small teams", "bilingual communication", "working under pressure",
    "my certification in project management", "a track record of cutting costs",
    "patient care in busy wards", "cloud infrastructure automation", "creative problem solving",
    "inventory management", "my volunteer work", "data-driven decision making",
)

Pacer = Callable[[random.Random], int]


@dataclass(slots=True)
class _Member:
    """One account of a crowd and where it is in its rhythm."""

    account: str
    org: str | None
    keys: tuple[str, ...]
    ip: str
    agent: str
    human: bool
    mean_gap_ms: float
    mean_break_ms: float
    session_left: int
    template_share: float


def benign_prompt(rng: random.Random) -> str:
    return rng.choice(TASKS).format(topic=rng.choice(TOPICS))


def sentiment_prompt(rng: random.Random) -> str:
    review = f"The {rng.choice(PRODUCTS)} {rng.choice(OPINIONS)}.{rng.choice(ASIDES)}"
    return SENTIMENT_TEMPLATE.format(review=review)


def cover_letter_prompt(rng: random.Random) -> str:
    return COVER_LETTER_TEMPLATE.format(job=rng.choice(JOBS), company=rng.choice(COMPANIES),
                                        skill=rng.choice(SKILLS))


PRODUCT_TEMPLATE = "Write a product description for our {product} in a {tone} tone for {audience}"
EMAIL_TEMPLATE = "Summarize this email in one sentence for my manager: {email}"
TONES = ("friendly", "playful", "premium", "no-nonsense", "warm", "technical", "minimalist")
AUDIENCES = ("busy parents", "students", "retirees", "outdoor fans", "small offices",
             "first-time buyers", "gamers", "home cooks")
EMAIL_OPENERS = ("Hi team, quick update:", "Hello, following up on yesterday:",
                 "Dear all, as discussed:", "Hey, just a heads up:")
EMAIL_BODIES = ("the {topic} workshop moves to Thursday", "we need two volunteers for {topic}",
                "the budget for {topic} was approved", "the {topic} report is late again",
                "please send your notes on {topic} by Friday",
                "the vendor for {topic} raised prices")


def product_prompt(rng: random.Random) -> str:
    return PRODUCT_TEMPLATE.format(product=rng.choice(PRODUCTS), tone=rng.choice(TONES),
                                   audience=rng.choice(AUDIENCES))


def email_prompt(rng: random.Random) -> str:
    body = rng.choice(EMAIL_BODIES).format(topic=rng.choice(TOPICS))
    return EMAIL_TEMPLATE.format(email=f"{rng.choice(EMAIL_OPENERS)} {body}. Thanks!")


# Split by position like every pool (dev: sentiment, product; test: cover letter, email).
TEMPLATE_PROMPTS: dict[str, Callable[[random.Random], str]] = {
    "sentiment": sentiment_prompt, "cover_letter": cover_letter_prompt,
    "product_description": product_prompt, "email_summary": email_prompt,
}

# A viral benign topic: many accounts ask about the same news in their own words, once or
# twice each, among everything else they do. Not concentrated, not fresh, not reused.
VIRAL_TOPICS = (
    "the solar eclipse next month", "the new minimum wage law", "the heatwave warnings",
    "the championship final last night", "the recall of the popular baby formula",
    "the central bank's interest rate decision",
)
VIRAL_STEMS = (
    "Can you explain {topic} in simple terms?", "What does {topic} mean for people like me?",
    "I keep hearing about {topic}. What's actually going on?",
    "Give me a neutral summary of {topic}.", "Why is everyone talking about {topic}?",
    "What are the main facts about {topic}?", "Is there anything I should do about {topic}?",
    "How will {topic} affect families?", "Quick question on {topic}: what changed?",
    "What do experts say about {topic}?", "Help me understand {topic} before dinner tonight.",
    "My kid asked me about {topic}. How do I explain it?",
)
# A popular wrapper filled with many different payloads: one shape, no shared narrative.
POPULAR_WRAPPERS = (
    "Write a tweet saying that {statement}.",
    "Summarise in two sentences for LinkedIn: {statement}.",
    "Turn this into an upbeat Instagram caption: {statement}.",
    "Draft a short post for our team channel explaining why {statement}.",
)
STATEMENTS = (
    "our {topic} meetup moves to the community hall next week",
    "I finally finished my first project on {topic}",
    "the library now lends books on {topic} for free",
    "we are hiring someone who knows {topic}",
    "my notes on {topic} are now online for anyone",
    "the beginner course on {topic} opens again in spring",
    "our office is trying a month of {topic}",
    "I gave a talk on {topic} and it went well",
)


def viral_question(rng: random.Random, topics: tuple[str, ...]) -> str:
    return rng.choice(VIRAL_STEMS).format(topic=rng.choice(topics))


def wrapped_statement(rng: random.Random, wrappers: tuple[str, ...]) -> str:
    statement = rng.choice(STATEMENTS).format(topic=rng.choice(TOPICS))
    return rng.choice(wrappers).format(statement=statement)


def _next_gap(rng: random.Random, member: _Member) -> int:
    """People work in sessions of a few prompts with long breaks; apps call at a Poisson rate."""
    if not member.human:
        return 1_000 + int(rng.expovariate(1 / member.mean_gap_ms))
    if member.session_left > 0:
        member.session_left -= 1
        return 5_000 + int(rng.expovariate(1 / member.mean_gap_ms))
    member.session_left = rng.randint(1, 9)
    return 60_000 + int(rng.expovariate(1 / member.mean_break_ms))


def _event(rng: random.Random, member: _Member, ts: int,
           template: Callable[[random.Random], str] | None) -> Event:
    use_template = template is not None and rng.random() < member.template_share
    prompt = template(rng) if template is not None and use_template else benign_prompt(rng)
    status = 200 if rng.random() > 0.01 else rng.choice((400, 429, 401, 500))
    roll = rng.random()
    moderation = None
    if roll < 0.002:  # a crime novel, a question about a war: flagged, and nothing more
        moderation = {"flagged": True, "categories": {"violence": round(rng.uniform(0.5, 0.8), 3)}}
    elif roll < 0.25:
        moderation = quiet_moderation(rng)
    completion = rng.randint(1, 12) if use_template and template is sentiment_prompt \
        else rng.randint(20, 800)
    return usage_event(
        rng, ts, None if status == 401 else member.account, rng.choice(member.keys), member.ip,
        member.agent, prompt, org=member.org,
        endpoint="/v1/chat/completions" if use_template else rng.choice(ENDPOINTS),
        model=rng.choice(MODELS), status=status, completion_tokens=completion,
        moderation=moderation)


def crowd(rng: random.Random, start_ms: int, end_ms: int, count: int, *, prefix: str = "acct-",
          org_size: int = 5, template: str | Callable[[random.Random], str] | None = None,
          human_share: float = 0.6,
          template_share: tuple[float, float] = (0.2, 0.5)) -> Iterator[Event]:
    """`count` independent accounts, each with its own address, client, keys and rhythm.

    With `template` (a TEMPLATE_PROMPTS name, or a function of the rng making one prompt), each
    account fills that public template in a share of its prompts and asks unrelated things
    otherwise.
    """
    fill = TEMPLATE_PROMPTS[template] if isinstance(template, str) else template
    members: list[_Member] = []
    heap: list[tuple[int, int]] = []
    for index in range(count):
        account = f"{prefix}{index:05d}"
        human = rng.random() < human_share
        members.append(_Member(
            account=account, org=f"org-{prefix.removeprefix('acct-')}{index // org_size:04d}",
            keys=tuple(f"key-{account}-{k}" for k in range(rng.randint(1, 2))),
            ip=ip_in(rng), agent=rng.choice(USER_AGENTS), human=human,
            mean_gap_ms=rng.uniform(15_000, 90_000) if human else rng.uniform(20_000, 150_000),
            mean_break_ms=rng.uniform(8, 45) * MINUTE_MS, session_left=rng.randint(1, 9),
            template_share=rng.uniform(*template_share)))
        first = start_ms + rng.randint(0, max(1, min(end_ms - start_ms, 20 * MINUTE_MS)))
        if first < end_ms:
            heap.append((first, index))
    heapq.heapify(heap)
    while heap:
        ts, index = heap[0]
        member = members[index]
        event = _event(rng, member, ts, fill)
        next_ts = ts + _next_gap(rng, member)
        if next_ts < end_ms:
            heapq.heapreplace(heap, (next_ts, index))
        else:
            heapq.heappop(heap)
        yield event
