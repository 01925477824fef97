"""The served backend against the local one, on the same real items, in one run.

    python benchmarks/served.py --items 128                          # needs the server extra
    python benchmarks/served.py --items 128 --source lewidi-armis    # yes/no: labels in top 20

Starts a llama.cpp server (llama-cpp-python) on 127.0.0.1 with the embedded default GGUF
(quantized Q4_1 weights; 2 threads), judges a source's items through it (top-20 logprobs) and
with the local backend (the same weights dequantized to fp32, exact readout, 2 threads), and
prints: items/s of each, the KL between their distributions, and the share of items with a label
outside the top 20 (raw model), and the KL over the items whose labels are all in the top 20.
Results go into benchmarks/results/served.json, one entry per source.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from distjudge.io import atomic_write_json
from distjudge.judge import Judge
from distjudge.metrics import kl_divergence
from distjudge.models import default_gguf
from distjudge.served import ServedJudge, start_llama_server
from distjudge.sources import get_source, load_source


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=128)
    parser.add_argument("--source", default="chaosnli-snli")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default="benchmarks/results/served.json")
    args = parser.parse_args(argv)
    items = load_source(args.source)[: args.items]
    task = get_source(args.source).task

    server = start_llama_server(default_gguf(), args.port, threads=args.threads)
    try:
        served = ServedJudge(f"http://127.0.0.1:{args.port}/v1", "judge", task, concurrency=2)
        served.predict(items[:4])  # warm-up
        start = time.perf_counter()
        remote = served.predict(items)
        remote_seconds = time.perf_counter() - start
    finally:
        server.kill()
        server.wait()

    local_judge = Judge.from_pretrained(task=task, batch_size=16, max_length=2048)
    local_judge.predict(items[:16])  # warm-up
    start = time.perf_counter()
    local = local_judge.predict(items)
    local_seconds = time.perf_counter() - start

    scored = remote.scored
    kl = kl_divergence(local.probs[scored], remote.probs[scored])
    absent = np.array([bool(d["absent_labels"]) for d in remote.details])
    covered = scored & ~absent
    kl_covered = kl_divergence(local.probs[covered], remote.probs[covered])
    out = {
        "source": args.source, "task": task, "items": len(items), "threads": args.threads,
        "server_items_per_s": len(items) / remote_seconds,
        "local_items_per_s": len(items) / local_seconds,
        "server_vs_local": local_seconds / remote_seconds,
        "kl_local_vs_server_mean": float(kl.mean()),
        "kl_local_vs_server_max": float(kl.max()),
        "unscored_share": float(1 - scored.mean()),
        "label_outside_top20_share": float(np.mean(absent)),
        "kl_on_fully_covered_items": float(kl_covered.mean()) if covered.any() else None,
        "fully_covered_items": int(covered.sum()),
        "label_mass_server_mean": float(remote.label_mass.mean()),
        "label_mass_local_mean": float(local.label_mass.mean()),
        "missing_mass_bound_mean": float(np.mean([d["missing_mass_bound"]
                                                  for d in remote.details])),
        "accuracy_agreement": float(np.mean(local.probs.argmax(1)[scored]
                                            == remote.probs.argmax(1)[scored])),
    }
    output = Path(args.output)
    results = json.loads(output.read_text()) if output.is_file() else {}
    results = results if "source" not in results else {results["source"]: results}
    results[args.source] = out
    atomic_write_json(output, results)
    for key, value in out.items():
        print(f"{key:>28}: {value:.4g}" if isinstance(value, float) else f"{key:>28}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
