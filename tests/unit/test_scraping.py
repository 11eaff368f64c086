import random
from itertools import pairwise

from detectors.events import UsageEvent
from detectors.scraping import RULE_ID, ScrapingDetector, prompt_shape

T0 = 1_790_000_000_000
MINUTE = 60_000
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
