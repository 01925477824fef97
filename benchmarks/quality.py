"""Quality benchmark: train and evaluate judges on 8:2 splits of the named sources.

    python benchmarks/quality.py --datasets chaosnli-snli --methods raw,prior,kl_ce --seeds 0

One cell = (dataset, method, backbone, seed, split, settings). Finished cells are kept in the
results JSON (written atomically after each cell) and never redone, so a killed run continues
where it stopped. ``--split dev`` trains on 80% of the train split and scores the other 20%
(for choosing defaults; the test split is never looked at).
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from distjudge.data import count_distributions
from distjudge.evaluation import label_prior
from distjudge.io import atomic_write_json, jsonl_text
from distjudge.judge import Judge
from distjudge.metrics import score
from distjudge.sources import get_source, load_source, split_items
from distjudge.task import load_task
from distjudge.trainer import DistJudgeConfig, train

METHODS = {  # trained methods: objective settings
    "single_point": {"alpha": 0.0, "epsilon": 0.0},
    "kl": {"alpha": 1.0, "epsilon": 0.0},
    "kl_ce": {"alpha": 0.8, "epsilon": 0.0},
    "kl_ce_adv": {"alpha": 0.8, "epsilon": 0.25},
}
BASELINES = ("uniform", "prior", "raw")
TRAINING = {"finetuning": "full", "learning_rate": 5e-5, "num_train_epochs": 2.0,
            "per_device_train_batch_size": 8, "bf16": True, "max_length": 512}


def splits(dataset: str, seed: int, split: str, limit: int | None) -> tuple[list, list]:
    """(train, eval) items of a cell; ``dev`` carves the eval part out of train."""
    train_items, test_items = split_items(load_source(dataset), test=0.2, seed=seed)
    if split == "dev":
        train_items, test_items = split_items(train_items, test=0.2, seed=seed + 1000)
    if limit:
        train_items = train_items[:limit]
    return train_items, test_items


def run_cell(cell: dict, work: Path) -> dict:
    task = load_task(get_source(cell["dataset"]).task)
    train_items, eval_items = splits(cell["dataset"], cell["seed"], cell["split"], cell["limit"])
    p = count_distributions(eval_items, task.label_names)
    started = time.process_time()
    extra: dict = {}
    if cell["method"] == "uniform":
        q = np.full_like(p, 1 / p.shape[1])
    elif cell["method"] == "prior":
        prior = label_prior(count_distributions(train_items, task.label_names))
        q = np.broadcast_to(prior, p.shape)
    else:
        adapter = None
        if cell["method"] in METHODS:
            run_dir = work / cell["key"].replace("/", "_")
            train_file = work / f"{cell['key'].replace('/', '_')}.train.jsonl"
            train_file.write_text(jsonl_text(train_items))
            options = {**TRAINING, **METHODS[cell["method"]], **cell["settings"]}
            config = DistJudgeConfig(output_dir=str(run_dir), train_file=str(train_file),
                                     task=get_source(cell["dataset"]).task,
                                     model=cell["backbone_path"], save_strategy="no",
                                     seed=cell["seed"], disable_tqdm=True, **options)
            record = train(config)
            extra = {"train_seconds": record["train_seconds"], "steps": record["global_steps"],
                     "adversary_seconds": record["adversary_seconds"],
                     "seconds_per_step": record["train_seconds"] / max(record["global_steps"], 1)}
            adapter = run_dir
        judge = Judge.from_pretrained(cell["backbone_path"], task, adapter, batch_size=16)
        result = judge.predict(eval_items, progress=True)
        q = result.probs
        extra["label_mass"] = float(result.label_mass.mean())
        del judge
        gc.collect()
        if adapter is not None:
            shutil.rmtree(adapter, ignore_errors=True)  # weights are large; the numbers stay
    metrics = score(p, q)
    return {**{k: v for k, v in cell.items() if k not in ("backbone_path", "limit")},
            "kl": metrics["kl"], "jsd": metrics["jsd"], "acc": metrics["accuracy"],
            "ece": metrics["ece"], "tv": metrics["tv"], "n_test": len(p),
            "n_train": len(train_items), "cpu_seconds": time.process_time() - started, **extra}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="chaosnli-snli")
    parser.add_argument("--methods", default="uniform,prior,raw,single_point,kl_ce,kl_ce_adv")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--backbone", default="smollm2-135m")
    parser.add_argument("--model", default=None, help="Local path of the backbone (default: "
                        "the embedded SmolLM2 for smollm2-135m).")
    parser.add_argument("--split", choices=("test", "dev"), default="test")
    parser.add_argument("--limit", type=int, default=None, help="Use only N training items.")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="Override a training option, e.g. --set learning_rate=1e-4.")
    parser.add_argument("--output", default="benchmarks/results/quality.json")
    parser.add_argument("--work", default="benchmarks/work")
    args = parser.parse_args(argv)

    settings = {}
    for pair in args.set:
        key, _, value = pair.partition("=")
        settings[key] = json.loads(value) if value[:1].isdigit() or value in ("true", "false") \
            else value
    output, work = Path(args.output), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results = json.loads(output.read_text()) if output.is_file() else {"runs": []}
    done = {row["key"] for row in results["runs"]}
    cells = []
    for dataset in args.datasets.split(","):
        for method in args.methods.split(","):
            for seed in map(int, args.seeds.split(",")):
                tag = ",".join(f"{k}={v}" for k, v in sorted(settings.items()))
                key = f"{dataset}/{method}/{args.backbone}/{seed}/{args.split}/{args.limit}/{tag}"
                cells.append({"key": key, "dataset": dataset, "method": method,
                              "backbone": args.backbone, "backbone_path": args.model,
                              "seed": seed, "split": args.split, "limit": args.limit,
                              "settings": settings})
    started = time.process_time()
    for i, cell in enumerate(cells, 1):
        if cell["key"] in done:
            print(f"[{i}/{len(cells)}] {cell['key']}: done before, skipped", flush=True)
            continue
        print(f"[{i}/{len(cells)}] {cell['key']} ...", flush=True)
        row = run_cell(cell, work)
        results = json.loads(output.read_text()) if output.is_file() else {"runs": []}
        results["runs"].append(row)  # re-read first: another invocation may have added cells
        atomic_write_json(output, results)
        print(f"    kl={row['kl']:.4f} acc={row['acc']:.3f} n_test={row['n_test']}", flush=True)
    print(f"CPU time of this invocation: {time.process_time() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
