"""Rebuild the real-text evaluation corpus (the *.jsonl files beside this script) from pinned
snapshots of public repositories.

Not run in CI: it needs local bare clones of the source repositories. Give it a directory that
holds them as `<owner>+<name>/repo` or `<owner>+<name>.git` (bare) and it reads every source
file with `git show <commit>:<path>`, filters and writes the excerpts:

    python tests/data/build_corpus.py --mirrors /path/to/clones [--out tests/data]

Standard library only. The output is deterministic for the pinned commits. README.md beside
this script lists each file's sources, licences and filters.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Source:
    repo: str
    commit: str
    path: str


CHECK_COVID = Source("posuer/Check-COVID", "3ae70f8cac4df13a3ce56878e20d8e76790e422d",
                     "Check-COVID/Check-COVID_all.json")
FEVER_DEV = Source("zixianma/interactive-chains", "b782dd03efb68720644c889e3d7dded3b5bf5845",
                   "data/paper_dev.jsonl")
SELF_INSTRUCT = "yizhongw/self-instruct", "0b26ccaa415992100fa32df62d41b994cf928e23"
USER_ORIENTED = Source(*SELF_INSTRUCT, "human_eval/user_oriented_instructions.jsonl")
SEED_TASKS = Source(*SELF_INSTRUCT, "data/seed_tasks.jsonl")
DOLLY = Source("ANTI-Tony/triforce-reproduce", "ab023608973128b0dd3d170bf3af1b01d953d6bc",
               "data/dolly.jsonl")
NQ_OPEN = Source("google-research-datasets/natural-questions",
                 "fb26a3073b1fe636c97302890a27b491d6530130", "nq_open/NQ-open.dev.jsonl")
AWESOME_PROMPTS = Source("f/awesome-chatgpt-prompts", "12468c363fd111361898b0e4a2b02483078f2ce9",
                         "prompts.csv")
JAILBREAKS = Source("kaif0102/Sentinel-AI-Defense-System-",
                    "d80c990d9489fb9e91943e403a0e105eb344fd25",
                    "data/raw/jailbreak_prompts_2023_05_07.csv")
T0_DIR = "data/finetuning/t0_train_50k/data_per_template"
# T0 (P3) templates whose underlying data sets allow redistribution (CC BY, CC BY-SA, MIT,
# Apache) and whose prompts are short enough to keep the excerpt small.
T0_TEMPLATES = (
    "kilt_tasks_hotpotqa_final_exam", "kilt_tasks_hotpotqa_combining_facts",
    "common_gen_Given_concepts_type_1", "common_gen_Put_together",
    "commonsense_qa_question_answering", "commonsense_qa_most_suitable_answer",
    "qasc_qa_with_separated_facts_1", "quartz_answer_question_based_on",
    "cosmos_qa_context_description_question_text", "ropes_prompt_beginning",
    "adversarial_qa_dbert_answer_the_following_q",
    "dbpedia_14_given_list_what_category_does_the_paragraph_belong_to",
    "amazon_polarity_Is_this_review",
)
T0_PER_TEMPLATE = 60

# Check-COVID claims kept, picked by hand from the annotator-written ("composed", is_auth false)
# claims labelled REFUTE: each one reads as a misinformation narrative someone could spread, and
# each narrative is kept once (the data set words many claims several ways). Left out: claims that
# name a person or a company, single out a group of people (ethnicity, sex, occupation, blood
# type, body weight, disability, pregnancy), are study details rather than a narrative
# ("Antibodies to the viral nucleocapsid decline at the same rate as those of R.B.D."), or are
# garbled. Every id must still pass the mechanical filters in `claims`.
CHECK_COVID_PICKED = (
    # masks, distance and where the virus spreads
    "5f8a109ce95347460249fc63_0", "602bcf116bc088b6d218dc2c_0", "605373066bc088b6d218dc5c_0",
    "6055239e6bc088b6d218dc63_0", "5f769e50e95347460249fc28_0", "5f68fd71e95347460249fbdc_0",
    "609d902df9b9e03ea4d8e5b9_0", "6055237a6bc088b6d218dc62_0", "5f89f920e95347460249fc59_0",
    "606a75daf9b9e03ea4d8e47d_0", "5f861347e95347460249fc42_0", "5f862192e95347460249fc4c_0",
    "5f8a02c3e95347460249fc5d_0", "602aa4c76bc088b6d218dc1e_0", "6009f6e36bc088b6d218dbde_0",
    "5f67f84be95347460249fbd8_0", "6067bb5ef9b9e03ea4d8e45f_0",
    # how dangerous it is
    "60c11bfbf9b9e03ea4d8e6d6_0", "5f92a14804ded09dac378bbf_0", "5fad4b5704ded09dac378c03_0",
    "609eee73f9b9e03ea4d8e604_0", "608b5200f9b9e03ea4d8e4c3_0", "60912b6ef9b9e03ea4d8e4f2_0",
    "5f754f24e95347460249fc23_0", "609ef069f9b9e03ea4d8e60c_0", "60553b6a6bc088b6d218dc6e_0",
    "60536b7a6bc088b6d218dc57_0",
    # cures and treatments
    "606fd8fdf9b9e03ea4d8e4a1_0", "60934d17f9b9e03ea4d8e512_0", "5fb30fd404ded09dac378c22_0",
    "60a1f453f9b9e03ea4d8e67b_0", "6026ae5e6bc088b6d218dc04_0", "609d8f0df9b9e03ea4d8e5b6_0",
    "5f961d8c04ded09dac378bd6_0", "60920acbf9b9e03ea4d8e510_0",
    # vaccines, tests and immunity
    "60552ce46bc088b6d218dc6d_0", "60b8e483f9b9e03ea4d8e6c8_0", "60adb2f2f9b9e03ea4d8e696_0",
    "602ab7636bc088b6d218dc24_0", "6009edf66bc088b6d218dbd7_0", "60920803f9b9e03ea4d8e508_0",
    # origin, animals and mutations
    "5f92a5f304ded09dac378bc4_0", "5f92267104ded09dac378bb7_0", "609e88f0f9b9e03ea4d8e5f9_0",
    "609e814ef9b9e03ea4d8e5e7_0", "602a962c6bc088b6d218dc1a_0",
    # public measures and where outbreaks happen
    "5f76a244e95347460249fc2d_0", "606a7671f9b9e03ea4d8e47e_0", "609d886ff9b9e03ea4d8e5a5_0",
    "60706981f9b9e03ea4d8e4b1_0", "60abdf03f9b9e03ea4d8e68a_0", "608dbc56f9b9e03ea4d8e4e9_0",
    "608b5544f9b9e03ea4d8e4c8_0", "605528316bc088b6d218dc69_0", "609e7d54f9b9e03ea4d8e5e1_0",
    "5f8a082ae95347460249fc62_0", "5fb2e69804ded09dac378c14_0", "6070628af9b9e03ea4d8e4a4_0",
    "609d89def9b9e03ea4d8e5ab_0",
)
CLAIM_WORDS = (6, 30)
# Claims that start with a proper noun or acronym keep their capital when inlined ("that ...").
PROPER_STARTS = ("SARS", "COVID", "PCR")

PERSONAL = re.compile(
    r"[\w.+-]+@[\w-]+\.[\w.]+"                     # e-mail address
    r"|\+?\d[\d\s().-]{8,}\d"                     # phone-number-like digit runs
    r"|https?://|www\.|\.com\b|discord\.gg"      # links (often to personal pages)
    r"|(?<!\w)@\w{2,}|\bu/\w+|\br/\w+|\w#\d{4}\b",  # social handles: @, reddit, discord
    re.IGNORECASE)
# Jailbreaks: keep the framing (role-play, instruction override), drop anything sexual,
# hateful or that carries an operational harmful request.
JAILBREAK_FRAMING = re.compile(
    r"ignore (?:all|any|the|your|previous)|\bDAN\b|developer mode|no (?:restrictions|limits"
    r"|filters)|without (?:any )?(?:restrictions|limitations|filters)|pretend|act as|role-?play"
    r"|stay in character|jailbr|unfiltered|uncensored|do anything now", re.IGNORECASE)
JAILBREAK_EXCLUDED = re.compile(
    r"sex|porn|nsfw|\bcum|horny|erotic|nude|naked|fetish|lewd|genital|breast|penis|vagina"
    r"|fuck|shit|bitch|cunt|slur|nigg|fag|retard|nazi|hitler|racis"
    r"|bomb|explosiv|weapon|gun\b|meth\b|cocaine|heroin|drug|poison|murder|\bkill|suicid"
    r"|self-harm|rape|tortur|child|minor\b|malware|ransomware|keylog|phishing|hack"
    r"|credit card|steal|terror|blood|gore|violen|synthes|\blsd\b|manipulat|lust|girlfriend"
    r"|female|nfsw|schizo|\b1[0-7][- ]?(?:year|yo\b)|\bios\b|\burl\b", re.IGNORECASE)
JAILBREAK_MAX_CHARS = 1500
JAILBREAK_MAX = 90
TEMPLATE_EXCLUDED = re.compile(
    r"\bDAN\b|jailbr|unconstrained|escape the box|curl|wget|password|http|\{|\}", re.IGNORECASE)
TEMPLATE_SLOT = re.compile(
    r"\s*((?:my |the |your )?(?:first|initial|starting) [a-z ]{0,30}?"
    r"(?:is|are|will be|:|\u2013|-)\s*)[\"\u201c]?[^\"\u201c\u201d]*[\"\u201d]?\s*\.?\s*$",
    re.IGNORECASE)
ALPACA = re.compile(r"### Instruction:\n(?P<instruction>.*?)\n\n"
                    r"(?:### Input:\n(?P<input>.*?)\n\n)?### Response:", re.S)


def _git_dir(mirrors: Path, repo: str) -> Path:
    name = repo.replace("/", "+")
    for candidate in (mirrors / name / "repo", mirrors / f"{name}.git", mirrors / name):
        if candidate.is_dir():
            return candidate
    raise SystemExit(f"no bare clone of {repo} under {mirrors} (looked for {name}/repo, "
                     f"{name}.git, {name})")


def read(mirrors: Path, source: Source) -> str:
    result = subprocess.run(
        ["git", "--git-dir", str(_git_dir(mirrors, source.repo)), "show",
         f"{source.commit}:{source.path}"], check=True, capture_output=True)
    return result.stdout.decode("utf-8")


def jsonl(text: str) -> Iterator[dict[str, Any]]:
    for line in text.splitlines():
        if line.strip():
            yield json.loads(line)


def clean(text: str) -> str:
    return re.sub(r"[ \t]+\n", "\n", text).strip()


def has_personal_data(text: str) -> bool:
    return PERSONAL.search(text) is not None


def stable_order(items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Interleave sources by a hash of the id, so that the even and odd positions (the dev and
    test halves of `split_pool`) each get a fair share of every source."""
    return sorted(items, key=lambda item: hashlib.sha1(item["id"].encode()).hexdigest())


def claims(mirrors: Path) -> list[dict[str, Any]]:
    """False claims about COVID-19 from Check-COVID: the hand-picked ids, each checked against
    the mechanical filters (label REFUTE, annotator-written, one sentence of 6-30 words, no
    personal data), whitespace normalised, first letter capitalised, a full stop added."""
    records = {record["id"]: record for record in jsonl(read(mirrors, CHECK_COVID))}
    out: list[dict[str, Any]] = []
    for claim_id in CHECK_COVID_PICKED:
        record = records.get(claim_id)
        if record is None:
            raise SystemExit(f"Check-COVID claim {claim_id} not found in {CHECK_COVID.path}")
        text = " ".join(record["claim"].split()).rstrip(" .")
        text = text[:1].upper() + text[1:] + "."
        words = len(text.split())
        if (record["label"] != "REFUTE" or record["is_auth"]
                or not CLAIM_WORDS[0] <= words <= CLAIM_WORDS[1]
                or re.search(r"[.!?;]\s|\?", text) or has_personal_data(text)):
            raise SystemExit(f"Check-COVID claim {claim_id} no longer passes the filters: {text!r}")
        out.append({"id": f"checkcovid-{claim_id}", "text": text,
                    "proper_start": text.startswith(PROPER_STARTS)})
    if len({item["text"].lower() for item in out}) != len(out):
        raise SystemExit("duplicate Check-COVID claim texts")
    return stable_order(out)


def statements(mirrors: Path, limit: int = 300) -> list[dict[str, Any]]:
    """FEVER claims labelled SUPPORTS: true one-sentence statements, payloads for a popular
    wrapper that benign users fill with different facts."""
    picked = []
    for record in jsonl(read(mirrors, FEVER_DEV)):
        text = " ".join(record["claim"].split())
        if (record["label"] == "SUPPORTS" and 30 <= len(text) <= 120
                and not has_personal_data(text) and not re.search(r"\b(?:died|born)\b", text)):
            picked.append({"id": f"fever-{record['id']}", "text": text})
    return stable_order(picked)[:limit]


def instructions(mirrors: Path) -> list[dict[str, Any]]:
    items = []
    for record in jsonl(read(mirrors, USER_ORIENTED)):
        for n, instance in enumerate(record["instances"][:2]):
            text = record["instruction"] + (f"\n\n{instance['input']}" if instance["input"] else "")
            items.append({"id": f"selfinstruct-{record['id']}-{n}", "text": clean(text)})
    for record in jsonl(read(mirrors, SEED_TASKS)):
        instance = record["instances"][0]
        text = record["instruction"] + (f"\n\n{instance['input']}" if instance["input"] else "")
        items.append({"id": f"selfinstruct-{record['id']}", "text": clean(text)})
    for n, record in enumerate(jsonl(read(mirrors, DOLLY))):
        match = ALPACA.search(record["prompt"])
        if match:
            text = match["instruction"] + (f"\n\n{match['input']}" if match["input"] else "")
            items.append({"id": f"dolly-{n}", "text": clean(text)})
    questions = [record["question"] for record in jsonl(read(mirrors, NQ_OPEN))]
    # Every tenth NQ-open question: search-style questions as people type them, lower case.
    for n in range(0, len(questions), 10):
        items.append({"id": f"nq-open-dev-{n}", "text": questions[n].strip()})
    kept = [item for item in items
            if 8 <= len(item["text"]) <= 2500 and not has_personal_data(item["text"])]
    return stable_order(kept)


def templates(mirrors: Path) -> list[dict[str, Any]]:
    """Public role templates: the text up to the request slot ("My first request is ..."),
    and the slot's lead-in, so each user fills in their own request."""
    out = []
    ids: dict[str, int] = {}
    rows = csv.DictReader(io.StringIO(read(mirrors, AWESOME_PROMPTS)))
    for row in rows:
        prompt = " ".join(row["prompt"].split())
        if TEMPLATE_EXCLUDED.search(prompt + row["act"]) or has_personal_data(prompt):
            continue
        match = TEMPLATE_SLOT.search(prompt)
        # Without a slot the template's own example request stays in the text: leave it out.
        if not match or match.start() < 80:
            continue
        slug = re.sub(r"[^a-z0-9]+", "-", row["act"].lower()).strip("-")
        ids[slug] = ids.get(slug, 0) + 1
        suffix = f"-{ids[slug]}" if ids[slug] > 1 else ""
        out.append({"id": f"acp-{slug}{suffix}", "act": row["act"],
                    "template": prompt[:match.start()], "lead": match[1].strip()})
    return out


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit]
    end = max(cut.rfind(". "), cut.rfind("! "), cut.rfind("? "), cut.rfind("\n"))
    return cut[:end + 1].strip() if end > limit // 2 else cut.rsplit(" ", 1)[0]


def _shingles(text: str) -> set[str]:
    words = re.findall(r"\w+", text.lower())
    return {" ".join(words[i:i + 5]) for i in range(max(1, len(words) - 4))}


def jailbreaks(mirrors: Path) -> list[dict[str, Any]]:
    text = read(mirrors, JAILBREAKS)
    # The copy holds the upstream CSV twice, inside leftover merge-conflict markers: take one.
    lines = text.split("\n")
    if lines[0].startswith("<<<<<<<"):
        lines = lines[1:lines.index("=======")]
    csv.field_size_limit(1 << 26)
    rows = list(csv.DictReader(io.StringIO("\n".join(lines))))
    out: list[dict[str, Any]] = []
    seen: list[set[str]] = []
    for n, row in enumerate(rows):
        prompt = clean(row["prompt"])
        if (row["jailbreak"] != "True" or not JAILBREAK_FRAMING.search(prompt)
                or JAILBREAK_EXCLUDED.search(prompt) or has_personal_data(prompt)
                or len(prompt) < 200):
            continue
        short = _truncate(prompt, JAILBREAK_MAX_CHARS)
        shingles = _shingles(short)
        # Variants of one jailbreak (DAN 6.0, 7.0 ...) would straddle the dev and test halves.
        if any(len(shingles & other) / len(shingles | other) > 0.3 for other in seen):
            continue
        seen.append(shingles)
        out.append({"id": f"jbllm-20230507-{n}", "platform": row["platform"], "text": short})
        if len(out) == JAILBREAK_MAX:
            break
    return out


def dataset_prompts(mirrors: Path) -> list[dict[str, Any]]:
    out = []
    for template in T0_TEMPLATES:
        source = Source(*SELF_INSTRUCT, f"{T0_DIR}/{template}.jsonl")
        kept = 0
        for n, record in enumerate(jsonl(read(mirrors, source))):
            prompt = clean(record["prompt"])
            if has_personal_data(prompt) or len(prompt) > 1500:
                continue
            out.append({"id": f"t0-{template}-{n}", "template": template, "text": prompt})
            kept += 1
            if kept == T0_PER_TEMPLATE:
                break
    return out


def write(path: Path, items: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as out:
        for item in items:
            out.write(json.dumps(item, ensure_ascii=False) + "\n")
    print(f"{path.name}: {len(items)} items, {path.stat().st_size} bytes")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mirrors", type=Path, required=True,
                        help="directory of bare clones named <owner>+<name>/repo")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args(argv)
    builders = {"claims": claims, "statements": statements, "instructions": instructions,
                "templates": templates, "jailbreaks": jailbreaks,
                "dataset_prompts": dataset_prompts}
    for name, build in builders.items():
        write(args.out / f"{name}.jsonl", build(args.mirrors))


if __name__ == "__main__":
    main(sys.argv[1:])
