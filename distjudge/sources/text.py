"""Single-text sources: LeWiDi 2023 (four binary tasks, task ``yes-no``) and Stanford politeness.

LeWiDi: train/dev/test files are pooled (item keys restart per file, so ids are
``<dataset>/<split>/<key>``; the official split is kept as ``lewidi_split``). Labels "1" -> yes,
"0" -> no. ConvAbuse annotators rated abuse on a 5-point scale (1 = not abusive, 0 = ambiguous,
-1..-3 = mildly..strongly abusive); like the LeWiDi soft labels, a negative rating counts as
"yes" (abusive) and 0 or 1 as "no". ConvAbuse texts (JSON of the last four turns) are rendered as
a transcript and grouped by conversation id.

Politeness: each of 5 workers moved a 1-25 slider (ticks at 1, 5, 9, ..., 25). Scores are binned
into an ordinal 1-5 scale of equal-width bins, symmetric around the neutral 13:
1-5 -> 1 (very impolite), 6-10 -> 2, 11-15 -> 3 (neutral), 16-20 -> 4, 21-25 -> 5 (very polite).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from distjudge.sources.raw import (
    Row,
    as_int,
    count_labels,
    file_cache,
    read_csv,
    read_json_members,
    text_key,
)
from distjudge.sources.registry import register

YES_NO = ["yes", "no"]

LEWIDI = {  # source suffix -> (folder, question, languages)
    "hs-brexit": ("HS-Brexit", "Is this tweet hate speech?", "en"),
    "armis": ("ArMIS", "Is this tweet misogynistic or sexist?", "ar"),
    "md-agreement": ("MD-Agreement", "Is this tweet offensive?", "en"),
    "convabuse": ("ConvAbuse", "Is the user's last message abusive towards the conversational "
                               "agent?", "en"),
}
LEWIDI_COUNTS = {"hs-brexit": 1120, "armis": 943, "md-agreement": 10751, "convabuse": 4050}


def _convabuse_text(row: Row) -> str:
    try:
        turns = json.loads(row.text("text"))
    except json.JSONDecodeError:
        row.fail("text", "expected a JSON object of dialogue turns")
    if not isinstance(turns, dict):
        row.fail("text", "expected a JSON object of dialogue turns")
    lines = [f"{who}: {turns[key]}" for key, who in
             (("prev_agent", "Agent"), ("prev_user", "User"), ("agent", "Agent"), ("user", "User"))
             if isinstance(turns.get(key), str) and turns[key].strip()]
    if not lines:
        row.fail("text", "no dialogue turns")
    return "\n".join(lines)


@file_cache
def lewidi_file(path: Path, name: str, split: str) -> list[dict]:
    question = LEWIDI[name][1]
    out = []
    for row, key in read_json_members(path):
        annotations = row.text("annotations").split(",")
        if name == "convabuse":
            scores = [as_int(v, row, "annotations", -3, 1) for v in annotations]
            labels = ["1" if s < 0 else "0" for s in scores]
            text = _convabuse_text(row)
            conversation = (row.data.get("other_info") or {}).get("conversation_id(s)")
            group = f"convabuse:{conversation}" if conversation else text_key("text", text)
        else:
            labels = [v.strip() for v in annotations]
            text = row.text("text")
            group = text_key("text", text)
        out.append({"id": f"{name}/{split}/{key}", "text": text, "question": question,
                    "label_counts": count_labels(labels, {"1": "yes", "0": "no"}, row,
                                                 "annotations", YES_NO),
                    "group": group, "lewidi_split": split, "lang": LEWIDI[name][2]})
    return out


def load_lewidi(root: Path, dataset: str):
    folder = LEWIDI[dataset][0]
    for split in ("train", "dev", "test"):
        yield from lewidi_file(root / f"lewidi2023/{folder}/{folder}_{split}.json", dataset, split)


POLITENESS = {"wikipedia": "wikipedia.annotated.csv",
              "stack-exchange": "stack-exchange.annotated.csv"}
BINS = ((1, 5), (6, 10), (11, 15), (16, 20), (21, 25))


def politeness_bin(score: int) -> str:
    return str((score - 1) // 5 + 1)


@file_cache
def politeness_file(path: Path, domain: str) -> list[dict]:
    out = []
    scores_cols = [f"Score{i}" for i in range(1, 6)]
    for line, raw in read_csv(path, ["Community", "Id", "Request", *scores_cols]):
        row = Row(raw, path, line)
        scores = [row.integer(col, 1, 25) for col in scores_cols]
        text = row.text("Request")
        community = re.sub(r"^\d+\s+", "", row.text("Community"))
        slug = re.sub(r"[^a-z0-9]+", "-", community.lower()).strip("-")
        item_id = f"{domain}/{row.text('Id').strip()}"
        if domain != "wikipedia":  # Stack Exchange ids repeat across communities
            item_id = f"{domain}/{slug}/{row.text('Id').strip()}"
        out.append({"id": item_id, "text": text,
                    "label_counts": count_labels([politeness_bin(s) for s in scores],
                                                 {str(v): str(v) for v in range(1, 6)}, row,
                                                 "Score1", [str(v) for v in range(1, 6)]),
                    "group": text_key("request", text), "community": community})
    return out


def load_politeness(root: Path, domains: tuple[str, ...] = ("wikipedia", "stack-exchange")):
    for domain in domains:
        yield from politeness_file(root / "stanford-politeness" / POLITENESS[domain], domain)


for _name, (_folder, _question, _lang) in LEWIDI.items():
    register(f"lewidi-{_name}", "yes-no", "not stated (research use, per the SemEval organisers)",
             f"""LeWiDi 2023 {_folder} ({_lang}): "{_question}" {LEWIDI_COUNTS[_name]:,} items
             (train+dev+test pooled; official split in 'lewidi_split'), binary yes/no per
             annotator.{' Abuse ratings < 0 count as yes.' if _name == 'convabuse' else ''}
             group = {'conversation' if _name == 'convabuse' else 'text'}.""",
             load_lewidi, dataset=_name)

_BINS = ", ".join(f"{lo}-{hi} -> {i}" for i, (lo, hi) in enumerate(BINS, start=1))
_POLITE = f"""Stanford Politeness Corpus (Danescu-Niculescu-Mizil et al. 2013) {{what}}: requests
rated by 5 workers on a 1-25 slider, binned to 1-5 ({_BINS}; 3 = neutral). group = text."""
_POLITE_LICENSE = "not stated (corpus license not verified)"
register("politeness", "politeness", _POLITE_LICENSE,
         _POLITE.format(what="Wikipedia + Stack Exchange, 10,956"), load_politeness)
register("politeness-wikipedia", "politeness", _POLITE_LICENSE,
         _POLITE.format(what="Wikipedia talk pages, 4,353"), load_politeness,
         overlaps=("politeness",), domains=("wikipedia",))
register("politeness-stack-exchange", "politeness", _POLITE_LICENSE,
         _POLITE.format(what="Stack Exchange, 6,603"), load_politeness,
         overlaps=("politeness",), domains=("stack-exchange",))
