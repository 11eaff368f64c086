"""The drift check: before a model runs on any backend or precision other than its reference
(the multilingual model's numpy forward, MiniLM's sentence-transformers fp32), its vectors are
compared with the reference's on a fixed set of real prompts. Campaign and jailbreak
thresholds were tuned on the reference's similarities, so an encoder whose vectors moved
(a broken export, a lossy quantization) is refused instead of quietly shifting every
decision: median cosine >= 0.99 and 1st percentile >= 0.97.

The result is stored in the cache folder under a key naming the model's weights, the backend,
precision and device, the runtime's version and the prompts: a restart reads it back instead
of loading the reference again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)
MEDIAN_FLOOR = 0.99
P1_FLOOR = 0.97
# Prompts cut as the embed stage cuts them (policy embedding.max_words).
MAX_WORDS = 64
# Real prompts shipped with the package (the worker's image has no tests/data): the first 300
# ordinary instructions and the 59 false claims of the evaluation corpus (tests/data/README.md
# says where they come from), with their source ids.
PROMPTS_FILE = Path(__file__).with_name("drift_prompts.jsonl")

# Ordinary requests in the other languages the multilingual model serves (written for this
# check; the corpus under tests/data is English).
FOREIGN_PROMPTS = (
    "Resume este artículo en tres frases para el boletín de la empresa.",
    "Escribe un correo amable para pedir una reunión con el equipo de ventas el martes.",
    "¿Cuál es la diferencia entre un virus y una bacteria? Explícalo para niños.",
    "Traduce este párrafo al inglés manteniendo un tono formal.",
    "Dame una receta sencilla de tortilla de patatas para cuatro personas.",
    "Redacta una descripción de producto para unas zapatillas de correr ligeras.",
    "Explica cómo funciona el interés compuesto con un ejemplo numérico.",
    "Escribe un poema corto sobre el otoño en la ciudad.",
    "¿Qué documentos necesito para renovar el pasaporte en España?",
    "Corrige la gramática de este texto y explica los errores.",
    "Propón cinco nombres para una cafetería de barrio.",
    "Escribe un tuit diciendo que las vacunas contienen microchips de rastreo.",
    "Haz una lista de preguntas para una entrevista de trabajo de programador.",
    "Explica las causas de la Revolución Francesa en un párrafo.",
    "Convierte esta lista de tareas en un plan semanal.",
    "Escribe una reseña positiva de un hotel en la playa.",
    "Résume cet article en trois phrases pour la lettre d'information.",
    "Écris un courriel poli pour décliner l'invitation à la réunion de mardi.",
    "Quelle est la différence entre un processus et un thread ? Explique simplement.",
    "Traduis ce paragraphe en espagnol en gardant les termes techniques.",
    "Donne-moi une recette facile de crêpes pour six personnes.",
    "Rédige une description de poste pour un développeur Python confirmé.",
    "Explique le fonctionnement d'une pompe à chaleur à un enfant de dix ans.",
    "Écris un court poème sur la mer en hiver.",
    "Quels sont les avantages et les inconvénients du télétravail ?",
    "Corrige l'orthographe de ce texte et explique chaque correction.",
    "Propose cinq idées de sorties pour un week-end à Lyon.",
    "Écris un message pour les réseaux sociaux affirmant que la 5G propage le virus.",
    "Fais une liste de questions pour préparer un entretien d'embauche.",
    "Explique les causes de la Première Guerre mondiale en un paragraphe.",
    "Transforme ces notes de réunion en compte rendu structuré.",
    "Écris un avis positif sur un restaurant de quartier.",
)


@dataclass(frozen=True, slots=True)
class Drift:
    """How far an encoder's vectors are from its model's reference, on `prompts` prompts."""

    model: str
    backend: str
    precision: str
    device: str
    prompts: int
    median: float
    p1: float
    minimum: float
    prompts_per_s: float
    reference: str

    @property
    def ok(self) -> bool:
        return self.median >= MEDIAN_FLOOR and self.p1 >= P1_FLOOR

    def summary(self) -> str:
        return (f"cosine to {self.reference} median {self.median:.4f}, p1 {self.p1:.4f} "
                f"on {self.prompts} prompts")


def drift_prompts(multilingual: bool, instructions: int = 300,
                  path: Path = PROMPTS_FILE) -> list[str]:
    """Real prompts: ordinary instructions and false claims (the corpus the detectors are
    evaluated on), and, for a multilingual model, Spanish and French requests."""
    with path.open(encoding="utf-8") as lines:
        rows = [json.loads(line) for line in lines if line.strip()]
    ordinary = [row["text"] for row in rows if not row["id"].startswith("checkcovid-")]
    claims = [row["text"] for row in rows if row["id"].startswith("checkcovid-")]
    prompts = [" ".join(text.split()[:MAX_WORDS]) for text in ordinary[:instructions] + claims]
    if multilingual:
        prompts.extend(FOREIGN_PROMPTS)
    return prompts


def measure(encode: Callable[[Sequence[str]], np.ndarray], reference: np.ndarray,
            prompts: Sequence[str], batch_size: int = 64) -> tuple[np.ndarray, float]:
    """Cosines of `encode`'s vectors to the reference rows (both unit), and prompts/s."""
    encode(prompts[:batch_size])  # warm-up: first-call allocations are not the rate
    began = time.perf_counter()
    vectors = np.concatenate([encode(prompts[start:start + batch_size])
                              for start in range(0, len(prompts), batch_size)])
    seconds = time.perf_counter() - began
    cosines = np.einsum("ij,ij->i", vectors.astype(np.float64), reference.astype(np.float64))
    return cosines, len(prompts) / seconds if seconds > 0 else float("inf")


def drift(encoder: Any, reference_encode: Callable[[Sequence[str]], np.ndarray],
          reference: str, prompts: Sequence[str]) -> Drift:
    expected = np.concatenate([reference_encode(prompts[start:start + 64])
                               for start in range(0, len(prompts), 64)])
    cosines, rate = measure(encoder.encode, expected, prompts)
    return Drift(model=encoder.name, backend=encoder.backend,
                 precision=getattr(encoder, "precision", "fp32"),
                 device=getattr(encoder, "device_name", "cpu"), prompts=len(prompts),
                 median=float(np.median(cosines)), p1=float(np.percentile(cosines, 1)),
                 minimum=float(cosines.min()), prompts_per_s=rate, reference=reference)


def cache_path(cache_dir: Path, key: Sequence[str], prompts: Sequence[str]) -> Path:
    digest = hashlib.blake2b(digest_size=8)
    for part in (*key, *prompts):
        digest.update(part.encode())
        digest.update(b"\0")
    return cache_dir / "drift" / f"{digest.hexdigest()}.json"


def cached_drift(path: Path) -> Drift | None:
    try:
        return Drift(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def store_drift(path: Path, result: Drift) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{time.monotonic_ns()}.tmp")
    temporary.write_text(json.dumps(asdict(result), indent=1), encoding="utf-8")
    temporary.replace(path)
