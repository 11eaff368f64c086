"""A sentence-transformers BERT model (all-MiniLM-L6-v2) on onnxruntime, fp32 or int8.

sentence-transformers' own ONNX backend goes through optimum, which needs an older
transformers than this project resolves, so this goes to the runtimes directly: the installed
weights are exported with torch.onnx (the transformer and the model's masked mean pooling, in
one graph) into the cache folder on first use, and quantized there with onnxruntime's dynamic
int8 quantization (int8 weights per output channel, uint8 activations: the u8s8 kernels that
AVX-512 VNNI and AVX2 run). Per-tensor weights moved vectors too far (median cosine 0.965 to
fp32); per channel they stay within 0.993.

Prompts are tokenized by the model's own fast tokenizer, sorted by length and run in groups of
about `token_budget` padded tokens: a batch of 64 padded to its longest prompt spent most of
its time on padding (three times the rate on the same prompts, measured).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streams.embedding.model import special_ids, token_ids, weights_identity

log = logging.getLogger(__name__)
# Bump when the exported graph changes: exports are cached under a key that includes it.
EXPORT_VERSION = "1"
PRECISIONS = ("fp32", "int8")


def export_dir(name: str, model_folder: Path, cache_dir: Path) -> Path:
    """Where a model's exports live: named after its files' contents, wherever installed."""
    key = f"{EXPORT_VERSION}:{weights_identity(model_folder)}"
    digest = hashlib.blake2b(key.encode(), digest_size=6).hexdigest()
    label = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(name).name)
    return cache_dir / "onnx" / f"{label}-{digest}"


def ensure_export(name: str, model_folder: Path, precision: str, cache_dir: Path,
                  build: Any = None, quantize_ops: list[str] | None = None) -> Path:
    """The ONNX file for `precision`, exported (and quantized) on first use. `build` writes
    the fp32 graph to a path (by default: torch.onnx from a sentence-transformers folder);
    `quantize_ops`: the operators made int8 (by default onnxruntime's choice)."""
    if precision not in PRECISIONS:
        raise ValueError(f"the onnx backend runs in {' or '.join(PRECISIONS)}, "
                         f"not {precision!r}")
    folder = export_dir(name, model_folder, cache_dir)
    fp32 = folder / "model-fp32.onnx"
    if not fp32.exists():
        folder.mkdir(parents=True, exist_ok=True)
        log.info("onnx_export model=%s path=%s", name, fp32)
        _write_atomically(fp32, build or (lambda target: export_fp32(model_folder, target)))
    if precision == "fp32":
        return fp32
    int8 = folder / "model-int8.onnx"
    if not int8.exists():
        log.info("onnx_quantize model=%s path=%s", name, int8)
        _write_atomically(int8, lambda target: quantize_int8(fp32, target, quantize_ops))
    return int8


def _write_atomically(path: Path, write: Any) -> None:
    # Two workers starting together each write their own file; the last rename wins.
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp.onnx")
    try:
        write(temporary)
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)


def export_fp32(model_folder: Path, target: Path) -> None:
    """The transformer and mean pooling (unnormalised: the static embedding distils from the
    pooled vector) as one graph, dynamic in batch and sequence length."""
    import torch
    from transformers import AutoModel

    class Pooled(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.model(input_ids=input_ids,
                                attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    model = Pooled(AutoModel.from_pretrained(str(model_folder)).eval())
    example = torch.ones((2, 8), dtype=torch.long)
    with warnings.catch_warnings(), torch.inference_mode():
        # The TorchScript exporter is deprecated in favour of the dynamo one, which needs
        # onnxscript; its tracer warnings are about shapes this graph keeps dynamic.
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example, example), str(target),
                          input_names=["input_ids", "attention_mask"], output_names=["pooled"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                        "attention_mask": {0: "batch", 1: "tokens"},
                                        "pooled": {0: "batch"}},
                          opset_version=17, dynamo=False)


def quantize_int8(source: Path, target: Path, op_types: list[str] | None = None) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The quantizer logs every tensor it skips on the root logger, at INFO and WARNING.
    logging.disable(logging.WARNING)
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8,
                         per_channel=True, reduce_range=False, op_types_to_quantize=op_types)
    finally:
        logging.disable(logging.NOTSET)


def session(path: Path, threads: int) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Spinning threads fight the worker's other threads (and other processes) for two cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options,
                                        providers=["CPUExecutionProvider"])


class OnnxSentenceEncoder:
    """Encodes with an exported graph; the same tokens, pooling and normalisation as the
    sentence-transformers model it was exported from."""

    backend = "onnx"
    # Padded tokens per run (rows x longest row); measured best between 512 and 4,096.
    token_budget = 1024

    def __init__(self, name: str, model_folder: Path, precision: str, cache_dir: Path,
                 threads: int = 2) -> None:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from transformers import AutoTokenizer

        _check_mean_pooled(model_folder)
        self.name = name
        self.precision = precision
        self.device_name = "cpu"
        self.model_folder = model_folder
        self.cache_dir = cache_dir
        self.threads = threads
        self.path = ensure_export(name, model_folder, precision, cache_dir)
        self.session = session(self.path, threads)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_folder))
        self.max_length = _max_seq_length(model_folder)
        self.dim = int(self.session.get_outputs()[0].shape[-1])
        self.special_ids = special_ids(self.tokenizer)

    def identity(self) -> str:
        return weights_identity(self.model_folder)

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        return token_ids(self.tokenizer, texts)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        pooled = self.pooled(self.tokenizer(list(texts), truncation=True,
                                            max_length=self.max_length)["input_ids"]
                             if texts else [])
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)

    def pooled(self, groups: Sequence[Sequence[int]], session: Any = None) -> np.ndarray:
        """Mean-pooled vectors of tokenized texts (with their markers), shortest first in
        runs of about `token_budget` padded tokens."""
        session = session or self.session
        out = np.zeros((len(groups), self.dim), dtype=np.float32)
        order = sorted(range(len(groups)), key=lambda row: len(groups[row]))
        first = 0
        while first < len(order):
            last = first + 1
            while last < len(order) and \
                    (last + 1 - first) * len(groups[order[last]]) <= self.token_budget:
                last += 1
            rows = order[first:last]
            width = len(groups[rows[-1]])
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for row, index in enumerate(rows):
                ids[row, :len(groups[index])] = groups[index]
                mask[row, :len(groups[index])] = 1
            out[rows] = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
            first = last
        return out

    def token_vectors(self) -> np.ndarray:
        """Each vocabulary token between the markers through the fp32 graph, mean-pooled:
        what the torch backend distils, so the cached static embedding is shared."""
        fp32 = session(ensure_export(self.name, self.model_folder, "fp32", self.cache_dir),
                       self.threads)
        cls, sep = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        groups = [[cls, token, sep] for token in range(self.tokenizer.vocab_size)]
        return self.pooled(groups, fp32)


def _sentence_config(model_folder: Path, name: str) -> dict[str, Any]:
    path = model_folder / name
    return dict(json.loads(path.read_text(encoding="utf-8"))) if path.exists() else {}


def _max_seq_length(model_folder: Path) -> int:
    return int(_sentence_config(model_folder, "sentence_bert_config.json")
               .get("max_seq_length", 256))


def _check_mean_pooled(model_folder: Path) -> None:
    pooling = _sentence_config(model_folder, "1_Pooling/config.json")
    if not pooling.get("pooling_mode_mean_tokens") or any(
            value for key, value in pooling.items()
            if key.startswith("pooling_mode_") and key != "pooling_mode_mean_tokens"):
        raise ValueError(f"the onnx backend exports mean-pooled models; {model_folder} pools "
                         "otherwise: use MISUSE_EMBED_BACKEND=torch")
