"""FED turn level (Mehri & Eskenazi 2020): 375 system responses, 5 ratings per dimension.

One source per dimension, each on its own scale (task ``turn-rating-0-1``, ``-0-2`` or ``-0-4``).
Free-text scores ("N/A (...)", 12 of them at turn level) are dropped, as SOURCE.md says.
"""

from __future__ import annotations

from pathlib import Path

from distjudge.sources.raw import as_int, file_cache, read_json_members, text_key
from distjudge.sources.registry import register

DIMENSIONS = {  # dimension -> highest score (scales read from the data: 0..high)
    "Interesting": 2, "Engaging": 2, "Specific": 2, "Relevant": 2, "Correct": 2,
    "Semantically appropriate": 2, "Understandable": 1, "Fluent": 2, "Overall": 4,
}


def slug(name: str) -> str:
    return name.lower().replace(" ", "-")


@file_cache
def fed_file(path: Path) -> list[dict]:
    out = []
    for row, key in read_json_members(path):
        if "response" not in row.data:
            continue  # dialog-level record
        annotations = row.obj("annotations")
        scores = {}
        for dim, high in DIMENSIONS.items():
            values = annotations.get(dim, list)
            scores[dim] = [as_int(v, annotations, dim, 0, high) for v in values
                           if not isinstance(v, str)]
            if not scores[dim]:
                annotations.fail(dim, "no numeric scores")
        out.append({"index": key, "context": row.text("context"), "response": row.text("response"),
                    "system": row.text("system"), "scores": scores})
    return out


def load_fed_turn(root: Path, dimension: str):
    high = DIMENSIONS[dimension]
    labels = [str(v) for v in range(high + 1)]
    for rec in fed_file(root / "fed-dialog/fed_data.json"):
        counts = dict.fromkeys(labels, 0)
        for score in rec["scores"][dimension]:
            counts[str(score)] += 1
        yield {"id": f"fed-{rec['index']}/{slug(dimension)}", "context": rec["context"],
               "response": rec["response"], "criterion": dimension.lower(),
               "label_counts": counts, "group": text_key("dialog", rec["context"]),
               "system": rec["system"]}


for _dim, _high in DIMENSIONS.items():
    register(f"fed-turn-{slug(_dim)}", f"turn-rating-0-{_high}",
             "not stated for the data (vendored from madaan/self-refine, Apache-2.0)",
             f"""FED turn level, {_dim.lower()} (0-{_high}): the last system response of 375
             conversations (Meena, Mitsuku, human) rated by 5 crowd workers; free-text 'N/A'
             scores dropped. Ids: fed-<index in fed_data.json>/<dimension>; group = context.""",
             load_fed_turn, dimension=_dim)
