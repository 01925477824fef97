"""Named sources on the real files under ../shared/datasets (skipped when that folder is absent),
plus splits, subsampling, pair swapping, statistics and the `data` CLI."""

from __future__ import annotations

import argparse
import gzip
import json
import math
import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from distjudge.data import DataError, validate_record
from distjudge.metrics import kl_divergence
from distjudge.sources import (
    both_orders,
    data_root,
    get_source,
    list_sources,
    load_source,
    mix,
    source_stats,
    split_items,
    subsample_annotations,
    swap_pair,
)
from distjudge.sources.cli import add_data_parser
from distjudge.sources.stats import split_half
from distjudge.task import load_task, task_from_dict

ROOT = data_root()
HAVE_DATA = (ROOT / "snli").is_dir() and (ROOT / "chaosnli").is_dir()
needs_data = pytest.mark.skipif(
    not HAVE_DATA, reason=f"real datasets not found under {ROOT} (set DISTJUDGE_DATA)")

# Item counts stated by each SOURCE.md (or derived there: criteria x items, pooled splits).
EXPECTED = {
    "snli-dev": 10_000, "snli-test": 10_000, "snli": 20_000, "snli-nochaos": 20_000 - 1_514,
    "chaosnli-snli": 1_514, "chaosnli-mnli": 1_599, "chaosnli-anli": 1_532,
    "varierr-nli": 500, "varierr-nli-validated": 498, "mt-bench": 910, "dices": 990,
    "medical-safety": 861, "lewidi-hs-brexit": 784 + 168 + 168, "lewidi-armis": 657 + 141 + 145,
    "lewidi-md-agreement": 6_592 + 1_104 + 3_055, "lewidi-convabuse": 2_398 + 812 + 840,
    "politeness": 4_353 + 6_603, "politeness-wikipedia": 4_353,
    "politeness-stack-exchange": 6_603,
    **{f"summeval-{c}{v}": 1_200 for c in ("coherence", "consistency", "fluency", "relevance")
       for v in ("", "-experts")},
    **{f"dialsummeval-{c}{v}": 1_400 for c in ("coherence", "consistency", "fluency", "relevance")
       for v in ("", "-pooled")},
    **{f"newsroom-{c}": 420 for c in ("informativeness", "relevance", "fluency", "coherence")},
    **{f"fed-turn-{d}": 375 for d in ("interesting", "engaging", "specific", "relevant", "correct",
                                      "semantically-appropriate", "understandable", "fluent",
                                      "overall")},
}
GROUPED = ["summeval-coherence", "dialsummeval-fluency-pooled", "newsroom-relevance",
           "fed-turn-overall", "mt-bench", "snli-dev", "lewidi-convabuse"]


@pytest.fixture(scope="module")
def loaded() -> dict[str, list[dict]]:
    if not HAVE_DATA:
        pytest.skip(f"real datasets not found under {ROOT} (set DISTJUDGE_DATA)")
    return {source.name: load_source(source.name) for source in list_sources()}


def test_registry_covers_every_required_source():
    assert set(EXPECTED) == {source.name for source in list_sources()}
    for source in list_sources():
        assert source.license.strip() and source.description.strip()
        load_task(source.task)  # a built-in task or one of ours
        for other in source.overlaps:
            get_source(other)
    with pytest.raises(DataError, match="unknown source 'nope'"):
        get_source("nope")


@needs_data
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_item_counts_match_source_md(loaded, name):
    assert len(loaded[name]) == EXPECTED[name]


@needs_data
def test_every_item_validates_and_sums_to_one(loaded):
    for name, items in loaded.items():
        task = load_task(get_source(name).task)
        ids = [item["id"] for item in items]
        assert len(set(ids)) == len(ids), name
        for item in items:
            record = validate_record(item, task, f"{name}:{item['id']}", require_labels=True)
            p = record["counts"] / record["counts"].sum()
            assert math.isclose(p.sum(), 1.0, abs_tol=1e-12)
            assert list(item["label_counts"]) == task.label_names, name
            assert isinstance(item["group"], str) and item["group"], name
            assert item["source"] == name


@needs_data
def test_annotator_counts_and_label_totals(loaded):
    def totals(name):
        return Counter(sum(item["label_counts"].values()) for item in loaded[name])

    assert totals("snli-dev") == {5: 9_986, 4: 14} and totals("snli-test") == {5: 9_990, 4: 10}
    for name in ("chaosnli-snli", "chaosnli-mnli", "chaosnli-anli"):
        assert totals(name) == {100: EXPECTED[name]}
    assert totals("summeval-fluency") == {8: 1_200}
    assert totals("summeval-fluency-experts") == {3: 1_200}
    assert totals("dialsummeval-relevance") == {3: 1_400}
    assert totals("dialsummeval-relevance-pooled") == {8: 1_400}
    assert totals("medical-safety") == {3: 648, 6: 186, 9: 25, 12: 2}
    dices = Counter()
    for item in loaded["dices"]:
        dices.update(item["label_counts"])
    assert dices == {"no": 48_995, "yes": 19_357, "unsure": 3_751}  # "Yes" = unsafe = "yes"
    votes = load_source("mt-bench", dedupe=False)
    assert Counter(sum(i["label_counts"].values()) for i in votes) == {
        1: 425, 2: 283, 3: 136, 4: 47, 5: 13, 6: 5, 7: 1}
    assert sum(sum(i["label_counts"].values()) for i in loaded["mt-bench"]) == 1_689 - 1
    fed = sum(sum(i["label_counts"].values()) for name in loaded if name.startswith("fed-turn")
              for i in loaded[name])
    assert fed == 375 * 9 * 5 - 12  # free-text "N/A" scores dropped


@needs_data
def test_lewidi_convabuse_matches_official_soft_labels(loaded):
    raw = json.loads((ROOT / "lewidi2023/ConvAbuse/ConvAbuse_dev.json").read_text())
    items = {item["id"]: item for item in loaded["lewidi-convabuse"]}
    for key, record in raw.items():
        counts = items[f"convabuse/dev/{key}"]["label_counts"]
        share = counts["yes"] / (counts["yes"] + counts["no"])
        assert abs(share - float(record["soft_label"]["1"])) < 1e-3


@needs_data
def test_no_chaosnli_pair_survives_in_snli_training_sets(loaded):
    chaos = {item["id"] for item in loaded["chaosnli-snli"]}
    dev = {item["id"] for item in loaded["snli-dev"]}
    assert chaos <= dev  # the overlap SOURCE.md warns about, detectable by id
    train_sets = [
        loaded["snli-nochaos"],
        load_source("snli", exclude=["chaosnli-snli"]),
        load_source("snli-dev", exclude=["chaosnli-snli"]),
        mix(["snli-dev", "snli-test"], exclude=["chaosnli-snli"]),
    ]
    for items in train_sets:
        assert not chaos & {item["id"] for item in items}
    assert len(train_sets[2]) == 10_000 - 1_514
    train, _ = split_items(loaded["snli-nochaos"], test=0.2, seed=0)
    assert not chaos & {item["id"] for item in train}
    pooled = mix(["chaosnli-snli", "snli"])  # a shared pair is kept once, first source wins
    assert len(pooled) == 20_000 and len({i["id"] for i in pooled}) == 20_000
    varierr = {item["id"] for item in loaded["varierr-nli"]}
    assert varierr <= {item["id"] for item in loaded["chaosnli-mnli"]}
    assert len(load_source("chaosnli-mnli", exclude=["varierr-nli"])) == 1_599 - 500
    with pytest.raises(DataError, match="different tasks"):
        mix(["snli", "dices"])


@needs_data
@pytest.mark.parametrize("name", GROUPED)
def test_split_is_group_aware_and_deterministic(loaded, name):
    items = loaded[name]
    if name == "mt-bench":
        items = both_orders(items, load_task("pairwise"))
    train, test = split_items(items, test=0.2, seed=0)
    assert len(train) + len(test) == len(items)
    assert not {i["group"] for i in train} & {i["group"] for i in test}
    assert 0.1 < len(test) / len(items) < 0.3
    shuffled = random.Random(1).sample(items, len(items))
    again = split_items(shuffled, test=0.2, seed=0)[1]
    assert {i["id"] for i in again} == {i["id"] for i in test}  # order-independent
    other = split_items(items, test=0.2, seed=1)[1]
    assert {i["id"] for i in other} != {i["id"] for i in test}
    if name == "mt-bench":  # both orders of a pair land together
        test_ids = {i["id"] for i in test}
        assert all((i["id"] + "#swapped" in test_ids) for i in test if "#" not in i["id"])


def test_split_without_groups_uses_ids():
    items = [{"id": str(i)} for i in range(2_000)]
    train, test = split_items(items, test=0.25, seed=3)
    assert 0.2 < len(test) / 2_000 < 0.3
    assert split_items(items, test=0.25, seed=3) == (train, test)
    assert split_items(items, test=0.0)[1] == [] and split_items(items, test=1.0)[0] == []
    with pytest.raises(ValueError):
        split_items(items, test=1.5)


@needs_data
@pytest.mark.parametrize("name,k", [("chaosnli-snli", 5), ("dices", 3), ("mt-bench", 2),
                                    ("summeval-coherence", 4)])
def test_subsample_keeps_at_most_k(loaded, name, k):
    items = loaded[name]
    small = subsample_annotations(items, k, seed=0)
    assert subsample_annotations(items, k, seed=0) == small
    assert small != subsample_annotations(items, k, seed=1) or name == "mt-bench"
    for before, after in zip(items, small):
        n = sum(before["label_counts"].values())
        assert sum(after["label_counts"].values()) == min(k, n)
        assert all(after["label_counts"][lab] <= c for lab, c in before["label_counts"].items())
        assert after["id"] == before["id"] and after["group"] == before["group"]
    assert items[0]["label_counts"] == loaded[name][0]["label_counts"]  # input untouched


def test_subsample_annotation_lists_and_bad_k():
    items = [{"id": "a", "annotations": ["x", "y", "y", "z", "x"]},
             {"id": "b", "annotations": ["x"]}]
    out = subsample_annotations(items, 3, seed=7)
    assert len(out[0]["annotations"]) == 3 and out[1]["annotations"] == ["x"]
    assert not Counter(out[0]["annotations"]) - Counter(items[0]["annotations"])
    with pytest.raises(ValueError):
        subsample_annotations(items, 0)
    with pytest.raises(DataError, match="label_counts"):
        subsample_annotations([{"id": "c", "label_counts": {"x": -1}}], 1)


def test_swap_pair_flips_labels_and_responses():
    task = load_task("pairwise")
    item = {"id": "q1/m1/m2", "context": "Q", "response_a": "one", "response_b": "two",
            "label_counts": {"A": 3, "B": 1, "tie": 2}, "group": "q1",
            "model_a": "m1", "model_b": "m2"}
    swapped = swap_pair(item, task)
    assert swapped["response_a"] == "two" and swapped["response_b"] == "one"
    assert swapped["model_a"] == "m2" and swapped["model_b"] == "m1"
    assert swapped["label_counts"] == {"A": 1, "B": 3, "tie": 2}
    assert list(swapped["label_counts"]) == ["A", "B", "tie"]
    assert swapped["id"] == "q1/m1/m2#swapped" and swapped["group"] == "q1"
    assert swap_pair(swapped, task) == item  # swapping twice gives the item back
    record = validate_record(item, task, "x", require_labels=True)
    flipped = swap_pair(record, task)
    assert flipped["counts"].tolist() == [1, 3, 2]
    bare = swap_pair({"id": "7", "context": "Q", "response_a": "x", "response_b": "y",
                      "annotations": ["A", "tie", "B", "A"]}, task)
    assert bare["annotations"] == ["B", "tie", "A", "B"] and bare["group"] == "7"
    with pytest.raises(ValueError, match="declares no swap"):
        swap_pair(item, load_task("nli"))
    anli = load_task("abductive-nli")
    expected = ("hyp1", "hyp2", "1", "2")
    assert anli.swap_spec() == task_from_dict(anli.to_dict()).swap_spec() == expected
    assert load_task("pairwise").swap_permutation() == [1, 0, 2]


@needs_data
def test_swap_pair_on_real_pairwise_sources(loaded):
    for name in ("mt-bench", "chaosnli-anli"):
        task = load_task(get_source(name).task)
        a, b = task.label_names[:2]
        for item in loaded[name][:50]:
            swapped = swap_pair(item, task)
            validate_record(swapped, task, name, require_labels=True)
            assert swapped["label_counts"][a] == item["label_counts"][b]
            assert swapped["label_counts"][b] == item["label_counts"][a]
            assert swapped["group"] == item["group"]
    anli = loaded["chaosnli-anli"][0]
    swapped = swap_pair(anli, load_task("abductive-nli"))
    assert (swapped["hyp1"], swapped["hyp2"]) == (anli["hyp2"], anli["hyp1"])


def test_split_half_ceiling_definitions():
    rng = np.random.default_rng(0)
    unanimous = np.array([[6, 0, 0], [0, 4, 0]])
    assert split_half(unanimous, rng, 5) == {"kl": pytest.approx(
        float(np.mean([kl_divergence([1, 0, 0], [3.5 / 4.5, 0.5 / 4.5, 0.5 / 4.5]),
                       kl_divergence([0, 1, 0], [0.5 / 3.5, 2.5 / 3.5, 0.5 / 3.5])]))),
        "kl_raw": 0.0, "jsd": 0.0}
    split = split_half(np.array([[1, 1, 0, 0]]), rng, 20)  # halves of 1 and 1: disjoint always
    assert split["kl_raw"] == pytest.approx(math.log(1e12)) and split["jsd"] == pytest.approx(
        math.log(2))


@needs_data
def test_source_stats(loaded):
    stats = source_stats(loaded["chaosnli-snli"], "nli", seed=0)
    assert stats["items"] == 1_514 and stats["annotators_histogram"] == {100: 1_514}
    assert stats["entropy"] == pytest.approx(0.80 * math.log(2), abs=0.01)  # SOURCE.md: 0.80 bits
    assert sum(stats["label_totals"].values()) == 151_400
    assert stats["ceiling_items"] == 1_514
    assert 0 < stats["ceiling_jsd"] < stats["ceiling_kl"] < stats["ceiling_kl_raw"]
    assert stats["prior_kl"] <= stats["uniform_kl"] + 1e-12
    assert source_stats(loaded["chaosnli-snli"], "nli", seed=0) == stats
    assert source_stats(loaded["chaosnli-snli"], "nli", seed=1)["ceiling_kl"] != stats["ceiling_kl"]
    few = source_stats(loaded["newsroom-fluency"], "rating")
    assert few["ceiling_items"] == 0 and math.isnan(few["ceiling_kl"])


# --- corrupted raw files ----------------------------------------------------------------------

def _lines(rel: str, n: int) -> list[str]:
    path = ROOT / rel
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [next(fh) for _ in range(n)]


def _write(root: Path, rel: str, text: str | bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    elif path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _edit_line(rel: str, n: int, line: int, edit) -> str:
    rows = _lines(rel, n)
    record = json.loads(rows[line - 1])
    edit(record)
    rows[line - 1] = json.dumps(record) + "\n"
    return "".join(rows)


def _json_doc(rel: str, keep: int, at: str | None, edit, indent=None) -> str:
    doc = json.loads((ROOT / rel).read_text(encoding="utf-8"))
    if at:
        doc[at] = doc[at][:keep]
        edit(doc[at])
    elif isinstance(doc, list):
        doc = doc[:keep]
        edit(doc)
    else:
        doc = dict(list(doc.items())[:keep])
        edit(doc)
    return json.dumps(doc, indent=indent, ensure_ascii=False)


def _set(path: list, value):
    def edit(record):
        target = record
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return edit


def _csv(rel: str, n: int, line: int, column: str, value: str) -> str:
    import csv
    import io
    with open(ROOT / rel, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = [row for _, row in zip(range(n), reader)]
    rows[line - 2][column] = value
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


SNLI_DEV = "snli/snli_1.0_dev.jsonl.gz"
CHAOS = "chaosnli/chaosNLI_snli.jsonl"
MTB = "mt-bench-human/human_judgments.jsonl"
CORRUPT = {  # case -> (source, {file: text builder}, expected message pattern)
    "snli-label": ("snli-dev", {SNLI_DEV: lambda: _edit_line(
        SNLI_DEV, 3, 2, _set(["annotator_labels", 1], "maybe"))},
        r"snli_1\.0_dev\.jsonl\.gz:2: field 'annotator_labels': unknown label 'maybe'"),
    "snli-json": ("snli-dev", {SNLI_DEV: lambda: "".join(_lines(SNLI_DEV, 3))[:-40] + "\n"},
                  r"snli_1\.0_dev\.jsonl\.gz:3: invalid JSON"),
    "snli-gzip": ("snli-dev", {SNLI_DEV: lambda: gzip.compress(
        "".join(_lines(SNLI_DEV, 30)).encode())[:-300]}, r"snli_1\.0_dev\.jsonl\.gz:\d+: corrupt"),
    "chaosnli-counter": ("chaosnli-snli", {CHAOS: lambda: _edit_line(
        CHAOS, 3, 2, _set(["label_counter", "e"], "many"))},
        r"chaosNLI_snli\.jsonl:2: field 'label_counter': expected an integer"),
    "chaosnli-anli": ("chaosnli-anli", {"chaosnli/chaosNLI_alphanli.jsonl": lambda: _edit_line(
        "chaosnli/chaosNLI_alphanli.jsonl", 3, 3, lambda r: r["example"].pop("hyp2"))},
        r"chaosNLI_alphanli\.jsonl:3: field 'example\.hyp2': missing"),
    "summeval": ("summeval-coherence", {"summeval/M8_outputs_annotations.jsonl": lambda: _edit_line(
        "summeval/M8_outputs_annotations.jsonl", 3, 2,
        _set(["expert_annotations", 1, "fluency"], 7))},
        r"M8_outputs_annotations\.jsonl:2: field 'expert_annotations\[1\]\.fluency': value 7"),
    "dialsummeval": ("dialsummeval-coherence", {
        "dialsummeval/human_judgment.jsonl": lambda: _edit_line(
            "dialsummeval/human_judgment.jsonl", 3, 1,
            _set(["annotations", 0, "relevance"], "ok"))},
        r"human_judgment\.jsonl:1: field 'annotations\[0\]\.relevance': expected an integer"),
    "dialsummeval-amt": ("dialsummeval-coherence-pooled", {
        "dialsummeval/human_judgment.jsonl": lambda: "".join(
            _lines("dialsummeval/human_judgment.jsonl", 3)),
        "dialsummeval/amt_raw/Batch_1.csv": lambda: _csv(
            "dialsummeval/amt_raw/Batch_4602982_batch_results.csv", 3, 3, "Answer.Fluency", "9")},
        r"Batch_1\.csv:\d+: field 'Answer\.Fluency': value 9 outside 1\.\.5"),
    "mt-bench": ("mt-bench", {
        MTB: lambda: _edit_line(MTB, 4, 2, _set(["winner"], "model_c")),
        "mt-bench-human/question.jsonl": lambda: "".join(
            _lines("mt-bench-human/question.jsonl", 2)),
        "mt-bench-human/human_judgment_answers.jsonl": lambda: (
            ROOT / "mt-bench-human/human_judgment_answers.jsonl").read_text(encoding="utf-8")},
        r"human_judgments\.jsonl:2: field 'winner': unknown winner 'model_c'"),
    "dices-label": ("dices", {"judgebench-dices/dices_990.json": lambda: _json_doc(
        "judgebench-dices/dices_990.json", 3, "instances",
        _set([1, "annotations", "safety", "individual_human_scores", 0], "Maybe"))},
        r"dices_990\.json:1: field 'instances\[1\]\.annotations\.safety\.individual_human_scores'"
        r": unknown label 'Maybe'"),
    "dices-truncated": ("dices", {"judgebench-dices/dices_990.json": lambda: (
        ROOT / "judgebench-dices/dices_990.json").read_text(encoding="utf-8")[:50_000]},
        r"dices_990\.json:1: invalid JSON"),
    "newsroom": ("newsroom-fluency", {"judgebench-newsroom/newsroom.json": lambda: _json_doc(
        "judgebench-newsroom/newsroom.json", 4, "instances",
        _set([2, "annotations", "Fluency", "individual_human_scores", 1], 9), indent=4)},
        r"newsroom\.json:(\d+): field 'instances\[2\]\.annotations\.Fluency\."
        r"individual_human_scores': value 9 outside 1\.\.5"),
    "fed": ("fed-turn-overall", {"fed-dialog/fed_data.json": lambda: _json_doc(
        "fed-dialog/fed_data.json", 3, None, _set([1, "annotations", "Overall", 2], 9), indent=2)},
        r"fed_data\.json:(\d+): field '\[1\]\.annotations\.Overall': value 9 outside 0\.\.4"),
    "lewidi": ("lewidi-convabuse", {"lewidi2023/ConvAbuse/ConvAbuse_train.json": lambda: _json_doc(
        "lewidi2023/ConvAbuse/ConvAbuse_train.json", 3, None, _set(["2", "annotations"], "1,7,1"),
        indent="\t")}, r"ConvAbuse_train\.json:(\d+): field '2\.annotations': value 7 outside"),
    "lewidi-json": ("lewidi-hs-brexit", {"lewidi2023/HS-Brexit/HS-Brexit_train.json": lambda: (
        ROOT / "lewidi2023/HS-Brexit/HS-Brexit_train.json").read_text(encoding="utf-8")[:3_000]},
        r"HS-Brexit_train\.json:\d+: invalid JSON"),
    "varierr": ("varierr-nli", {"varierr-nli/varierr.json": lambda: _edit_line(
        "varierr-nli/varierr.json", 3, 3, _set(["label_count_round_1", "neutral"], "x"))},
        r"varierr\.json:3: field 'label_count_round_1\.neutral': expected an integer"),
    "politeness": ("politeness-wikipedia", {
        "stanford-politeness/wikipedia.annotated.csv": lambda: _csv(
            "stanford-politeness/wikipedia.annotated.csv", 3, 3, "Score3", "40")},
        r"wikipedia\.annotated\.csv:3: field 'Score3': value 40 outside 1\.\.25"),
    "politeness-short": ("politeness-wikipedia", {
        "stanford-politeness/wikipedia.annotated.csv": lambda: "".join(
            _lines("stanford-politeness/wikipedia.annotated.csv", 2))
        + "Wikipedia,1,Please?,13,9\n"},
        r"wikipedia\.annotated\.csv:3: field 'Score\d': missing"),
    "medical": ("medical-safety", {
        "judgebench-medical-safety/medicheck-crowd.csv": lambda: _csv(
            "judgebench-medical-safety/medicheck-crowd.csv", 3, 2, "query-cws", "['Serious', ")},
        r"medicheck-crowd\.csv:2: field 'query-cws': expected a Python list literal"),
    "medical-label": ("medical-safety", {
        "judgebench-medical-safety/medicheck-crowd.csv": lambda: _csv(
            "judgebench-medical-safety/medicheck-crowd.csv", 3, 3, "query-cws", "['Deadly']")},
        r"medicheck-crowd\.csv:3: field 'query-cws': unknown label 'Deadly'"),
}


@needs_data
@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_corrupted_raw_file_names_file_line_field(tmp_path, case):
    name, files, pattern = CORRUPT[case]
    for rel, build in files.items():
        _write(tmp_path, rel, build())
    with pytest.raises(DataError) as caught:
        load_source(name, root=tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(str(tmp_path)), message
    match = re.search(pattern, message)
    assert match, message
    if match.groups():  # records inside a pretty-printed document: the record's own line
        assert int(match.group(1)) > 2


@needs_data
def test_uncorrupted_copies_load(tmp_path):
    _write(tmp_path, CHAOS, "".join(_lines(CHAOS, 5)))
    assert [i["id"] for i in load_source("chaosnli-snli", root=tmp_path)] == [
        json.loads(line)["uid"] for line in _lines(CHAOS, 5)]
    with pytest.raises(DataError, match="file not found"):
        load_source("dices", root=tmp_path)


def test_data_root_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("DISTJUDGE_DATA", str(tmp_path))
    assert data_root() == tmp_path and data_root("elsewhere") == Path("elsewhere")
    monkeypatch.delenv("DISTJUDGE_DATA")
    monkeypatch.chdir(tmp_path)  # no ../shared/datasets here: the repository-relative default
    expected = (Path(__file__).resolve().parents[1] / "../shared/datasets").resolve()
    assert data_root() in (expected, tmp_path / "../shared/datasets")


# --- CLI ------------------------------------------------------------------------------------

def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="distjudge")
    add_data_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", *argv])
    return args.func(args)


@needs_data
def test_cli_convert_split_subsample_stats(tmp_path, capsys, loaded):
    out = tmp_path / "mt.jsonl"
    assert _run(["convert", "mt-bench", "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 910
    assert _run(["split", str(out), "--test", "0.2", "--seed", "0",
                 "--output-dir", str(tmp_path / "parts")]) == 0
    train = [json.loads(x) for x in (tmp_path / "parts/mt.train.jsonl").read_text().splitlines()]
    test = [json.loads(x) for x in (tmp_path / "parts/mt.test.jsonl").read_text().splitlines()]
    assert len(train) + len(test) == 910
    assert not {r["group"] for r in train} & {r["group"] for r in test}
    assert _run(["subsample", str(out), "--k", "1", "--seed", "0",
                 "--output", str(tmp_path / "k1.jsonl")]) == 0
    k1 = [json.loads(x) for x in (tmp_path / "k1.jsonl").read_text().splitlines()]
    assert all(sum(r["label_counts"].values()) == 1 for r in k1)
    chaos_out = tmp_path / "snli-train.jsonl"
    assert _run(["convert", "snli-dev", "--output", str(chaos_out), "--exclude",
                 "chaosnli-snli"]) == 0
    assert len(chaos_out.read_text().splitlines()) == 10_000 - 1_514
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]  # atomic writes
    capsys.readouterr()
    assert _run(["stats", "chaosnli-snli", "--seed", "0"]) == 0
    printed = capsys.readouterr().out
    assert "chaosnli-snli" in printed and "ceil KL" in printed and "100: 1,514" in printed
    assert _run(["list"]) == 0
    listed = capsys.readouterr().out
    assert "CC BY-NC 4.0" in listed and re.search(r"dices\s+safety\s+990", listed)


def test_cli_rejects_bad_files(tmp_path):
    bad = _write(tmp_path, "items.jsonl", '{"id": "a", "label_counts": {"x": 1}}\n{"id": \n')
    with pytest.raises(DataError, match=r"items\.jsonl:2: invalid JSON"):
        _run(["split", str(bad)])
    neg = _write(tmp_path, "neg.jsonl", '{"id": "a", "label_counts": {"x": -2}}\n')
    with pytest.raises(DataError, match=r"neg\.jsonl:1: field 'label_counts'"):
        _run(["subsample", str(neg), "--k", "1", "--output", str(tmp_path / "o.jsonl")])
    assert not (tmp_path / "o.jsonl").exists()
    plain = _write(tmp_path, "plain.jsonl", "".join(
        json.dumps({"text": str(i), "annotations": ["x", "y", "x"]}) + "\n" for i in range(50)))
    assert _run(["split", str(plain), "--test", "0.5"]) == 0
    parts = [json.loads(x) for part in ("train", "test")
             for x in (tmp_path / f"plain.{part}.jsonl").read_text().splitlines()]
    assert sorted(p["text"] for p in parts) == sorted(str(i) for i in range(50))
    assert all(set(p) == {"text", "annotations"} for p in parts)  # records written unchanged
