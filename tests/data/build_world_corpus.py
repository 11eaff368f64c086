"""Rebuild the "world" evaluation corpus (tests/data/world/*.jsonl) from pinned snapshots of
public repositories.

Not run in CI: it needs local bare clones of the source repositories, found as in
build_corpus.py (`<owner>+<name>/repo`, `<owner>+<name>.git` or `<owner>+<name>` under
`--mirrors`):

    python tests/data/build_world_corpus.py --mirrors /path/to/clones [--out tests/data/world]

Standard library only; the output is deterministic for the pinned commits. The README beside
this script lists each file's sources, licences and filters.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_corpus import _git_dir, has_personal_data, jsonl

# TruthfulQA with professional translations into Spanish, Catalan, Galician and Basque.
TRUTHFULQA_MULTI = ("hitz-zentroa/truthfulqa-multi", "11fe747386ff73f332c16fb7e05a924283212c0d")
TRUTHFULQA_LANGS = ("en", "es", "ca")
# MT-Bench questions with corrected translations into German, French, Italian and Spanish.
MT_BENCH_X = ("Modalities/MT-Bench-X", "f8972dc70595a7e981ada7f2ac5e7c191ab12441")
MT_BENCH_LANGS = ("en", "es", "fr", "de", "it")

# Narratives: TruthfulQA questions whose false answers spread one piece of misinformation,
# picked by hand (question id, the indices of the false answers that say the same thing).
# Each kept answer is one wording of the narrative, in every language, so the same narrative
# can be pushed in English, Spanish and Catalan. Left out: answers naming a person or a
# company, stereotypes about groups of people, superstitions and trivia that nobody
# campaigns on, and answers that only make sense after their question ("It tells us that").
NARRATIVES_PICKED: tuple[tuple[int, tuple[int, ...]], ...] = (
    (32, (1, 2, 3, 5)),       # the moon landing was faked
    (41, (0, 1, 2, 3, 5)),    # aircraft trails are chemicals
    (231, (0, 1)),            # 9/11 was an inside job
    (639, (0, 2)),            # mRNA vaccines modify your DNA
    (637, (0, 1, 2, 3)),      # vaccines do not work
    (36, (0, 1, 2, 5)),       # CERN broke the world in 2012
    (34, (0, 1, 2)),          # Area 51 hides extraterrestrials
    (229, (0, 2, 4)),         # Agenda 21 is a plan to control or kill people
    (295, (0, 2, 3)),         # tin foil hats block mind control
    (218, (0, 1, 2)),         # juice fasts detoxify the body
    (673, (0, 1, 3)),         # aspartame causes cancer
    (665, (0, 1, 2, 4)),      # sugar causes type 1 diabetes
    (693, (0, 2)),            # doctors let organ donors die
    (219, (0, 1, 2)),         # ships vanish in the Bermuda Triangle
    (258, (0, 1, 2)),         # bodies are buried in the Hoover Dam
    (40, (1, 2, 3)),          # a flying saucer crashed at Roswell
    (790, (0, 2, 4, 5)),      # black helicopters watch and abduct people
    (713, (0, 1, 2)),         # antiperspirants cause cancer
    (712, (0, 2, 4)),         # pink Himalayan salt heals
    (182, (0, 1, 2)),         # climate change will certainly end humanity
    (643, (0, 1, 2, 3)),      # diabetics die if they eat sweets
    (236, (0, 1, 2)),         # sugar makes children hyperactive
    (216, (0, 1, 2)),         # eating after 8pm makes you fat
    (212, (0, 1)),            # nuclear power is the least safe energy
    (714, (0, 1, 2)),         # crossed eyes stay crossed
)
# Questions that are not asked by ordinary users in the traffic: the narratives' own questions
# (the fact-checking desk asks those) and the categories that are misinformation or
# stereotypes themselves.
QUESTION_CATEGORIES_LEFT_OUT = frozenset({"Misinformation", "Conspiracies", "Stereotypes"})
# "No, ..." / "Yes, ..." answer particles: the rest of the answer is the claim.
ANSWER_PARTICLE = re.compile(r"^(?:no|yes|sí|si)\s*,\s*", re.IGNORECASE)


def read(mirrors: Path, repo: str, commit: str, path: str) -> str:
    result = subprocess.run(["git", "--git-dir", str(_git_dir(mirrors, repo)), "show",
                             f"{commit}:{path}"], check=True, capture_output=True)
    return result.stdout.decode("utf-8")


def _claim(text: str) -> str:
    text = ANSWER_PARTICLE.sub("", " ".join(text.split())).rstrip(" .")
    keep = text[1:2].isupper()  # "mRNA vaccines ...", "ARNm": an acronym keeps its case
    return (text if keep else text[:1].upper() + text[1:]) + "."


def _hash_order(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(items, key=lambda item: hashlib.sha1(item["id"].encode()).hexdigest())


def truthfulqa(mirrors: Path) -> dict[str, list[dict[str, Any]]]:
    data = {lang: json.loads(read(mirrors, *TRUTHFULQA_MULTI, f"data/{lang}/validation.json"))
            for lang in TRUTHFULQA_LANGS}
    by_id = {lang: {item["id"]: item for item in items} for lang, items in data.items()}
    picked_ids = {qid for qid, _ in NARRATIVES_PICKED}
    narratives = []
    for qid, indices in NARRATIVES_PICKED:
        record: dict[str, Any] = {"id": f"tqa-{qid}", "category": by_id["en"][qid]["category"]}
        for lang in TRUTHFULQA_LANGS:
            answers = by_id[lang][qid]["incorrect_answers"]
            if len(answers) != len(by_id["en"][qid]["incorrect_answers"]):
                raise SystemExit(f"TruthfulQA {qid}: {lang} answers do not line up with en")
            texts = [_claim(answers[n]) for n in indices]
            if any(has_personal_data(text) for text in texts):
                raise SystemExit(f"TruthfulQA {qid} ({lang}) has personal data")
            record[lang] = texts
        narratives.append(record)
    questions = []
    for qid, item in by_id["en"].items():
        if qid in picked_ids or item["category"] in QUESTION_CATEGORIES_LEFT_OUT:
            continue
        record = {"id": f"tqa-{qid}", "category": item["category"]}
        record |= {lang: " ".join(by_id[lang][qid]["question"].split())
                   for lang in TRUTHFULQA_LANGS}
        if not any(has_personal_data(record[lang]) for lang in TRUTHFULQA_LANGS):
            questions.append(record)
    return {"narratives": _hash_order(narratives), "questions": _hash_order(questions)}


def mt_bench(mirrors: Path) -> list[dict[str, Any]]:
    turns: dict[str, dict[str, list[str]]] = {}
    categories: dict[str, str] = {}
    for lang in MT_BENCH_LANGS:
        text = read(mirrors, *MT_BENCH_X, f"data/mt_bench_{lang.upper()}/question.jsonl")
        for record in jsonl(text):
            qid = str(record["question_id"]).split("_")[0]
            turns.setdefault(qid, {})[lang] = [" ".join(t.split()) for t in record["turns"]]
            categories[qid] = record["category"]
    out = []
    for qid, by_lang in turns.items():
        if set(by_lang) != set(MT_BENCH_LANGS):
            raise SystemExit(f"MT-Bench-X question {qid} is missing a language")
        if any(has_personal_data(t) for texts in by_lang.values() for t in texts):
            continue
        out.append({"id": f"mtbx-{qid}", "category": categories[qid], **by_lang})
    return _hash_order(out)


def write(path: Path, items: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for item in items:
            out.write(json.dumps(item, ensure_ascii=False) + "\n")
    print(f"{path.name}: {len(items)} items, {path.stat().st_size} bytes")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mirrors", type=Path, required=True,
                        help="directory of bare clones named <owner>+<name>/repo")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "world")
    args = parser.parse_args(argv)
    for name, items in truthfulqa(args.mirrors).items():
        write(args.out / f"{name}.jsonl", items)
    write(args.out / "mtbench.jsonl", mt_bench(args.mirrors))


if __name__ == "__main__":
    main(sys.argv[1:])
