import math
import pickle

import numpy as np
import pytest

from detectors.embedding import (
    EmbeddingPlanner,
    HyperplaneLSH,
    MinHasher,
    NearDuplicateIndex,
    StaticEmbedder,
    VectorCache,
)
from detectors.text import normalise, shingles

LONG = ("please help me understand how the new municipal recycling rules affect apartment "
        "buildings with more than twenty units and shared waste rooms on each floor")
NEAR = LONG.replace("twenty", "thirty")
OTHER = ("what is the fastest way to convert a large csv file with millions of rows into "
         "parquet format using only the python standard library and a little numpy")


def sig(hasher, text):
    return hasher.signature(shingles(normalise(text)))


def unit(v):
    return v / np.linalg.norm(v)


# --- MinHash and the near-duplicate index ---------------------------------------------------

def test_minhash_signatures_are_deterministic_for_a_seed():
    a, b = MinHasher(seed=3), MinHasher(seed=3)
    assert np.array_equal(sig(a, LONG).hashvalues, sig(b, LONG).hashvalues)
    assert not np.array_equal(sig(a, LONG).hashvalues, sig(MinHasher(seed=4), LONG).hashvalues)


def test_near_duplicate_index_finds_copies_but_not_other_prompts():
    hasher = MinHasher()
    index = NearDuplicateIndex(threshold=0.7)
    index.add("long", sig(hasher, LONG))
    assert index.query(sig(hasher, NEAR)) == "long"
    assert index.query(sig(hasher, OTHER)) is None
    assert index.query(sig(hasher, NEAR), accept=lambda key: key != "long") is None


def test_near_duplicate_index_is_bounded_and_forgets_oldest_first():
    hasher = MinHasher()
    index = NearDuplicateIndex(max_entries=3)
    texts = [f"{LONG} variant number {word}" for word in ("alpha", "beta", "gamma", "delta")]
    for n, text in enumerate(texts):
        index.add(f"k{n}", sig(hasher, text))
    assert len(index) == 3
    assert "k0" not in index and "k3" in index


# --- exact cache ------------------------------------------------------------------------------

def test_vector_cache_is_lru_bounded_and_read_only():
    cache = VectorCache(max_entries=2)
    cache.put("a", np.ones(3))
    cache.put("b", np.zeros(3))
    assert cache.get("a") is not None  # "a" is now the most recently used
    cache.put("c", np.ones(3), full=False)
    assert "b" not in cache and "a" in cache and len(cache) == 2
    stored = cache.get("a")
    assert stored is not None and stored.dtype == np.float32
    with pytest.raises(ValueError):
        stored[0] = 5.0
    assert cache.lookup("c") is not None and cache.lookup("c")[1] is False


# --- static embedder ---------------------------------------------------------------------------

WORDS = ("the", "a", "of", "cat", "dog", "sat", "mat", "vote", "election", "rigged")
VOCAB = {w: i for i, w in enumerate(WORDS)}


def toy_tokenize(text):
    return [VOCAB[w] for w in text.split() if w in VOCAB]


def test_static_embedding_is_a_unit_mean_of_token_vectors():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(VOCAB), 16)).astype(np.float32)
    embedder = StaticEmbedder(vectors, toy_tokenize, center=False)
    out = embedder.embed("cat sat")
    expected = unit(vectors[VOCAB["cat"]] + vectors[VOCAB["sat"]])
    assert out.dtype == np.float32
    assert np.allclose(out, expected, atol=1e-5)
    assert np.allclose(embedder.embed("zebra"), 0.0)  # nothing known: zero vector
    batch = embedder.encode(["cat sat", "zebra", "dog"])
    assert batch.shape == (3, 16) and np.allclose(batch[0], out)


def test_sif_weights_mute_frequent_tokens():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(len(VOCAB), 16)).astype(np.float32)
    counts = np.ones(len(VOCAB))
    counts[VOCAB["the"]] = 1e6
    weighted = StaticEmbedder(vectors, toy_tokenize, token_frequencies=counts, center=False)
    plain = StaticEmbedder(vectors, toy_tokenize, center=False)
    cat = unit(vectors[VOCAB["cat"]])
    assert float(weighted.embed("the cat") @ cat) > 0.99
    assert float(plain.embed("the cat") @ cat) < float(weighted.embed("the cat") @ cat)


def test_centering_removes_the_direction_every_token_shares():
    rng = np.random.default_rng(2)
    common = rng.normal(size=16) * 5
    vectors = (rng.normal(size=(len(VOCAB), 16)) + common).astype(np.float32)
    raw = StaticEmbedder(vectors, toy_tokenize, center=False)
    centred = StaticEmbedder(vectors, toy_tokenize, center=True)
    assert float(raw.embed("cat sat") @ raw.embed("vote rigged")) > 0.8
    assert abs(float(centred.embed("cat sat") @ centred.embed("vote rigged"))) < 0.8


def test_static_embedder_rejects_mismatched_frequencies():
    with pytest.raises(ValueError):
        StaticEmbedder(np.zeros((4, 3)), toy_tokenize, token_frequencies=np.ones(5))


# --- planner -----------------------------------------------------------------------------------

def planner(**kwargs):
    kwargs.setdefault("sample_every_n", 10**9)  # sampling off unless a test wants it
    return EmbeddingPlanner(**kwargs)


def test_generation_request_gets_the_model_and_exact_copies_reuse_it():
    p = planner()
    first = p.plan("Write a tweet: Vote on Nov 5!", "acct-1")
    assert first.kind == "full" and "generation" in first.reason
    p.remember(first.key, first.signature, np.ones(4))
    again = p.plan("write a TWEET vote on nov 6", "acct-2")
    assert again.kind == "exact" and again.reuse_key == first.key
    assert np.allclose(p.vector_for(again.reuse_key), 1.0)
    stats = p.stats()
    assert stats["full"] == 1 and stats["exact"] == 1 and stats["full_generation"] == 1


def test_copies_within_one_batch_wait_for_the_first_vector():
    p = planner()
    plans = [p.plan("Write a tweet saying the mayor lied", f"acct-{i}") for i in range(5)]
    assert [plan.kind for plan in plans] == ["full", "exact", "exact", "exact", "exact"]
    assert p.vector_for(plans[1].reuse_key) is None  # not encoded yet
    p.remember(plans[0].key, None, np.full(4, 2.0))
    assert all(np.allclose(p.vector_for(plan.reuse_key), 2.0) for plan in plans[1:])
    assert p.stats()["pending"] == 0


def test_near_duplicates_reuse_the_vector_of_the_prompt_they_copy():
    p = planner()
    first = p.plan(LONG, "acct-1")
    assert first.kind == "static"
    p.remember(first.key, first.signature, np.full(4, 3.0), full=False)
    near = p.plan(NEAR, "acct-2")
    assert near.kind == "near" and near.reuse_key == first.key
    assert np.allclose(p.vector_for(near.reuse_key), 3.0)
    assert p.plan(NEAR, "acct-3").kind == "exact"  # the copy was added to the exact cache
    assert p.plan(OTHER, "acct-2").kind == "static"


def test_suspicious_accounts_get_the_model_and_upgrade_cheap_vectors():
    p = planner()
    cheap = p.plan(LONG, "acct-1")
    p.remember(cheap.key, cheap.signature, np.zeros(4), full=False)
    upgraded = p.plan(LONG, "acct-bad", suspicious=True)
    assert upgraded.kind == "full" and upgraded.reason.startswith("upgrade")
    p.remember(upgraded.key, None, np.ones(4))
    p.remember(upgraded.key, None, np.zeros(4), full=False)  # never downgrades
    assert np.allclose(p.vector_for(upgraded.key), 1.0)
    assert p.plan(LONG, "acct-bad", suspicious=True).kind == "exact"
    near = p.plan(NEAR, "acct-bad", suspicious=True)
    assert near.kind == "near"  # a model vector is good enough for a suspect's copy
    assert p.stats()["full_upgrade"] == 1 and p.stats()["full_suspicious"] == 0


def test_suspicious_novel_prompt_counts_as_suspicious():
    p = planner()
    plan = p.plan(OTHER, "acct-bad", suspicious=True)
    assert plan.kind == "full" and p.stats()["full_suspicious"] == 1


def test_per_account_sample_is_about_one_in_n_and_repeatable():
    p = EmbeddingPlanner(sample_every_n=20)
    prompts = [f"tell me fact {a} and {b} please" for a in _words(30) for b in _words(30)]
    kinds = [p.plan(text, "acct-1").kind for text in prompts]
    share = kinds.count("full") / len(kinds)
    assert 0.025 < share < 0.08
    replay = EmbeddingPlanner(sample_every_n=20)
    assert [replay.plan(text, "acct-1").kind for text in prompts] == kinds
    stats = p.stats()
    assert stats["full_sample"] == kinds.count("full")
    assert stats["planned"] == stats["exact"] + stats["near"] + stats["full"] + stats["static"]


def _words(n):
    return [f"w{chr(97 + i % 26)}{chr(97 + i // 26)}" for i in range(n)]


def test_planner_state_pickles():
    p = planner()
    plan = p.plan(LONG, "acct-1")
    p.remember(plan.key, plan.signature, np.ones(4), full=False)
    restored = pickle.loads(pickle.dumps(p))
    assert restored.plan(NEAR, "acct-2").kind == "near"
    assert restored.stats()["static"] == 1


# --- hyperplane LSH ----------------------------------------------------------------------------

def test_lsh_buckets_are_deterministic_for_a_seed():
    rng = np.random.default_rng(5)
    vectors = rng.normal(size=(50, 32))
    a, b = HyperplaneLSH(32, bits=4, seed=9), HyperplaneLSH(32, bits=4, seed=9)
    assert np.array_equal(a.buckets(vectors), b.buckets(vectors))
    assert a.bucket(vectors[0]) == int(a.buckets(vectors)[0])
    assert not np.array_equal(a.buckets(vectors), HyperplaneLSH(32, 4, seed=10).buckets(vectors))
    assert set(a.buckets(vectors).tolist()) <= set(range(16))


def test_near_vectors_mostly_share_a_bucket_and_random_ones_rarely_do():
    rng = np.random.default_rng(6)
    dim, bits = 64, 4
    lsh = HyperplaneLSH(dim, bits=bits, seed=0)
    base = np.stack([unit(v) for v in rng.normal(size=(400, dim))])
    near = np.stack([unit(v + rng.normal(scale=0.2 / math.sqrt(dim), size=dim)) for v in base])
    cosines = np.sum(base * near, axis=1)
    same = float(np.mean(lsh.buckets(base) == lsh.buckets(near)))
    theory = float(np.mean((1 - np.arccos(np.clip(cosines, -1, 1)) / math.pi) ** bits))
    assert same > 0.6
    assert abs(same - theory) < 0.1
    shuffled = lsh.buckets(base[rng.permutation(len(base))])
    assert float(np.mean(shuffled == lsh.buckets(base))) < 0.2
