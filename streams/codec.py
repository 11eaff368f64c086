"""JSON encoding of the messages that travel between stages."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def loads(raw: bytes) -> Any:
    return json.loads(raw)


def encode_vector(vector: np.ndarray) -> str:
    """float16 in base64: a 384-dim vector in ~1 KB of JSON instead of ~8 KB of numbers."""
    return base64.b64encode(np.asarray(vector, dtype=np.float16).tobytes()).decode("ascii")


def decode_vector(text: str) -> np.ndarray:
    vector = np.frombuffer(base64.b64decode(text), dtype=np.float16).astype(np.float32)
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector
