"""Items in: JSONL, CSV or Parquet, streamed row by row and validated against a task.

An item is a mapping with an ``id`` (optional: the row number is used), the task's fields, and
human labels as either ``annotations`` (a list of labels, one per annotator) or ``label_counts``
(label -> count). In CSV cells both are JSON. Labels may be given by name, by a verbalizer (any
case) or, for ordinal tasks, by value. Every problem is a :class:`DataError` whose message names
the file, the line (or row) and the field.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from distjudge.task import Task

LABEL_KEYS = ("annotations", "label_counts")


class DataError(ValueError):
    """Bad input: the message is one line naming file, line and field."""


def input_format(path: Path) -> str:
    suffixes = "".join(path.suffixes[-2:]).lower()
    for fmt, endings in {"jsonl": (".jsonl", ".json", ".ndjson"), "csv": (".csv",),
                         "parquet": (".parquet", ".pq")}.items():
        if any(suffixes.endswith(end) for end in endings):
            return fmt
    raise DataError(f"{path}: unknown input format (use .jsonl, .csv or .parquet)")


def iter_records(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line, record)`` from a JSONL, CSV or Parquet file, one at a time."""
    path = Path(path)
    fmt = input_format(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        if fmt == "jsonl":
            yield from _iter_jsonl(path)
        elif fmt == "csv":
            yield from _iter_csv(path)
        else:
            yield from _iter_parquet(path)
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason})") from err
    except OSError as err:
        raise DataError(f"{path}: unreadable: {err}") from err


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{line_no}: invalid JSON ({err.msg})") from err
            if not isinstance(record, dict):
                raise DataError(f"{path}:{line_no}: expected a JSON object per line")
            yield line_no, record


def _iter_csv(path: Path) -> Iterator[tuple[int, dict]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:  # -sig: spreadsheets write a BOM
        reader = csv.DictReader(fh)
        for row in reader:
            line_no = reader.line_num
            record = {k: v for k, v in row.items() if k is not None and v != ""}
            for key in LABEL_KEYS:
                if key in record:
                    try:
                        record[key] = json.loads(record[key])
                    except json.JSONDecodeError as err:
                        raise DataError(
                            f"{path}:{line_no}: field '{key}': CSV cell must hold JSON ({err.msg})"
                        ) from err
            yield line_no, record


def _iter_parquet(path: Path) -> Iterator[tuple[int, dict]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: unreadable Parquet file: {err}") from err
    row_no = 0
    for batch in parquet.iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            row_no += 1
            counts = record.get("label_counts")
            if isinstance(counts, list):  # a Parquet map arrives as (key, value) pairs
                counts = dict(counts)
            if isinstance(counts, dict):  # a struct column has every label, null where absent
                record["label_counts"] = {k: v for k, v in counts.items() if v is not None}
            yield row_no, {k: v for k, v in record.items() if v is not None}


def label_lookup(task: Task) -> dict[str, int]:
    lookup: dict[str, int] = {}
    for i, label in enumerate(task.labels):
        for word in label.words():
            lookup.setdefault(word.strip().lower(), i)
    for i, label in enumerate(task.labels):
        lookup[label.name] = i
    return lookup


def label_index(value, task: Task, lookup: dict[str, int]) -> int | None:
    """Index of a label given by name, verbalizer or (ordinal tasks) numeric value."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)) and task.ordinal:
        for i, v in enumerate(task.values or []):
            if math.isclose(float(value), v):
                return i
        return None
    if isinstance(value, (int, float)):
        value = str(value)
    if not isinstance(value, str):
        return None
    if value in lookup:
        return lookup[value]
    return lookup.get(value.strip().lower())


def _as_count(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def parse_counts(record: dict, task: Task, where: str, lookup: dict[str, int]) -> np.ndarray:
    """Human label counts of one record as an integer vector in the task's label order."""
    counts = np.zeros(len(task.labels), dtype=np.int64)
    if "label_counts" in record:
        raw = record["label_counts"]
        if not isinstance(raw, dict):
            raise DataError(f"{where}: field 'label_counts': expected a mapping label -> count")
        for key, value in raw.items():
            i = label_index(key, task, lookup)
            if i is None:
                raise DataError(
                    f"{where}: field 'label_counts': unknown label {key!r} "
                    f"(labels: {', '.join(task.label_names)})"
                )
            count = _as_count(value)
            if count is None or count < 0:
                raise DataError(
                    f"{where}: field 'label_counts': count for {key!r} must be a non-negative "
                    f"integer, got {value!r}"
                )
            counts[i] += count
        field_name = "label_counts"
    else:
        raw = record["annotations"]
        if not isinstance(raw, list):
            raise DataError(f"{where}: field 'annotations': expected a list of labels")
        for value in raw:
            i = label_index(value, task, lookup)
            if i is None:
                raise DataError(
                    f"{where}: field 'annotations': unknown label {value!r} "
                    f"(labels: {', '.join(task.label_names)})"
                )
            counts[i] += 1
        field_name = "annotations"
    if counts.sum() == 0:
        raise DataError(f"{where}: field '{field_name}': no annotations")
    return counts


def validate_record(
    record: dict, task: Task, where: str, require_labels: bool, lookup: dict[str, int] | None = None
) -> dict:
    """Check one record against ``task``; return it with ``counts`` (or None) added."""
    for name in task.fields:
        if name not in record:
            raise DataError(f"{where}: field '{name}': missing (task {task.name!r} needs it)")
        value = record[name]
        if not isinstance(value, str):
            raise DataError(f"{where}: field '{name}': expected text, got {type(value).__name__}")
        if not value.strip():
            raise DataError(f"{where}: field '{name}': empty text")
    for name in task.optional_fields:
        if name in record and not isinstance(record[name], str):
            raise DataError(f"{where}: field '{name}': expected text")
    if "annotations" in record and "label_counts" in record:
        raise DataError(f"{where}: field 'annotations': give annotations or label_counts, not both")
    has_labels = any(key in record for key in LABEL_KEYS)
    if require_labels and not has_labels:
        raise DataError(f"{where}: field 'annotations': missing (or give 'label_counts')")
    counts = parse_counts(record, task, where, lookup or label_lookup(task)) if has_labels else None
    return {**record, "counts": counts}


def read_items(
    path: str | Path, task: Task, require_labels: bool = False, check_ids: bool = True
) -> Iterator[dict]:
    """Stream validated items; each gets ``id`` (row number when absent) and ``counts``.

    ``check_ids`` refuses a repeated id, which means holding every id seen; a pass over a file
    that :func:`check_file` has already checked skips it, so its memory does not grow with the file.
    """
    lookup = label_lookup(task)
    seen: set[str] = set()
    for line_no, record in iter_records(path):
        where = f"{path}:{line_no}"
        item = validate_record(record, task, where, require_labels, lookup)
        item_id = str(item.get("id", f"row-{line_no}"))
        if check_ids:
            if item_id in seen:
                raise DataError(f"{where}: field 'id': duplicate id {item_id!r}")
            seen.add(item_id)
        item["id"] = item_id
        yield item


def check_file(path: str | Path, task: Task, require_labels: bool = False) -> int:
    """Validate a whole file before any output is written; return its number of items."""
    n = 0
    for _ in read_items(path, task, require_labels):
        n += 1
    if n == 0:
        raise DataError(f"{path}: no items")
    return n


def load_items(path: str | Path, task: Task, require_labels: bool = False) -> list[dict]:
    """All items of a (small) file in memory."""
    return list(read_items(path, task, require_labels))


def count_distributions(items: list[dict], labels: list[str]) -> np.ndarray:
    """Human label distributions of items in the common format (``label_counts`` by name)."""
    counts = np.array([[item["label_counts"].get(name, 0) for name in labels] for item in items],
                      dtype=np.float64)
    return counts / counts.sum(axis=1, keepdims=True)


def distributions(items: list[dict]) -> np.ndarray:
    """Human label distributions p (rows sum to 1) of items with counts."""
    counts = np.stack([np.asarray(item["counts"], dtype=np.float64) for item in items])
    return counts / counts.sum(axis=1, keepdims=True)
