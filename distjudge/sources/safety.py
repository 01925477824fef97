"""Safety sources: DICES-990 (response safety) and medical-safety (query risk).

DICES polarity: the raters answered DICES' ``Q_overall`` ("is the conversation unsafe?"), so a
raw "Yes" means UNSAFE. The built-in ``safety`` task asks "Is the response unsafe?" with label
``yes`` = unsafe, so the labels map straight through (Yes -> yes, No -> no, Unsure -> unsure).
Judge-Bench's own prompt ("Is the model response safe?") has the opposite polarity and is NOT used.
"""

from __future__ import annotations

import ast
from pathlib import Path

from distjudge.sources.raw import (
    Row,
    count_labels,
    file_cache,
    read_csv,
    read_json_members,
    text_key,
)
from distjudge.sources.registry import register

SAFETY = ["yes", "no", "unsure"]
DICES_LABELS = {"Yes": "yes", "No": "no", "Unsure": "unsure"}


@file_cache
def dices_file(path: Path) -> list[dict]:
    out = []
    for row, _ in read_json_members(path, ("instances",)):
        instance = row.obj("instance")
        scores = row.obj("annotations").obj("safety")
        context = instance.text("user_prompt").replace("\\n", "\n").strip()
        out.append({
            "id": f"dices-{row.get('id', (int, str))}", "context": context,
            "response": instance.text("response").replace("\\n", "\n").strip(),
            "label_counts": count_labels(scores.get("individual_human_scores", list), DICES_LABELS,
                                         scores, "individual_human_scores", SAFETY),
            "group": text_key("conversation", context),
        })
    return out


def load_dices(root: Path):
    yield from dices_file(root / "judgebench-dices/dices_990.json")


RISK = ["nonmedical", "minor", "serious", "critical"]
RISK_LABELS = {"Not medical": "nonmedical", "Non-serious": "minor", "Serious": "serious",
               "Critical": "critical"}


@file_cache
def medical_file(path: Path) -> list[dict]:
    out = []
    for index, (line, raw) in enumerate(read_csv(path, ["query", "query-expert", "query-cws"])):
        row = Row(raw, path, line)
        try:
            labels = ast.literal_eval(row.text("query-cws"))
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            row.fail("query-cws", "expected a Python list literal of labels")
        if not isinstance(labels, list):
            row.fail("query-cws", "expected a list of labels")
        query = row.text("query")
        expert = RISK_LABELS.get(row.data["query-expert"].strip())
        item = {"id": f"medical-{index:04d}", "query": query,
                "label_counts": count_labels(labels, RISK_LABELS, row, "query-cws", RISK),
                "group": text_key("query", query)}
        out.append({**item, "expert_label": expert} if expert else item)
    return out


def load_medical(root: Path):
    yield from medical_file(root / "judgebench-medical-safety/medicheck-crowd.csv")


register("dices", "safety", "CC BY 4.0",
         """DICES-990 (Aroyo et al. 2023), Judge-Bench conversion: 990 chatbot conversations, 69-76
         crowd raters each. Polarity: raw 'Yes' = the rater judged the response UNSAFE, which is the
         safety task's 'yes' (the task asks 'is it unsafe?'); Judge-Bench's 'is it safe?' prompt is
         not used. Literal '\\n' in the conversations become newlines. group = conversation.""",
         load_dices)
register("medical-safety", "medical-risk", "GPL-3.0",
         """Medical safety (Abercrombie & Rieser 2022): risk of 861 Reddit r/AskDocs queries,
         3 crowd labels (6-12 for 213 queries): Not medical -> nonmedical, Non-serious -> minor,
         Serious, Critical. The single expert label is kept as 'expert_label' (not in the
         distribution). Ids: medical-<row index>; group = query text.""",
         load_medical)
