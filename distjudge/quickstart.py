"""``distjudge quickstart``: the whole loop in a few CPU minutes on the embedded default model.

Train a judge on real ChaosNLI-SNLI items (100 annotators each), judge held-out items with the
raw and the trained model, and print how far each is from the humans (KL, accuracy), beside the
uniform and label-prior baselines. Every file it writes lands in ``--output_dir``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from distjudge.data import count_distributions
from distjudge.evaluation import label_prior
from distjudge.io import atomic_write_text, jsonl_text
from distjudge.judge import Judge
from distjudge.metrics import score
from distjudge.models import fast_dtype
from distjudge.sources import load_source, split_items
from distjudge.task import load_task
from distjudge.trainer import DistJudgeConfig, train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="distjudge quickstart", description=__doc__)
    parser.add_argument("--output_dir", default="runs/quickstart")
    parser.add_argument("--train_items", type=int, default=192)
    parser.add_argument("--test_items", type=int, default=96)
    parser.add_argument("--data_root", default=None, help="Datasets folder (../shared/datasets).")
    args = parser.parse_args(argv)
    out = Path(args.output_dir)
    task = load_task("nli")
    started = time.perf_counter()

    train_items, test_items = split_items(load_source("chaosnli-snli", args.data_root), 0.2, 0)
    train_items, test_items = train_items[: args.train_items], test_items[: args.test_items]
    atomic_write_text(out / "train.jsonl", jsonl_text(train_items))
    atomic_write_text(out / "test.jsonl", jsonl_text(test_items))
    print(f"ChaosNLI-SNLI: {len(train_items)} training and {len(test_items)} held-out items "
          f"(deterministic group-aware 8:2 split, seed 0) in {out}/")

    print("\n1/3 judging the held-out items with the raw (zero-shot) model ...")
    dtype = fast_dtype()  # bf16 only where native: emulated, 3-8x slower than fp32
    raw = Judge.from_pretrained(task=task, dtype=dtype).predict(test_items, progress=True)

    print("\n2/3 training (full fine-tuning, KL + CE + adversarial targets, 2 epochs, "
          f"{dtype}) ...")
    run = out / "judge"
    config = DistJudgeConfig(output_dir=str(run), train_file=str(out / "train.jsonl"),
                             task="nli", bf16=dtype == "bfloat16", save_strategy="no",
                             logging_steps=8)
    train(config)

    print("\n3/3 judging the held-out items with the trained judge ...")
    trained = Judge.from_pretrained(adapter=run, dtype=dtype).predict(test_items, progress=True)

    p = count_distributions(test_items, task.label_names)
    prior = label_prior(count_distributions(train_items, task.label_names))
    rows = {
        "uniform": (np.full_like(p, 1 / 3), None),
        "label prior (train)": (np.broadcast_to(prior, p.shape), None),
        "raw model": (raw.probs, raw.label_mass.mean()),
        "trained judge": (trained.probs, trained.label_mass.mean()),
    }
    print(f"\nheld-out ChaosNLI-SNLI items: {len(p)}   (KL(p_human || q_judge), lower is better)")
    print(f"{'':<22}{'KL':>8}{'JSD':>8}{'acc':>8}{'label mass':>12}")
    for name, (q, mass) in rows.items():
        s = score(p, q)
        mass_cell = f"{mass:.4f}" if mass is not None else "-"
        print(f"{name:<22}{s['kl']:>8.3f}{s['jsd']:>8.3f}{s['accuracy']:>8.3f}{mass_cell:>12}")
    print(f"\ntrained judge saved in {run}/ (use: distjudge judge --adapter {run} --input ...)")
    print(f"total time: {time.perf_counter() - started:.0f} s")
    return 0
