"""The embedding budget: which prompts get the sentence model, which reuse a vector, which get a
cheap static embedding, and how vectors are bucketed for the campaign stage.

The model encodes about 90 prompts a second on two cores while the API sends thousands of events
a second, so the model is kept for novel content that matters: generation requests, accounts
under suspicion and a per-account sample. Exact duplicates hit a cache, near duplicates (MinHash
LSH) reuse the vector of the prompt they copy, and everything else gets a static embedding.

Usage per batch: `plan` every prompt, encode the "full" plans with the model and the "static"
ones with `StaticEmbedder`, `remember` those vectors, then resolve "exact" and "near" plans with
`vector_for(plan.reuse_key)`. A reuse key may point at a prompt of the same batch, which is why
vectors are remembered before reuse is resolved; `vector_for` returns None when the vector it
waited for never came (failed encode, eviction), and the caller then embeds that prompt itself.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from datasketch import MinHash, MinHashLSH

from detectors.text import normalise, shingles, text_key, truncate_words

PlanKind = Literal["exact", "near", "full", "static"]

# Words of a request for content to publish. Not "review": classifying reviews is the commonest
# batch job there is, and it is no narrative.
DEFAULT_GENERATION_MARKERS = frozenset({
    "write", "compose", "draft", "rewrite", "generate", "create", "paraphrase", "reword",
    "tweet", "tweets", "post", "posts", "article", "articles", "caption", "captions",
    "comment", "comments", "letter", "essay", "headline", "headlines", "slogan", "reply",
    "replies", "thread", "blog", "story", "speech", "message", "messages",
})


class MinHasher:
    """MinHash signatures of shingle sets, seeded so every worker computes the same signature."""

    def __init__(self, num_perm: int = 64, seed: int = 1) -> None:
        self.num_perm = num_perm
        self.seed = seed
        # Building the permutations is most of MinHash's set-up cost; copying a blank template
        # is what `MinHash.bulk` does to reach ~100 us a prompt.
        self._blank = MinHash(num_perm=num_perm, seed=seed)

    def signature(self, items: Iterable[str]) -> MinHash:
        minhash = self._blank.copy()
        minhash.update_batch([item.encode("utf-8") for item in items])
        return minhash

    def signatures(self, batches: Iterable[Iterable[str]]) -> list[MinHash]:
        return [self.signature(items) for items in batches]


class NearDuplicateIndex:
    """Maps a prompt's MinHash to the key of an already embedded prompt with Jaccard >= threshold.

    Bounded: beyond `max_entries` the oldest entries are forgotten first, so memory stays flat
    however long the worker runs. LSH candidates are checked against the stored signature, since
    banding lets through pairs well below the threshold.
    """

    def __init__(self, threshold: float = 0.7, num_perm: int = 64,
                 max_entries: int = 50_000) -> None:
        self.threshold = threshold
        self.num_perm = num_perm
        self.max_entries = max_entries
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self._signatures: OrderedDict[str, np.ndarray] = OrderedDict()

    def add(self, key: str, signature: MinHash) -> None:
        if key in self._signatures:
            return
        self._lsh.insert(key, signature, check_duplication=False)
        self._signatures[key] = np.array(signature.hashvalues, copy=True)
        while len(self._signatures) > self.max_entries:
            old, _ = self._signatures.popitem(last=False)
            self._lsh.remove(old)

    def query(self, signature: MinHash, accept: Callable[[str], bool] | None = None) -> str | None:
        """The most similar indexed key, or None; `accept` can veto stale candidates."""
        best: tuple[float, str] | None = None
        for candidate in self._lsh.query(signature):
            key = str(candidate)
            stored = self._signatures.get(key)
            if stored is None or (accept is not None and not accept(key)):
                continue
            similarity = float(np.mean(stored == signature.hashvalues))
            if similarity >= self.threshold and (best is None or (similarity, key) > best):
                best = (similarity, key)
        return best[1] if best else None

    def __contains__(self, key: str) -> bool:
        return key in self._signatures

    def __len__(self) -> int:
        return len(self._signatures)


class VectorCache:
    """text key -> vector, least recently used evicted beyond `max_entries`.

    Each entry remembers whether the vector came from the model or the static embedder, so a
    prompt that later deserves the model is not stuck with its cheap vector.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[np.ndarray, bool]] = OrderedDict()

    def put(self, key: str, vector: np.ndarray, full: bool = True) -> None:
        stored = np.array(vector, dtype=np.float32, copy=True)
        # Many events share one cached array; read-only keeps one consumer from corrupting all.
        stored.setflags(write=False)
        self._entries[key] = (stored, full)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def lookup(self, key: str) -> tuple[np.ndarray, bool] | None:
        """(vector, from the model?) or None; a hit counts as a use for the LRU order."""
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def get(self, key: str) -> np.ndarray | None:
        entry = self.lookup(key)
        return entry[0] if entry else None

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)


class StaticEmbedder:
    """A bag-of-tokens embedding: SIF-weighted mean of per-token vectors, L2-normalised.

    `token_vectors` is vocab x dim. The model's input word embeddings work, but a matrix distilled
    from the same model (each token passed alone through it and mean-pooled, ~10 s for the
    30k-token vocabulary on two cores) is closer to the model's own space. `center` subtracts the
    (frequency-weighted) mean token vector: without it every text shares one dominant direction
    and unrelated prompts look similar. SIF weights a / (a + p(token)) mute frequent tokens; with
    no frequencies they are uniform and the embedding is a plain mean.

    Static vectors live in a different space from the model's (even for the same text their
    cosine is far below 1), so they must be clustered apart from model vectors.
    """

    def __init__(self, token_vectors: np.ndarray, tokenize: Callable[[str], Sequence[int]],
                 token_frequencies: np.ndarray | None = None, sif_a: float = 1e-3,
                 center: bool = True, skip_ids: Iterable[int] = ()) -> None:
        # float16 stays float16 (a 128k-token vocabulary is 131 MB so, 262 MB in float32).
        vectors = np.asarray(token_vectors)
        if vectors.dtype != np.float16:
            vectors = vectors.astype(np.float32, copy=False)
        if vectors.ndim != 2:
            raise ValueError("token_vectors must be a vocab x dim matrix")
        vocab = vectors.shape[0]
        if token_frequencies is None:
            probability = np.full(vocab, 1.0 / vocab)
        else:
            counts = np.asarray(token_frequencies, dtype=np.float64)
            if counts.shape != (vocab,):
                raise ValueError("token_frequencies must have one count per vocabulary row")
            # Add-one smoothing: a token never counted is rare, not impossible.
            probability = (counts + 1.0) / (counts.sum() + vocab)
        if center:
            mean = (probability.astype(np.float32) @ vectors.astype(np.float32, copy=False)
                    ) / np.float32(probability.sum())
            vectors = vectors - mean.astype(vectors.dtype)
        self.token_vectors = vectors
        self.weights = (sif_a / (sif_a + probability)).astype(np.float32)
        for token in skip_ids:
            self.weights[token] = 0.0
        self.tokenize = tokenize
        self.dim = vectors.shape[1]

    def embed(self, text: str) -> np.ndarray:
        """The unit vector of a text; the zero vector when no token is known."""
        return self.embed_ids(self.tokenize(text))

    def embed_ids(self, token_ids: Sequence[int]) -> np.ndarray:
        """As `embed`, from token ids: a caller with a batch tokenizer saves a call per text."""
        ids = np.asarray(token_ids, dtype=np.int64)
        ids = ids[(ids >= 0) & (ids < len(self.weights))]
        weights = self.weights[ids]
        total = float(weights.sum())
        if total <= 0.0:
            return np.zeros(self.dim, dtype=np.float32)
        pooled = (weights @ self.token_vectors[ids].astype(np.float32, copy=False)) / total
        norm = float(np.linalg.norm(pooled))
        if norm == 0.0:
            return np.zeros(self.dim, dtype=np.float32)
        return (pooled / norm).astype(np.float32)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            out[row] = self.embed(text)
        return out


@dataclass(frozen=True, slots=True)
class Plan:
    """How one prompt gets its vector. `normalised` is the text to embed (also for the model, so
    a cached vector is a function of its key alone); `reuse_key` names the vector to reuse."""

    kind: PlanKind
    key: str
    normalised: str
    reuse_key: str | None
    reason: str
    signature: MinHash | None = field(default=None, compare=False, repr=False)


class EmbeddingPlanner:
    """Decides per prompt: exact duplicate, near duplicate, full model or static embedding.

    A novel prompt gets the model when it asks for generated content (campaigns need text to
    post), when its account is under suspicion, or as the account's sample: a hash of (account,
    text) picks about 1 in `sample_every_n`, which needs no per-account state and gives a replay
    the same decisions. A duplicate of a prompt that only has a static vector is upgraded to the
    model when it qualifies.
    """

    def __init__(self, sample_every_n: int = 20,
                 generation_markers: Iterable[str] = DEFAULT_GENERATION_MARKERS,
                 max_words: int = 64, shingle_words: int = 3, near_threshold: float = 0.7,
                 num_perm: int = 64, seed: int = 1, cache_entries: int = 100_000,
                 index_entries: int = 50_000, max_pending: int = 10_000) -> None:
        self.sample_every_n = max(1, sample_every_n)
        self.generation_markers = frozenset(generation_markers)
        self.max_words = max_words
        self.shingle_words = shingle_words
        self.max_pending = max_pending
        self.hasher = MinHasher(num_perm=num_perm, seed=seed)
        self.index = NearDuplicateIndex(near_threshold, num_perm, index_entries)
        self.cache = VectorCache(cache_entries)
        # Keys planned for encoding whose vectors have not been remembered yet: duplicates in
        # the same batch wait for them instead of being encoded again. Value: planned for the
        # model, and the signature to index the vector under.
        self._pending: OrderedDict[str, tuple[bool, MinHash | None]] = OrderedDict()
        self._counts: dict[str, int] = dict.fromkeys(
            ("planned", "exact", "near", "full", "static", "full_generation", "full_suspicious",
             "full_sample", "full_upgrade"), 0)

    def plan(self, prompt: str, account_id: str | None, suspicious: bool = False, *,
             request: str | None = None, model: bool = True,
             generation: bool | None = None) -> Plan:
        """`request`: the whole prompt when `prompt` is the payload cut out of it, whose words
        say whether it asks for content to publish. `model=False`: never the model (a whole
        prompt whose payload gets it instead). `generation`: whether it asks for content to
        publish, when the caller knows (its wrapper's intent); else the marker words say."""
        normalised = truncate_words(normalise(prompt), self.max_words)
        key = text_key(normalised)
        self._counts["planned"] += 1
        wants_model, why = self._wants_model(
            normalised if request is None else normalise(request), key, account_id, suspicious,
            generation)
        wants_model = wants_model and model

        known = self.quality(key)
        if known is not None and (known or not wants_model):
            return self._count(Plan("exact", key, normalised, key,
                                    "exact duplicate of an embedded prompt"))

        signature: MinHash | None = None
        if known is None:
            items = shingles(normalised, self.shingle_words)
            if items:
                signature = self.hasher.signature(items)
                match = self.index.query(signature, accept=lambda k: self.quality(k) is not None)
                if match is not None:
                    match_full = self.quality(match)
                    if match_full or not wants_model:
                        self._alias(key, match)
                        return self._count(Plan("near", key, normalised, match,
                                                "near duplicate (MinHash) of an embedded prompt",
                                                signature))
        else:
            signature = self._pending[key][1] if key in self._pending else None

        if wants_model:
            reason = why if known is None else "upgrade: duplicate of a statically embedded " \
                                               f"prompt, and {why}"
            self._counts["full_upgrade" if known is not None else f"full_{_cause(why)}"] += 1
            self._expect(key, True, signature)
            return self._count(Plan("full", key, normalised, None, reason, signature))
        self._expect(key, False, signature)
        return self._count(Plan("static", key, normalised, None,
                                "novel prompt with no reason for the model", signature))

    def remember(self, key: str, signature: MinHash | None, vector: np.ndarray,
                 full: bool = True) -> None:
        """Store a computed vector; a static vector never replaces one from the model."""
        pending = self._pending.pop(key, None)
        if signature is None and pending is not None:
            signature = pending[1]
        entry = self.cache.lookup(key)
        if entry is None or full or not entry[1]:
            self.cache.put(key, vector, full)
        if signature is not None:
            self.index.add(key, signature)

    def vector_for(self, key: str) -> np.ndarray | None:
        return self.cache.get(key)

    def stats(self) -> dict[str, int]:
        return self._counts | {"cache_entries": len(self.cache), "index_entries": len(self.index),
                               "pending": len(self._pending)}

    def _wants_model(self, normalised: str, key: str, account_id: str | None,
                     suspicious: bool, generation: bool | None = None) -> tuple[bool, str]:
        if suspicious:
            return True, "novel prompt from an account under suspicion"
        if generation is None:
            generation = not self.generation_markers.isdisjoint(normalised.split())
        if generation:
            return True, "novel generation request"
        if self._sampled(account_id, key):
            return True, f"per-account sample (1 in {self.sample_every_n})"
        return False, ""

    def _sampled(self, account_id: str | None, key: str) -> bool:
        if self.sample_every_n == 1:
            return True
        digest = hashlib.blake2b(f"{account_id or ''}|{key}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") % self.sample_every_n == 0

    def quality(self, key: str) -> bool | None:
        """True: a model vector exists or is coming; False: only a static one; None: nothing."""
        entry = self.cache.lookup(key)
        pending = self._pending.get(key)
        if entry is None and pending is None:
            return None
        return bool((entry is not None and entry[1]) or (pending is not None and pending[0]))

    def _alias(self, key: str, match: str) -> None:
        # The next exact copy of this text then hits the cache instead of hashing again.
        entry = self.cache.lookup(match)
        if entry is not None:
            self.cache.put(key, entry[0], entry[1])

    def _expect(self, key: str, full: bool, signature: MinHash | None) -> None:
        self._pending[key] = (full or self._pending.get(key, (False, None))[0], signature)
        self._pending.move_to_end(key)
        if signature is not None:
            self.index.add(key, signature)
        while len(self._pending) > self.max_pending:
            self._pending.popitem(last=False)

    def _count(self, plan: Plan) -> Plan:
        self._counts[plan.kind] += 1
        return plan


def _cause(reason: str) -> str:
    if "suspicion" in reason:
        return "suspicious"
    return "generation" if "generation" in reason else "sample"


class HyperplaneLSH:
    """Random-hyperplane sign hash of a vector: a bucket in [0, 2**bits), used as Kafka key.

    Two vectors at angle t share a bucket with probability (1 - t/pi)**bits: at cosine 0.9 that
    is 0.73 with 2 bits, 0.54 with 4, 0.29 with 8. Few bits keep a narrative's paraphrases in
    one partition (a campaign split over buckets is judged as smaller pieces); more bits spread
    load over more partitions. 4 bits (16 buckets) is the default compromise. The planes come
    from NumPy's legacy RandomState, whose stream is frozen across versions, so every worker
    with the same seed agrees. Vectors of a different space (static vs model) should use their
    own instance and topic key prefix.
    """

    def __init__(self, dim: int, bits: int = 4, seed: int = 0) -> None:
        if not 1 <= bits <= 30:
            raise ValueError("bits must be between 1 and 30")
        self.dim = dim
        self.bits = bits
        self.seed = seed
        self.planes = np.random.RandomState(seed).standard_normal((bits, dim))
        self._powers = 1 << np.arange(bits, dtype=np.int64)

    def bucket(self, vector: np.ndarray) -> int:
        return int(self.buckets(np.asarray(vector)[None, :])[0])

    def buckets(self, vectors: np.ndarray) -> np.ndarray:
        signs = (np.asarray(vectors, dtype=np.float64) @ self.planes.T) >= 0.0
        return signs.astype(np.int64) @ self._powers
