import random
from collections import Counter
from itertools import pairwise

import pytest

from detectors.events import UsageEvent, event_from_dict
from detectors.scraping import RULE_ID, ScrapingDetector, prompt_shape
from streams.runtime.policy import load_policy
from streams.runtime.rules import build
from streams.settings import REPO_ROOT
from streams.tooling.simulation import customers
from streams.tooling.simulation.benign import PRODUCTS, TOPICS
from streams.tooling.simulation.common import split_pool
from streams.tooling.simulation.prompt_attacks import DATASET_TEMPLATES, scraping

T0 = 1_790_000_000_000
MINUTE = 60_000
HOUR = 60 * MINUTE
# Distillation prompts come from a dataset of questions: they differ from the first word on.
VOCABULARY = [
    "photosynthesis", "revolution", "quantum", "tunnelling", "merge", "sort", "krebs", "cycle",
    "byzantine", "art", "plate", "tectonics", "bayesian", "inference", "restoration",
    "compiler", "design", "jazz", "harmony", "supply", "chains", "explain", "describe",
    "compare", "derive", "critique", "summarise", "teach", "why", "how", "what", "when",
    "which", "whose", "origin", "history", "future", "ethics", "economics", "proof", "example",
    "algorithm", "poem", "story", "essay", "tutorial", "overview"
]


def request(ts, account="acct-1", text=None, completion=900, max_tokens=None, event_id=None):
    extra = {} if max_tokens is None else {"max_tokens": max_tokens}
    return UsageEvent(
        event_id=event_id or f"{account}-{ts}", ts_ms=ts, account_id=account, api_key_id="k",
        ip="192.0.2.1", endpoint="/v1/chat/completions", status=200, model="model-large",
        prompt=text, prompt_tokens=40, completion_tokens=completion, extra=extra,
    )


def diverse_prompts(n, seed=1):
    rng = random.Random(seed)
    return [" ".join(rng.sample(VOCABULARY, 9)) + f"? Answer at length ({i})" for i in range(n)]


def at_rate(per_minute, minutes, start=T0):
    step = MINUTE // per_minute
    return [start + i * step for i in range(per_minute * minutes)]


def run(detector, events):
    return [alert for event in events for alert in detector.observe(event)]


def test_prompt_shape_folds_a_template_and_separates_questions():
    template = "Classify the sentiment of this review as positive or negative: {}"
    assert prompt_shape(template.format("Great phone!")) == \
        prompt_shape(template.format("Broke after 2 days, avoid."))
    assert prompt_shape("Order #123 of 5 items") == prompt_shape("order 98765 of 12 items!")
    assert prompt_shape("Explain photosynthesis in depth") != \
        prompt_shape("Explain merge sort in depth")


def test_sustained_diverse_long_completions_fire():
    detector = ScrapingDetector(min_rate_per_minute=20, min_active_minutes=8)
    times = at_rate(30, 12)
    events = [request(ts, text=t) for ts, t in zip(times, diverse_prompts(len(times)),
                                                   strict=True)]
    alerts = run(detector, events)
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert.rule_id == RULE_ID and alert.entity.id == "acct-1"
    assert alert.accounts == ("acct-1",)
    assert alert.evidence["active_minutes"] >= 8
    assert alert.evidence["shape_diversity"] >= 0.7
    assert alert.evidence["diverse_by"] == "shapes"
    assert alert.evidence["mean_completion_tokens"] >= 600
    assert alert.incident_start_ms == T0


def test_batch_customer_with_one_template_and_short_answers_does_not_fire():
    detector = ScrapingDetector()
    rng = random.Random(3)
    words = ["great", "terrible", "battery", "screen", "shipping", "price", "love", "broke"]
    events = [
        request(ts, account="batch-co",
                text="Classify the sentiment of this review as positive or negative: "
                     + " ".join(rng.choice(words) for _ in range(12)),
                completion=1)
        for ts in at_rate(60, 120)
    ]
    assert run(detector, events) == []


def test_one_template_with_long_answers_does_not_fire():
    """A summarisation pipeline: long completions, high rate, but a single prompt shape."""
    detector = ScrapingDetector()
    events = [request(ts, text=f"Summarize the following article in detail: {t}")
              for ts, t in zip(at_rate(40, 15), diverse_prompts(600), strict=True)]
    assert run(detector, events) == []


def test_diverse_long_prompts_at_a_human_rate_do_not_fire():
    detector = ScrapingDetector()
    times = at_rate(4, 60)
    events = [request(ts, text=t) for ts, t in zip(times, diverse_prompts(len(times)),
                                                   strict=True)]
    assert run(detector, events) == []


def test_a_short_burst_is_not_sustained():
    detector = ScrapingDetector(min_active_minutes=8)
    times = at_rate(100, 3)
    events = [request(ts, text=t) for ts, t in zip(times, diverse_prompts(len(times)),
                                                   strict=True)]
    assert run(detector, events) == []


def test_short_answers_fire_only_when_asking_for_the_maximum():
    times = at_rate(30, 12)
    prompts = diverse_prompts(len(times))
    short = [request(ts, text=t, completion=50) for ts, t in zip(times, prompts, strict=True)]
    assert run(ScrapingDetector(), short) == []
    detector = ScrapingDetector(model_max_tokens={"model-large": 8192})
    maxed = [request(ts, text=t, completion=50, max_tokens=8192)
             for ts, t in zip(times, prompts, strict=True)]
    alerts = run(detector, maxed)
    assert len(alerts) == 1 and alerts[0].evidence["max_tokens_share"] == 1.0


def test_without_logged_prompts_diversity_cannot_be_judged():
    detector = ScrapingDetector()
    assert run(detector, [request(ts) for ts in at_rate(30, 12)]) == []


def test_redelivered_requests_change_nothing():
    times = at_rate(30, 12)
    events = [request(ts, text=t) for ts, t in zip(times, diverse_prompts(len(times)),
                                                   strict=True)]
    once = run(ScrapingDetector(), events)
    twice = run(ScrapingDetector(), [e for event in events for e in (event, event)])
    assert once and [a.to_dict() for a in twice] == [a.to_dict() for a in once]


def test_continuing_scrape_keeps_its_id_and_resends_on_doubling():
    detector = ScrapingDetector()
    times = at_rate(25, 12) + at_rate(70, 12, start=T0 + 12 * MINUTE)
    events = [request(ts, text=t) for ts, t in zip(times, diverse_prompts(len(times)),
                                                   strict=True)]
    alerts = run(detector, events)
    requests = [a.evidence["requests"] for a in alerts]
    assert len(alerts) >= 2
    assert all(b >= 2 * a for a, b in pairwise(requests))
    assert len({a.alert_id for a in alerts}) == 1


# Templated datasets and products that fill templates.

def parsed(events):
    return [event_from_dict(raw, now_ms=T0 + 10 * HOUR) for raw in events]


def alerted_accounts(detector, events):
    return {alert.entity.id for alert in run(detector, events)}


def fixed_opening(template):
    """The words before a template's first slot (empty when it opens with its content)."""
    return template.split("{")[0].strip()


def templated(templates, per_minute, minutes, *, seed=5, account="acct-product",
              completion=(1_000, 4_000), max_tokens=4096, weights=None):
    """An account filling `templates` (with {topic} and {product} slots) at a steady rate."""
    rng = random.Random(seed)
    return [request(ts, account=account, completion=rng.randint(*completion),
                    max_tokens=max_tokens,
                    text=rng.choices(templates, weights)[0].format(
                        topic=rng.choice(TOPICS), product=rng.choice(PRODUCTS)))
            for ts in at_rate(per_minute, minutes)]


@pytest.mark.parametrize("split", ["dev", "test"])
@pytest.mark.parametrize("seed", [1, 2])
def test_templated_dataset_harvest_fires(split, seed):
    """A distiller drawing its prompts from dataset templates: few prompt shapes for its
    hundreds of requests, which the shape-diversity ratio reads as a batch job, but many
    templates, none dominant."""
    events, (label,) = scraping(random.Random(seed), T0, T0 + HOUR, style="dataset",
                                split=split)
    alerts = run(ScrapingDetector(), parsed(events))
    assert {a.entity.id for a in alerts} == {label.entity_id}
    first = alerts[0]
    assert label.start_ms <= first.incident_start_ms < label.start_ms + 10 * MINUTE
    evidence = first.evidence
    assert evidence["shape_diversity"] < 0.7
    assert evidence["diverse_by"] == "templates"
    assert evidence["distinct_template_shapes"] >= 8
    assert evidence["top_template_shape_share"] <= 0.5
    assert any(f"{evidence['distinct_template_shapes']} template shapes" in reason
               for reason in first.reasons)
    # The ratio test alone misses it: the template test is what catches it.
    ratio_only = ScrapingDetector(min_distinct_shapes=10**6)
    assert run(ratio_only, parsed(events)) == []


@pytest.mark.parametrize("split", ["dev", "test"])
def test_dataset_scraping_scenario_has_its_shape(split):
    events, (label,) = scraping(random.Random(4), T0, T0 + HOUR, style="dataset", split=split)
    assert {e["account_id"] for e in events} == {label.entity_id}
    assert events[0]["ts"] == label.start_ms
    minutes = (events[-1]["ts"] - events[0]["ts"]) / MINUTE
    assert 29 <= minutes <= 40
    assert 60 <= len(events) / minutes <= 80
    assert sum(e.get("max_tokens") == 4096 for e in events) >= 0.95 * len(events)
    assert all(1_000 <= e["completion_tokens"] <= 4_000 for e in events)
    # Prompts come from this half of the template pool only, and from most of it.
    mine, other = split_pool(DATASET_TEMPLATES, split), set(DATASET_TEMPLATES)
    other -= set(mine)
    openings = [fixed_opening(t) for t in mine if fixed_opening(t)]
    assert len(openings) >= 10
    used = Counter(next((o for o in openings if e["prompt"].startswith(o)), None)
                   for e in events)
    assert set(used) - {None} == set(openings)
    assert not any(e["prompt"].startswith(fixed_opening(t)) for e in events
                   for t in other if fixed_opening(t))
    assert len({prompt_shape(e["prompt"]) for e in events}) < 0.3 * len(events)


def test_scraping_scenario_is_deterministic_and_diverse_by_default():
    dataset = [scraping(random.Random(9), T0, T0 + HOUR, style="dataset") for _ in range(2)]
    assert dataset[0] == dataset[1]
    assert scraping(random.Random(9), T0, T0 + HOUR) == \
        scraping(random.Random(9), T0, T0 + HOUR, style="diverse", split="all")
    with pytest.raises(ValueError, match="style"):
        scraping(random.Random(9), T0, T0 + HOUR, style="mixed")  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_batch_customer_over_an_hour_never_fires(seed):
    events = parsed(customers.batch_customer(random.Random(seed), T0, T0 + HOUR))
    assert len(events) > 50 * 60
    assert run(ScrapingDetector(), events) == []
    # Not only because its answers are short: one template is a product, not a harvest.
    detector = ScrapingDetector(min_mean_completion_tokens=0)
    assert run(detector, events) == []
    (state,) = detector.accounts.values()
    assert len(state.templates) == 1


@pytest.mark.parametrize("template", [
    "Write a product description for {product}",
    "Write a detailed blog post about {topic} for our customers.",
    "Summarize the following article in detail: the {product} market and {topic}",
])
def test_single_template_product_with_long_answers_never_fires(template):
    events = templated([template], per_minute=60, minutes=60)
    assert run(ScrapingDetector(), events) == []


def test_a_product_filling_its_slot_within_the_prompt_shape_never_fires():
    """The product is the sixth word: as many prompt shapes as products, but one template."""
    events = templated(["Write a product description for {product}"], per_minute=75,
                       minutes=40)
    assert len({prompt_shape(e.prompt) for e in events}) >= 8
    detector = ScrapingDetector()
    assert run(detector, events) == []
    (state,) = detector.accounts.values()
    assert len(state.templates) == 1


FEATURES = [
    "Write a product description for {product}", "Draft a customer newsletter about {topic}",
    "Create a lesson plan covering {topic} for adults", "Compose a press release about {topic}",
    "Generate an FAQ page for the {product}", "Produce a buying guide for the {product}",
    "Outline a training course on {topic}", "Prepare a detailed report on {topic}",
    "Translate our manual for the {product} into Spanish",
    "Review the user manual of the {product}",
]


def test_a_product_with_a_few_templates_does_not_fire():
    assert run(ScrapingDetector(), templated(FEATURES[:7], per_minute=60, minutes=30)) == []


def test_many_templates_without_a_dominant_one_fire():
    events = templated(FEATURES[:8], per_minute=60, minutes=30)
    alerts = run(ScrapingDetector(), events)
    assert len(alerts) == 1
    assert alerts[0].evidence["distinct_template_shapes"] == 8
    assert alerts[0].evidence["top_template_shape_share"] <= 0.2


def test_one_dominant_template_with_occasional_others_does_not_fire():
    events = templated(FEATURES, per_minute=60, minutes=30, weights=[14] + [1] * 9)
    assert run(ScrapingDetector(), events) == []
    assert alerted_accounts(ScrapingDetector(max_top_shape_share=0.7), events) == \
        {"acct-product"}


def test_many_templates_with_short_answers_do_not_fire():
    events = templated(FEATURES, per_minute=60, minutes=30, completion=(5, 60),
                       max_tokens=None)
    assert run(ScrapingDetector(), events) == []


def test_shipped_policy_passes_the_template_thresholds():
    rule = load_policy(REPO_ROOT / "ops" / "policy.yaml").rules.scraping
    detector = build(ScrapingDetector, rule)
    assert (detector.min_distinct_shapes, detector.max_top_shape_share) == (8, 0.5)
    assert detector.min_shape_diversity == 0.7


def test_template_counts_stay_in_step_with_the_window():
    """The most common template's count is kept incrementally: it must equal a fresh count of
    the window's requests after every arrival and eviction, and empty out with the window."""
    rng = random.Random(11)
    detector = ScrapingDetector(window_ms=2 * MINUTE)
    openings = ["alpha beta gamma", "delta epsilon zeta", "eta theta iota", "kappa lambda mu"]
    ts = T0
    for i in range(3_000):
        # Bursts of one opening, then another, so the top template changes hands often.
        ts += rng.randint(50, 400)
        detector.observe(request(ts, text=f"{rng.choice(openings[: 1 + (i // 300) % 4])} {i}"))
        state = detector.accounts["acct-1"]
        fresh = Counter(r.template for r in state.window)
        assert state.templates == fresh
        assert state.top_template == max(fresh.values())
        assert state.template_sizes == Counter(fresh.values())
    detector.observe(request(ts + 10 * MINUTE, text="omega"))
    state = detector.accounts["acct-1"]
    assert (len(state.templates), state.top_template) == (1, 1)
