"""The kernel-cache cap against memory: `distjudge judge` on the same SNLI items under each cap.

oneDNN and PyTorch's ideep layer keep a compiled kernel per matmul shape (bf16 on CPU); distjudge
caps both caches on import (``distjudge.KERNEL_CACHE_CAPACITY``). This runs the judge as a
subprocess per (dtype, cap), measured chunk by chunk as in perf.py's scale section, and prints
each chunk's own peak and the RSS between chunks. Run it alone (~15 min for the default below):

    python benchmarks/kernel_cache.py --items 2560 --runs float32:128,bfloat16:16,bfloat16:128

Writes benchmarks/results/kernel_cache.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from distjudge.io import atomic_write_json, atomic_write_text, jsonl_text
from distjudge.sources import load_source

sys.path.insert(0, str(Path(__file__).parent))
from perf import host, judge_subprocess  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2560, help="SNLI items (256 per chunk).")
    parser.add_argument("--runs", default="float32:128,bfloat16:16,bfloat16:128",
                        help="dtype:cap pairs, comma-separated.")
    parser.add_argument("--output", default="benchmarks/results/kernel_cache.json")
    args = parser.parse_args(argv)
    items = load_source("snli")[:args.items]
    rows = []
    with tempfile.TemporaryDirectory() as work:
        source = Path(work) / "items.jsonl"
        atomic_write_text(source, jsonl_text(items))
        for run in args.runs.split(","):
            dtype, cap = run.split(":")
            os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = os.environ["LRU_CACHE_CAPACITY"] = cap
            output = Path(work) / f"judged-{dtype}-{cap}.jsonl"
            measured = judge_subprocess(source, output, None, dtype)
            output.unlink()
            row = {"dtype": dtype, "kernel_cache_capacity": int(cap), "items": len(items),
                   "items_per_s": len(items) / measured["seconds"],
                   "peak_rss_mb": measured["peak_rss_mb"],
                   "judging_rss_mb": measured["judging_rss_mb"], "chunks": measured["chunks"]}
            rows.append(row)
            peaks = [round(c["chunk_peak_mb"]) for c in row["chunks"]]
            between = [round(c["rss_mb"]) for c in row["chunks"]]
            print(f"{dtype} cap {cap}: {row['items_per_s']:.2f} items/s, chunk peaks {peaks} MB,"
                  f" RSS between chunks {between} MB", flush=True)
    atomic_write_json(Path(args.output), {"command": "python benchmarks/kernel_cache.py "
                                          + " ".join(argv if argv is not None else sys.argv[1:]),
                                          "host": host(), "runs": rows})
    print(f"written {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
