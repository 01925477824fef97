"""Raw-file readers shared by the converters; every problem is a one-line DataError.

Locations read ``file:line: field 'name': problem`` (``file:line: invalid JSON (...)`` when the
text does not parse). Records inside one JSON document (DICES, Newsroom, FED, LeWiDi) are located
by the line where the record starts, and the field is given as a path from the top of the
document (``instances[12].instance.response``), which pins it even in a one-line file.
"""

from __future__ import annotations

import csv
import functools
import gzip
import hashlib
import json
import re
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NoReturn

from distjudge.data import DataError

_WS = re.compile(r"\s*")
_DECODER = json.JSONDecoder()


def need_file(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: file not found (point --root or DISTJUDGE_DATA at the datasets)")
    return path


def file_cache(fn):
    """Cache ``fn(path, *args)`` per file version (path, mtime, size): sources share raw files."""
    cache: dict = {}

    @functools.wraps(fn)
    def wrapper(path: Path, *args):
        stat = need_file(path).stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, args)
        if key not in cache:
            cache[key] = fn(path, *args)
        return cache[key]

    return wrapper


def text_key(prefix: str, text: str) -> str:
    """A short stable key for a source text (used as the ``group`` of items that share it)."""
    norm = " ".join(text.split()).lower()
    return f"{prefix}:{hashlib.sha1(norm.encode('utf-8')).hexdigest()[:16]}"


class Row:
    """One raw record with its location, and typed accessors that fail with file:line:field."""

    __slots__ = ("data", "path", "line", "prefix")

    def __init__(self, data, path: Path, line: int, prefix: str = ""):
        self.path, self.line, self.prefix = path, line, prefix
        if not isinstance(data, dict):
            where = prefix.rstrip(".") or "record"
            raise DataError(f"{path}:{line}: field '{where}': expected an object")
        self.data = data

    def fail(self, key: str, problem: str) -> NoReturn:
        raise DataError(f"{self.path}:{self.line}: field '{self.prefix}{key}': {problem}")

    def get(self, key: str, kinds: type | tuple[type, ...] = object, optional: bool = False):
        if key not in self.data or self.data[key] is None:
            if optional:
                return None
            self.fail(key, "missing")
        value = self.data[key]
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        if not isinstance(value, kinds) or (
            isinstance(value, bool) and bool not in kinds and object not in kinds
        ):  # JSON true/false is not a number
            names = "/".join(k.__name__ for k in kinds)
            self.fail(key, f"expected {names}, got {type(value).__name__}")
        return value

    def text(self, key: str, allow_empty: bool = False) -> str:
        value = self.get(key, str)
        if not allow_empty and not value.strip():
            self.fail(key, "empty text")
        return value

    def obj(self, key: str) -> Row:
        return Row(self.get(key, dict), self.path, self.line, f"{self.prefix}{key}.")

    def integer(self, key: str, low: int | None = None, high: int | None = None) -> int:
        return as_int(self.data.get(key), self, key, low, high)


def as_int(value, row: Row, key: str, low: int | None = None, high: int | None = None) -> int:
    """An integer (or an integral float / digit string) within [low, high], else a field error."""
    out = None
    if isinstance(value, int) and not isinstance(value, bool):
        out = value
    elif isinstance(value, float) and value.is_integer():
        out = int(value)
    elif isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        out = int(value)
    if out is None:
        row.fail(key, f"expected an integer, got {value!r}")
    if (low is not None and out < low) or (high is not None and out > high):
        row.fail(key, f"value {out} outside {low}..{high}")
    return out


def count_labels(values: Iterable, mapping: dict, row: Row, key: str, labels: list[str]) -> dict:
    """Label counts (every task label, in task order) of raw annotator labels via ``mapping``."""
    counts = dict.fromkeys(labels, 0)
    for value in values:
        try:
            name = mapping[value]
        except (KeyError, TypeError):
            expected = ", ".join(map(str, mapping))
            row.fail(key, f"unknown label {value!r} (expected one of {expected})")
        counts[name] += 1
    if not sum(counts.values()):
        row.fail(key, "no annotations")
    return counts


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """``(line, record)`` of a JSON Lines file (``.gz`` allowed); blank lines are skipped."""
    need_file(path)
    opener = gzip.open if path.suffix == ".gz" else open
    line_no = 0
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for line_no, line in enumerate(fh, start=1):  # noqa: B007 - used after the loop
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(
                        f"{path}:{line_no}: invalid JSON ({err.msg} column {err.colno})"
                    ) from err
                if not isinstance(record, dict):
                    raise DataError(f"{path}:{line_no}: expected a JSON object per line")
                yield line_no, record
    except UnicodeDecodeError as err:
        raise DataError(f"{path}:{line_no + 1}: not UTF-8 text ({err.reason})") from err
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DataError(f"{path}:{line_no + 1}: corrupt or truncated gzip data ({err})") from err


def read_csv(path: Path, required: Iterable[str] = ()) -> Iterator[tuple[int, dict]]:
    """``(line, row)`` of a CSV file with a header; ``line`` is where the row ends."""
    need_file(path)
    required = list(required)
    line_no = 0
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            for name in required:
                if name not in header:
                    raise DataError(f"{path}:1: field '{name}': missing column")
            for row in reader:
                line_no = reader.line_num
                if None in row:
                    raise DataError(f"{path}:{line_no}: more cells than header columns")
                for name in required:
                    if row.get(name) is None:
                        raise DataError(f"{path}:{line_no}: field '{name}': missing (short row)")
                yield line_no, row
    except csv.Error as err:
        raise DataError(f"{path}:{line_no + 1}: unparseable CSV ({err})") from err
    except UnicodeDecodeError as err:
        raise DataError(f"{path}:{line_no + 1}: not UTF-8 text ({err.reason})") from err


def _load_text(path: Path) -> str:
    need_file(path)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason})") from err


def _skip(text: str, pos: int) -> int:
    return _WS.match(text, pos).end()


def _decode(text: str, pos: int, path: Path):
    try:
        return _DECODER.raw_decode(text, pos)
    except json.JSONDecodeError as err:
        where = f"{path}:{err.lineno}"
        raise DataError(f"{where}: invalid JSON ({err.msg} column {err.colno})") from err


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _bad(text: str, pos: int, path: Path, expected: str) -> NoReturn:
    found = repr(text[pos]) if pos < len(text) else "end of file"
    raise DataError(f"{path}:{_line(text, pos)}: invalid JSON (expected {expected}, found {found})")


def _members(text: str, pos: int, path: Path) -> tuple[list, int]:
    """``[(key, start, value)]`` of the object/array at ``pos``, and the position after it."""
    opener = text[pos] if pos < len(text) else ""
    if not opener or opener not in "{[":
        _bad(text, pos, path, "an object or array")
    closer = "}" if opener == "{" else "]"
    members: list = []
    pos = _skip(text, pos + 1)
    if text.startswith(closer, pos):
        return members, pos + 1
    while True:
        key = len(members)
        if opener == "{":
            key, pos = _read_key(text, pos, path)
        start = pos
        value, pos = _decode(text, pos, path)
        members.append((key, start, value))
        pos = _skip(text, pos)
        if text.startswith(",", pos):
            pos = _skip(text, pos + 1)
        elif text.startswith(closer, pos):
            return members, pos + 1
        else:
            _bad(text, pos, path, f"',' or '{closer}'")


def _read_key(text: str, pos: int, path: Path) -> tuple[str, int]:
    """An object key at ``pos`` and the start of its value."""
    if not text.startswith('"', pos):
        _bad(text, pos, path, "a key")
    key, pos = _decode(text, pos, path)
    pos = _skip(text, pos)
    if not text.startswith(":", pos):
        _bad(text, pos, path, "':'")
    return key, _skip(text, pos + 1)


def _find(text: str, pos: int, key: str, path: Path) -> int:
    """Start of the value of ``key`` in the object at ``pos`` (values before it are skipped)."""
    if not text.startswith("{", pos):
        _bad(text, pos, path, "an object")
    pos = _skip(text, pos + 1)
    while not text.startswith("}", pos):
        name, pos = _read_key(text, pos, path)
        if name == key:
            return pos
        _, pos = _decode(text, pos, path)
        pos = _skip(text, pos)
        if text.startswith(",", pos):
            pos = _skip(text, pos + 1)
        elif not text.startswith("}", pos):
            _bad(text, pos, path, "',' or '}'")
    raise DataError(f"{path}:{_line(text, pos)}: field '{key}': missing")


def read_json_members(path: Path, at: tuple[str, ...] = ()) -> Iterator[tuple[Row, str]]:
    """``(row, key)`` per member of the container at key path ``at`` of a JSON document.

    ``row`` carries the member's starting line and a field prefix such as ``instances[12].``.
    """
    text = _load_text(path)
    pos = _skip(text, 0)
    for key in at:
        pos = _find(text, pos, key, path)
    prefix = ".".join(at)
    members, end = _members(text, pos, path)
    end = _skip(text, end)
    if not at and end < len(text):  # the whole document is this container: nothing may follow
        _bad(text, end, path, "end of file")
    line, last = 1, 0
    for key, start, value in members:
        line, last = line + text.count("\n", last, start), start
        label = f"{prefix}[{key}]" if isinstance(key, int) else f"{prefix}.{key}" if prefix else key
        yield Row(value, path, line, f"{label}."), str(key)
