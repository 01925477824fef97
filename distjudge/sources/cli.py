"""``distjudge data {list,stats,convert,split,subsample}``: named datasets from the command line.

``add_data_parser(subparsers)`` registers the ``data`` command; each subcommand's handler is
``args.func(args) -> int``. Bad input raises :class:`distjudge.data.DataError` (the main CLI
prints it as one line and exits 2). Every output file is written atomically.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from distjudge.data import DataError, iter_records
from distjudge.io import atomic_write_text, jsonl_text
from distjudge.sources import (
    data_root,
    format_table,
    get_source,
    list_sources,
    load_source,
    source_stats,
    split_items,
    subsample_annotations,
)
from distjudge.sources.splits import item_counts, split_key


def _names(names: list[str]) -> list[str]:
    if "all" in names:
        return [source.name for source in list_sources()]
    for name in names:
        get_source(name)  # unknown names fail before any work
    return names


def cmd_list(args) -> int:
    rows = [["source", "task", "items", "ann/item", "license"]]
    missing = []
    for source in list_sources():
        try:
            items = source.load(args.root)
        except DataError as err:
            missing.append(str(err))
            rows.append([source.name, source.task, "missing", "-", source.license])
            continue
        totals = [sum(item["label_counts"].values()) for item in items]
        spread = f"{min(totals)}-{max(totals)}" if min(totals) != max(totals) else str(totals[0])
        rows.append([source.name, source.task, f"{len(items):,}",
                     f"{sum(totals) / len(totals):.1f} [{spread}]", source.license])
        if args.verbose:
            rows.append(["", "", "", "", source.description])
    widths = [max(len(row[i]) for row in rows if not (args.verbose and row[0] == ""))
              for i in range(4)]
    for row in rows:
        if row[0] == "":
            print(f"    {row[4]}")
            continue
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1]), row[2].rjust(widths[2]),
                 row[3].rjust(widths[3]), row[4]]
        print("  ".join(cells))
    if missing:
        print(f"\n{len(missing)} source(s) unreadable under {data_root(args.root)}; first: "
              f"{missing[0]}", file=sys.stderr)
    return 0


def cmd_stats(args) -> int:
    rows = []
    for name in _names(args.names):
        source = get_source(name)
        stats = source_stats(load_source(name, args.root), source.task, seed=args.seed,
                             repeats=args.repeats)
        rows.append({"name": name, "task": source.task, **stats})
    print(format_table(rows))
    if len(rows) == 1:
        stats = rows[0]
        hist = ", ".join(f"{n}: {c:,}" for n, c in stats["annotators_histogram"].items())
        print(f"\nannotators per item (n: items): {hist}")
        print("label totals: " + ", ".join(f"{k} {v:,}" for k, v in stats["label_totals"].items()))
        print("label prior:  " + ", ".join(f"{k} {v:.3f}" for k, v in stats["prior"].items()))
    print("\nnats; H = mean label entropy; ceil = human split-half ceiling over items with >= 4 "
          "annotations (KL with the predicting half add-1/2 smoothed, raw KL with q floored at "
          f"1e-12, JSD), seed {args.seed}; unif/prior KL = KL(p || uniform / mean distribution)")
    return 0


def cmd_convert(args) -> int:
    items = load_source(args.name, args.root, exclude=args.exclude or ())
    atomic_write_text(args.output, jsonl_text(items))
    dropped = f" ({', '.join(args.exclude)} ids excluded)" if args.exclude else ""
    print(f"{len(items):,} items of {args.name} (task {get_source(args.name).task}) written to "
          f"{args.output}{dropped}")
    return 0


def _read(path: str) -> list[tuple[str, dict]]:
    records = [(f"{path}:{line}", record) for line, record in iter_records(path)]
    if not records:
        raise DataError(f"{path}: no items")
    return records


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".jsonl", ".ndjson", ".json", ".csv", ".parquet", ".pq"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def cmd_split(args) -> int:
    if not 0 <= args.test <= 1:
        raise DataError(f"--test must be within [0, 1], got {args.test}")
    records = _read(args.file)
    # Split on stand-ins so that records without an id (keyed by row) are written unchanged.
    keys = [{"id": record.get("id", where), "group": record.get("group"), "index": i}
            for i, (where, record) in enumerate(records)]
    train, test = split_items(keys, test=args.test, seed=args.seed)
    path = Path(args.file)
    folder = Path(args.output_dir) if args.output_dir else path.parent
    outputs = {}
    for part, rows in (("train", train), ("test", test)):
        outputs[part] = folder / f"{_stem(path)}.{part}.jsonl"
        atomic_write_text(outputs[part], jsonl_text(records[key["index"]][1] for key in rows))
    groups = len({split_key(key) for key in keys})
    print(f"{len(records):,} items in {groups:,} groups -> train {len(train):,} "
          f"({outputs['train']}), test {len(test):,} ({outputs['test']}); seed {args.seed}")
    return 0


def cmd_subsample(args) -> int:
    if args.k < 1:
        raise DataError(f"--k must be at least 1, got {args.k}")
    records = []
    for where, record in _read(args.file):
        item_counts(record, where)  # every record checked before anything is written
        records.append(record)  # records without an id are drawn by their position
    out = subsample_annotations(records, args.k, seed=args.seed)
    atomic_write_text(args.output, jsonl_text(out))
    print(f"{len(out):,} items with at most {args.k} annotations each written to {args.output}")
    return 0


def add_data_parser(subparsers) -> None:
    """Register ``data`` and its subcommands on an argparse subparsers object."""
    data = subparsers.add_parser(
        "data", help="named multi-annotator datasets: list, stats, convert, split, subsample",
        description="Named multi-annotator datasets (raw files under --root, $DISTJUDGE_DATA or "
                    "../shared/datasets) in the common item format.")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")

    def root_option(p):
        p.add_argument("--root", default=None, help="datasets folder (default: $DISTJUDGE_DATA, "
                       "else ../shared/datasets)")

    p = sub.add_parser("list", help="sources with task, items, annotators/item, license")
    root_option(p)
    p.add_argument("-v", "--verbose", action="store_true", help="also print each description")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("stats", help="counts, entropy, human ceiling and baselines of sources")
    p.add_argument("names", nargs="+", metavar="NAME", help="source names, or 'all'")
    p.add_argument("--seed", type=int, default=0, help="seed of the split-half ceiling")
    p.add_argument("--repeats", type=int, default=10, help="random halvings per item")
    root_option(p)
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("convert", help="write a source as JSONL items")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--output", required=True, help="output .jsonl")
    p.add_argument("--exclude", nargs="+", metavar="SOURCE", default=None,
                   help="drop items whose id occurs in these sources (e.g. chaosnli-snli)")
    root_option(p)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("split", help="deterministic group-aware train/test split of a file")
    p.add_argument("file", metavar="FILE", help="items (.jsonl, .csv or .parquet)")
    p.add_argument("--test", type=float, default=0.2, help="test share (default 0.2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", default=None, help="default: the input's folder")
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("subsample", help="keep k annotations per item (seeded)")
    p.add_argument("file", metavar="FILE", help="items (.jsonl, .csv or .parquet)")
    p.add_argument("--k", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", required=True)
    p.set_defaults(func=cmd_subsample)


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point: ``python -m distjudge.sources.cli list``."""
    parser = argparse.ArgumentParser(prog="distjudge")
    add_data_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["data", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except DataError as err:
        print(f"distjudge: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
