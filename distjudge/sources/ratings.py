"""Rating sources (task ``rating``, 1-5): SummEval, DialSummEval and Newsroom, one source per
criterion. Items: ``text`` = the summary, ``context`` = the article or dialogue, ``criterion``.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from distjudge.sources.raw import (
    Row,
    as_int,
    file_cache,
    need_file,
    read_csv,
    read_json_members,
    read_jsonl,
    text_key,
)
from distjudge.sources.registry import register

SCALE = ["1", "2", "3", "4", "5"]
CRITERIA = ("coherence", "consistency", "fluency", "relevance")


def rating_counts(scores: list[int], labels: list[str] = SCALE) -> dict:
    counts = dict.fromkeys(labels, 0)
    for score in scores:
        counts[str(score)] += 1
    return counts


def _scores(row: Row, key: str, low: int = 1, high: int = 5) -> list[dict]:
    """A list of per-annotator {criterion: score} dicts, every criterion checked."""
    out = []
    for i, raw in enumerate(row.get(key, list)):
        sub = Row(raw, row.path, row.line, f"{row.prefix}{key}[{i}].")
        out.append({c: sub.integer(c, low, high) for c in CRITERIA})
    if not out:
        row.fail(key, "no annotations")
    return out


# --- SummEval -------------------------------------------------------------------------------

def _model_number(path: Path) -> int:
    match = re.match(r"M(\d+)_", path.name)
    return int(match.group(1)) if match else 0


@file_cache
def summeval_file(path: Path) -> list[dict]:
    out = []
    for line, record in read_jsonl(path):
        row = Row(record, path, line)
        out.append({"doc": row.text("id"), "model": row.text("model_id"),
                    "summary": row.text("decoded"), "article": row.text("text"),
                    "expert": _scores(row, "expert_annotations"),
                    "crowd": _scores(row, "turker_annotations")})
    return out


def load_summeval(root: Path, criterion: str, experts_only: bool = False):
    files = sorted((root / "summeval").glob("M*_outputs_annotations.jsonl"), key=_model_number)
    if not files:
        need_file(root / "summeval" / "M8_outputs_annotations.jsonl")
    for path in files:
        for rec in summeval_file(path):
            raters = rec["expert"] + ([] if experts_only else rec["crowd"])
            yield {"id": f"{rec['doc']}/{rec['model']}/{criterion}", "text": rec["summary"],
                   "criterion": criterion, "context": rec["article"],
                   "label_counts": rating_counts([r[criterion] for r in raters]),
                   "group": f"cnndm:{rec['doc']}", "model_id": rec["model"]}


# --- DialSummEval ---------------------------------------------------------------------------

def _norm(text: str) -> str:
    """Letters and digits only (AMT texts carry <p> tags and HTML entities)."""
    return re.sub(r"[^a-z0-9]", "", html.unescape(re.sub(r"</?p>", " ", text)).lower())


def _dialogue_lines(text: str) -> str:
    """'| A: hi | B: hello' -> one utterance per line."""
    return "\n".join(part.strip(" |") for part in text.split(" | ") if part.strip(" |"))


@file_cache
def dialsummeval_file(path: Path) -> list[dict]:
    out = []
    for line, record in read_jsonl(path):
        row = Row(record, path, line)
        out.append({"dialogue_id": str(row.get("id", (str, int))), "model": row.text("model_id"),
                    "dialogue": row.text("dialogue"), "summary": row.text("summary"),
                    "ratings": _scores(row, "annotations")})
    return out


AMT_COLUMNS = {"coherence": "Answer.Coherance", "consistency": "Answer.Consistency",
               "fluency": "Answer.Fluency", "relevance": "Answer.Relevance"}


@file_cache
def amt_file(path: Path) -> dict:
    """(normalised dialogue, model letter) -> [(normalised summary, {criterion: score})]."""
    cols = ["Input.model_type", "Input.dialogue", "Input.summary", *AMT_COLUMNS.values()]
    out: dict = {}
    for line, raw in read_csv(path, cols):
        row = Row(raw, path, line)
        scores = {c: row.integer(col, 1, 5) for c, col in AMT_COLUMNS.items()}
        key = (_norm(row.text("Input.dialogue")), row.text("Input.model_type").strip())
        out.setdefault(key, []).append((_norm(row.text("Input.summary")), scores))
    return out


def load_dialsummeval(root: Path, criterion: str, pooled: bool = False):
    amt: dict = {}
    if pooled:
        files = sorted((root / "dialsummeval/amt_raw").glob("*.csv"))
        if not files:
            need_file(root / "dialsummeval/amt_raw/Batch_4602982_batch_results.csv")
        for path in files:
            for key, rows in amt_file(path).items():
                amt.setdefault(key, []).extend(rows)
    for rec in dialsummeval_file(root / "dialsummeval/human_judgment.jsonl"):
        scores = [r[criterion] for r in rec["ratings"]]
        if pooled:  # join on dialogue + system letter, and only if the summary text agrees
            summary = _norm(rec["summary"])
            rated = amt.get((_norm(rec["dialogue"]), rec["model"]), [])
            scores += [s[criterion] for text, s in rated if text == summary]
        yield {"id": f"{rec['dialogue_id']}/{rec['model']}/{criterion}", "text": rec["summary"],
               "criterion": criterion, "context": _dialogue_lines(rec["dialogue"]),
               "label_counts": rating_counts(scores), "group": f"samsum:{rec['dialogue_id']}",
               "model_id": rec["model"]}


# --- Newsroom -------------------------------------------------------------------------------

NEWSROOM = {  # the questions the raters answered (Judge-Bench prompts)
    "informativeness": "how well does the summary capture the key points of the article?",
    "relevance": "are the details provided by the summary consistent with details in the article?",
    "fluency": "are the individual sentences of the summary well-written and grammatical?",
    "coherence": "do phrases and sentences of the summary fit together and make sense "
                 "collectively?",
}
_SUMMARY, _ARTICLE = "### Generated Summary", "### Source Article"


@file_cache
def newsroom_file(path: Path) -> list[dict]:
    out = []
    for row, _ in read_json_members(path, ("instances",)):
        text = row.text("instance")
        if _SUMMARY not in text or _ARTICLE not in text:
            row.fail("instance", f"expected '{_SUMMARY}' and '{_ARTICLE}' sections")
        summary, article = text.split(_ARTICLE, 1)
        summary = summary.replace(_SUMMARY, "").strip()
        article = re.sub(r"\s*</?p>\s*", "\n", article).strip()
        if not summary or not article:
            row.fail("instance", "empty summary or article")
        annotations = row.obj("annotations")
        scores = {}
        for c in NEWSROOM:
            crit = annotations.obj(c.capitalize())
            values = crit.get("individual_human_scores", list)
            scores[c] = [as_int(v, crit, "individual_human_scores", 1, 5) for v in values]
            if not values:
                crit.fail("individual_human_scores", "no annotations")
        out.append({"id": str(row.get("id", (int, str))), "summary": summary, "article": article,
                    "scores": scores})
    return out


def load_newsroom(root: Path, criterion: str):
    for rec in newsroom_file(root / "judgebench-newsroom/newsroom.json"):
        yield {"id": f"newsroom-{rec['id']}/{criterion}", "text": rec["summary"],
               "criterion": criterion, "context": rec["article"],
               "label_counts": rating_counts(rec["scores"][criterion]),
               "group": text_key("article", rec["article"])}


# --- registry -------------------------------------------------------------------------------

for _c in CRITERIA:
    register(f"summeval-{_c}", "rating", "MIT",
             f"""SummEval (Fabbri et al. 2021) {_c}: 1,200 CNN/DM summaries (12 abstractive systems
             x 100 articles) rated 1-5 by 3 experts + 5 crowd workers, pooled (8 ratings/item;
             crowd ratings are noisier). group = article.""",
             load_summeval, criterion=_c)
    register(f"summeval-{_c}-experts", "rating", "MIT",
             f"""SummEval {_c}, the 3 expert ratings only (1,200 summaries; same ids as
             summeval-{_c}). group = article.""",
             load_summeval, overlaps=(f"summeval-{_c}",), criterion=_c, experts_only=True)
    register(f"dialsummeval-{_c}", "rating", "not stated (dialogues: SAMSum, CC BY-NC-ND 4.0)",
             f"""DialSummEval (Gao & Wan 2022) {_c}: 1,400 SAMSum dialogue summaries (14 systems x
             100 dialogues) rated 1-5 by the paper's 3 annotators. group = dialogue.""",
             load_dialsummeval, criterion=_c)
    register(f"dialsummeval-{_c}-pooled", "rating",
             "not stated (dialogues: SAMSum, CC BY-NC-ND 4.0)",
             f"""DialSummEval {_c}, the 3 annotators pooled with the 5 Mechanical Turk raters the
             authors collected but did not use (lower quality): 8 ratings/item. AMT rows are joined
             on (dialogue, system letter) and kept only when the summary text matches (all 1,400
             do). Same ids as dialsummeval-{_c}.""",
             load_dialsummeval, overlaps=(f"dialsummeval-{_c}",), criterion=_c, pooled=True)
for _c, _question in NEWSROOM.items():
    register(f"newsroom-{_c}", "rating", "Apache-2.0",
             f"""Newsroom human evaluation (Grusky et al. 2018) {_c} ("{_question}"): 420 summaries
             (7 systems x 60 articles) rated 1-5 by 3 crowd workers. Article HTML paragraph tags
             become newlines. group = article.""",
             load_newsroom, criterion=_c)
