"""Judging throughput of the one-pass readout, fp32 against bf16, on real ChaosNLI-SNLI items.

    python benchmarks/judge_speed.py --items 256

Prints items/s for each precision (after one warm-up batch), their ratio, and the mean KL between
the two precisions' distributions (how much bf16 changes the judgment).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from distjudge.judge import Judge
from distjudge.metrics import kl_divergence
from distjudge.readout import encode_prompts
from distjudge.sources import load_source


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--output", default="benchmarks/results/judge_speed.json")
    args = parser.parse_args(argv)

    items = load_source("chaosnli-snli")[: args.items]
    judge = Judge.from_pretrained(task="nli", batch_size=args.batch_size)
    prompt_tokens = sum(map(len, encode_prompts(judge.task, judge.tokenizer, items)))
    results, probs = {}, {}
    for dtype in ("float32", "bfloat16"):
        judge.dtype = dtype
        judge.predict(items[: args.batch_size])  # warm-up
        start = time.perf_counter()
        result = judge.predict(items)
        seconds = time.perf_counter() - start
        probs[dtype] = result.probs
        results[dtype] = {"items_per_s": len(items) / seconds, "seconds": seconds,
                          "mean_label_mass": float(result.label_mass.mean())}
        print(f"{dtype:>9}: {results[dtype]['items_per_s']:.2f} items/s "
              f"({len(items)} items in {seconds:.1f} s)", flush=True)
    out = {
        "items": len(items), "batch_size": args.batch_size, "threads": torch.get_num_threads(),
        "mean_prompt_tokens": prompt_tokens / len(items),
        "precisions": results,
        "bf16_speedup": results["bfloat16"]["items_per_s"] / results["float32"]["items_per_s"],
        "kl_fp32_bf16": float(kl_divergence(probs["float32"], probs["bfloat16"]).mean()),
    }
    print(f"bf16 / fp32 speed: {out['bf16_speedup']:.2f}x; mean KL(fp32 || bf16) = "
          f"{out['kl_fp32_bf16']:.2e}")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
