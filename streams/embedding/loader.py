"""Loading the configured encoder: a model on a backend at a precision, drift-checked.

`MISUSE_EMBED_BACKEND` picks how a model runs; "auto" is onnx for the multilingual model and
torch for MiniLM on the CPU, torch on a GPU:

- "numpy": the multilingual model's own forward pass (CPU, fp32): its reference. Its BLAS
  threads lose most of their rate when the two cores are shared (measured: 75 prompts/s with
  two threads on a loaded machine, 690 with one; its onnx graph 715 and 830): hence onnx.
- "torch": the multilingual model ported to torch (`streams/embedding/torch_backend.py`; fp32, or
  fp16 on a GPU), or a sentence-transformers model (fp32, int8 on the CPU, fp16 on a GPU).
- "onnx" (CPU): the multilingual model's forward pass written as an onnxruntime graph
  (`streams/embedding/use_onnx.py`), or a sentence-transformers model exported with torch.onnx
  (`streams/embedding/onnx_backend.py`); fp32, or int8 matrix products. Built into the cache folder
  on first use.

Precision "auto" is fp32 on the CPU and fp16 on a GPU; int8 is asked for.

Any encoder other than a model's reference (backend and fp32) must pass the drift check first
(`streams/embedding/drift.py`): its vectors against the reference's on a fixed set of real
prompts, median cosine >= 0.99 and 1st percentile >= 0.97, else `EncoderDriftError`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from streams.embedding.model import (
    BACKENDS,
    DEFAULT_MODEL,
    DEFAULT_REFERENCE,
    REFERENCE,
    USE_MULTILINGUAL,
    Encoder,
    EncoderDriftError,
    ModelLoadError,
    MultilingualUSE,
    MultilingualUSETorch,
    SentenceTransformerEncoder,
    check_model_available,
    model_path,
)
from streams.embedding.onnx_backend import OnnxSentenceEncoder
from streams.embedding.use_onnx import OnnxUSE

log = logging.getLogger(__name__)


@lru_cache(maxsize=4)
def load_encoder(name: str = DEFAULT_MODEL, device: str = "cpu", precision: str = "auto",
                 backend: str = "auto", cache_dir: Path | None = None,
                 check_drift: bool = True) -> Encoder:
    """The encoder as configured; cached, so a process loads each configuration once.

    An encoder other than the model's reference is drift-checked first (the result is cached
    under `cache_dir`, by default the settings' `cache_dir`); `check_drift=False` skips it,
    for measuring an encoder that would be refused."""
    check_model_available(name)
    if backend not in BACKENDS:
        raise ValueError(f"unknown embedding backend {backend!r}: one of {', '.join(BACKENDS)}")
    if cache_dir is None:
        from streams.settings import Settings

        cache_dir = Settings().cache_dir
    encoder = _build(name, device, precision, backend, cache_dir)
    if check_drift and not is_reference(encoder):
        verify_drift(encoder, cache_dir)
    return encoder


def _build(name: str, device: str, precision: str, backend: str, cache_dir: Path) -> Encoder:
    if name == USE_MULTILINGUAL:
        if backend == "auto":
            backend = "onnx" if device == "cpu" else "torch"
        if backend == "torch":
            if precision == "auto":
                precision = "fp32" if device == "cpu" else "fp16"
            return MultilingualUSETorch(device, precision)
        if backend == "onnx":
            if device != "cpu":
                raise ValueError("the onnx backend runs on the CPU; on a GPU use torch")
            return OnnxUSE("fp32" if precision == "auto" else precision, cache_dir)
        if backend != "numpy":
            raise ValueError(f"{name} runs on its numpy, torch or onnx backend, not {backend}")
        if device != "cpu" or precision not in ("auto", "fp32"):
            raise ValueError(f"{name} on numpy runs on the CPU in fp32; for a GPU set "
                             "MISUSE_EMBED_BACKEND=torch")
        return MultilingualUSE()
    if backend == "onnx":
        if device != "cpu":
            raise ValueError("the onnx backend runs on the CPU; on a GPU use torch")
        try:
            return OnnxSentenceEncoder(name, Path(model_path(name)),
                                       "fp32" if precision == "auto" else precision, cache_dir)
        except OSError as exc:
            raise ModelLoadError(f"cannot export the embedding model {name!r} to ONNX "
                                 f"under {cache_dir}: {exc}") from exc
    if backend not in ("auto", "torch"):
        raise ValueError(f"{name} runs on the torch or onnx backend, not {backend}")
    return SentenceTransformerEncoder(name, device, precision)


def is_reference(encoder: Encoder) -> bool:
    backend, precision = REFERENCE.get(encoder.name, DEFAULT_REFERENCE)
    return (encoder.backend, getattr(encoder, "precision", "fp32"),
            getattr(encoder, "device_name", "cpu")) == (backend, precision, "cpu")


def reference_encoder(name: str) -> Encoder:
    """The model's reference encoder, fp32 on the CPU."""
    if name == USE_MULTILINGUAL:
        return MultilingualUSE()
    return SentenceTransformerEncoder(name, "cpu", "fp32")


def drift_key(encoder: Encoder) -> tuple[str, ...]:
    """What a drift result depends on: weights, backend, precision, device, runtime."""
    from importlib.metadata import PackageNotFoundError, version

    runtime = {"onnx": "onnxruntime", "torch": "torch"}.get(encoder.backend, "numpy")
    try:
        runtime_version = version(runtime)
    except PackageNotFoundError:
        runtime_version = "?"
    export = str(getattr(encoder, "path", ""))
    if export:  # an export is re-made when the weights change: key on the file itself
        stat = Path(export).stat()
        export = f"{export}:{stat.st_size}:{stat.st_mtime_ns}"
    return (encoder.identity(), encoder.backend, getattr(encoder, "precision", "fp32"),
            getattr(encoder, "device_name", "cpu"), f"{runtime}=={runtime_version}", export)


def measure_drift(encoder: Encoder, prompts: Sequence[str] | None = None) -> Any:
    """Measures `encoder` against its model's reference (nothing cached)."""
    from streams.embedding.drift import drift, drift_prompts

    backend, precision = REFERENCE.get(encoder.name, DEFAULT_REFERENCE)
    prompts = list(prompts) if prompts is not None else drift_prompts(
        multilingual=encoder.name == USE_MULTILINGUAL)
    reference = reference_encoder(encoder.name)
    return drift(encoder, reference.encode, f"{backend} {precision}", prompts)


def drift_result(encoder: Encoder, cache_dir: Path,
                 prompts: Sequence[str] | None = None) -> Any:
    """The encoder's drift from its reference: read from the cache, or measured and cached.
    None for a reference encoder."""
    from streams.embedding.drift import cache_path, cached_drift, drift_prompts, store_drift

    if is_reference(encoder):
        return None
    prompts = list(prompts) if prompts is not None else drift_prompts(
        multilingual=encoder.name == USE_MULTILINGUAL)
    path = cache_path(cache_dir, drift_key(encoder), prompts)
    found = cached_drift(path)
    if found is None:
        log.info("embedding_drift_check model=%s backend=%s precision=%s prompts=%d",
                 encoder.name, encoder.backend, getattr(encoder, "precision", "fp32"),
                 len(prompts))
        found = measure_drift(encoder, prompts)
        store_drift(path, found)
    return found


def verify_drift(encoder: Encoder, cache_dir: Path,
                 prompts: Sequence[str] | None = None) -> Any:
    """Raises EncoderDriftError when the encoder's vectors moved too far from the reference."""
    from streams.embedding.drift import MEDIAN_FLOOR, P1_FLOOR

    result = drift_result(encoder, cache_dir, prompts)
    if result is not None and not result.ok:
        raise EncoderDriftError(
            f"embedding model {encoder.name} on {encoder.backend} "
            f"{getattr(encoder, 'precision', 'fp32')} drifts from its reference: "
            f"{result.summary()} (needs median >= {MEDIAN_FLOOR}, p1 >= {P1_FLOOR})")
    if result is not None:
        log.info("embedding_drift model=%s backend=%s precision=%s median=%.4f p1=%.4f",
                 encoder.name, encoder.backend, result.precision, result.median, result.p1)
    return result
