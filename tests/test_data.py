"""Items in: JSONL, CSV and Parquet readers, label parsing, validation (library level).

Every bad input through the CLI is in test_cli.py; here the readers and label parsing.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from distjudge.data import DataError, check_file, distributions, load_items, read_items
from distjudge.task import load_task

NLI = load_task("nli")


def _counts(items):
    return [list(item["counts"]) for item in items]


def test_annotations_and_label_counts_give_the_same_counts(tmp_path, chaosnli, files):
    with_annotations = chaosnli(12, labels="annotations")
    with_counts = chaosnli(12, labels="label_counts")
    a = load_items(files.jsonl(tmp_path / "a.jsonl", with_annotations), NLI, require_labels=True)
    c = load_items(files.jsonl(tmp_path / "c.jsonl", with_counts), NLI, require_labels=True)
    assert _counts(a) == _counts(c)
    for item, raw in zip(c, with_counts):
        expected = [raw["label_counts"].get(name, 0) for name in NLI.label_names]
        assert list(item["counts"]) == expected
        assert item["counts"].sum() == 100  # ChaosNLI: 100 annotators per item
    p = distributions(a)
    assert p.shape == (12, 3) and np.allclose(p.sum(axis=1), 1)


def test_labels_by_verbalizer_any_case_and_ordinal_value(tmp_path, files):
    rows = [
        {"id": "v", "premise": "p", "hypothesis": "h",
         "annotations": ["Entails", "CONTRADICT", " neutral ", "entailment"]},
        {"id": "w", "premise": "p", "hypothesis": "h",
         "label_counts": {"entails": 1, "entailment": 1, "Contradiction": 1, "neutral": 1}},
    ]
    items = load_items(files.jsonl(tmp_path / "v.jsonl", rows), NLI)
    assert _counts(items) == [[2, 1, 1], [2, 1, 1]]
    rating = load_task("rating")
    rows = [{"text": "t", "criterion": "c", "annotations": [1, 2.0, "3", "5", 5]},
            {"text": "t", "criterion": "c", "label_counts": {"1": 1, "2": 1, "3": 1, "5": 2}}]
    items = load_items(files.jsonl(tmp_path / "r.jsonl", rows), rating)
    assert _counts(items) == [[1, 1, 1, 0, 2]] * 2


def test_three_formats_read_the_same_items(tmp_path, chaosnli, files):
    rows = chaosnli(5, labels="annotations")
    rows[1] = {**rows[1], "annotations": None, "label_counts": {"neutral": 2, "entailment": 1}}
    del rows[1]["annotations"]
    paths = [files.jsonl(tmp_path / "x.jsonl", rows), files.csv(tmp_path / "x.csv", rows)]
    # Parquet: one column per key; label_counts must be a map, annotations a list
    import pyarrow as pa

    schema = pa.schema([("id", pa.string()), ("premise", pa.string()),
                        ("hypothesis", pa.string()), ("annotations", pa.list_(pa.string())),
                        ("label_counts", pa.map_(pa.string(), pa.int64()))])
    paths.append(files.parquet(tmp_path / "x.parquet", rows, schema=schema))
    loaded = [load_items(path, NLI, require_labels=True) for path in paths]
    for other in loaded[1:]:
        assert [i["id"] for i in other] == [i["id"] for i in loaded[0]]
        assert [(i["premise"], i["hypothesis"]) for i in other] == [
            (i["premise"], i["hypothesis"]) for i in loaded[0]]
        assert _counts(other) == _counts(loaded[0])
    assert _counts(loaded[0])[1] == [1, 2, 0]


def test_parquet_label_counts_written_as_a_struct(tmp_path, files):
    """pyarrow/pandas write dicts as a struct: a label absent from a row reads back as null,
    which means zero annotations for it, not a bad count."""
    rows = [{"id": "a", "premise": "p", "hypothesis": "h",
             "label_counts": {"entailment": 3, "neutral": 1}},
            {"id": "b", "premise": "p", "hypothesis": "h", "label_counts": {"contradiction": 2}}]
    items = load_items(files.parquet(tmp_path / "s.parquet", rows), NLI, require_labels=True)
    assert _counts(items) == [[3, 1, 0], [0, 0, 2]]


def test_csv_line_numbers_are_physical_lines(tmp_path, files):
    rows = [
        {"id": "a", "premise": "first line\nsecond line", "hypothesis": "h",
         "annotations": ["neutral"]},
        {"id": "b", "premise": "p", "hypothesis": "h", "annotations": ["nope"]},
    ]
    path = files.csv(tmp_path / "multi.csv", rows)
    # header = line 1, row a = lines 2-3 (quoted newline), row b = line 4
    with pytest.raises(DataError, match=r"multi\.csv:4: field 'annotations'"):
        check_file(path, NLI)


def test_csv_with_a_utf8_bom_header(tmp_path, files):
    """Spreadsheet programs write CSV with a byte-order mark; the first column must still count."""
    rows = [{"premise": "p", "hypothesis": "h", "annotations": ["neutral"]}]
    path = files.csv(tmp_path / "bom.csv", rows)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    items = load_items(path, NLI)
    assert items[0]["premise"] == "p" and _counts(items) == [[0, 1, 0]]


def test_jsonl_line_numbers_count_blank_lines(tmp_path):
    path = tmp_path / "blank.jsonl"
    good = {"premise": "p", "hypothesis": "h"}
    path.write_text(json.dumps(good) + "\n\n" + json.dumps({"premise": "p"}) + "\n")
    with pytest.raises(DataError, match=r"blank\.jsonl:3: field 'hypothesis': missing"):
        check_file(path, NLI)


def test_ids_default_to_row_numbers_and_labels_are_optional_for_judging(tmp_path, files):
    rows = [{"premise": "p1", "hypothesis": "h1"}, {"premise": "p2", "hypothesis": "h2"}]
    items = load_items(files.jsonl(tmp_path / "n.jsonl", rows), NLI)
    assert [i["id"] for i in items] == ["row-1", "row-2"]
    assert all(i["counts"] is None for i in items)
    with pytest.raises(DataError, match="field 'annotations': missing"):
        check_file(tmp_path / "n.jsonl", NLI, require_labels=True)


def test_read_items_streams(tmp_path):
    """Validation is lazy: the first items come out before a bad row far below is reached."""
    path = tmp_path / "stream.jsonl"
    good = json.dumps({"premise": "p", "hypothesis": "h"})
    path.write_text("\n".join([good] * 3 + ["{broken"]) + "\n")
    stream = read_items(path, NLI)
    assert [next(stream)["id"] for _ in range(3)] == ["row-1", "row-2", "row-3"]
    with pytest.raises(DataError, match=r"stream\.jsonl:4: invalid JSON"):
        next(stream)


def test_both_annotations_and_label_counts_is_refused(tmp_path, files):
    rows = [{"premise": "p", "hypothesis": "h", "annotations": ["neutral"],
             "label_counts": {"neutral": 1}}]
    with pytest.raises(DataError, match=r":1: field 'annotations'"):
        check_file(files.jsonl(tmp_path / "both.jsonl", rows), NLI)


def test_empty_file_has_no_items(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(DataError, match="no items"):
        check_file(path, NLI)


def test_a_checked_file_is_read_again_without_holding_its_ids(tmp_path, files):
    rows = [{"id": "a", "premise": "p", "hypothesis": "h"},
            {"id": "a", "premise": "q", "hypothesis": "h"}]
    path = files.jsonl(tmp_path / "dup.jsonl", rows)
    with pytest.raises(DataError, match=r"dup\.jsonl:2: field 'id': duplicate id 'a'"):
        check_file(path, NLI)
    # the judging pass after check_file keeps no set of ids, so its memory stays flat
    assert [item["premise"] for item in read_items(path, NLI, check_ids=False)] == ["p", "q"]
