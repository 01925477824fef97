"""Quality benchmark: the paper's table on real multi-annotator data, ours beside its baselines.

    python benchmarks/quality.py --datasets chaosnli-snli,dices --seeds 0,1,2     # main table
    python benchmarks/quality.py --datasets chaosnli-snli --methods single_point,kl_ce_adv \\
        --train_source snli-nochaos --limit 2000                                  # transfer
    python benchmarks/quality.py --datasets chaosnli-snli --pretrain snli-nochaos --limit 2000
    python benchmarks/quality.py --datasets dices --annotators 1,3,5,10            # robustness (a)
    python benchmarks/quality.py --datasets chaosnli-snli --sweeps                 # on a dev split
    python benchmarks/quality.py --report_only        # rewrite quality.md and its plots

A cell is one (dataset, method, backbone, seed, split, training variant). Finished cells are kept
in ``benchmarks/results/quality.json`` (written atomically after each cell, re-read first so
concurrent invocations do not lose rows) and never redone: a killed run continues where it
stopped, a cell killed while training from its last checkpoint (every 50 steps). Each cell's
per-item human and model distributions go to ``quality_items/`` (the plots and the
perturbed-target study are computed from them).

Methods: ``uniform``, ``prior`` (train label prior), ``raw`` (zero-shot), ``raw_temperature``
(zero-shot, one temperature on the label logits fitted on train items), and the trained
``single_point`` (α = 0), ``kl`` (α = 1), ``kl_ce`` (α = 0.8), ``kl_ce_adv`` (α = 0.8, ε = 0.25),
with the paper's setup (full fine-tuning here, lr 5e-5, 2 epochs, batch 8; bf16 where the CPU
runs it natively, else fp32: each row records train_dtype and judge_dtype, and the host
CPU its seconds come from).
Splits: group-aware hash 8:2 per seed; ``--split dev`` carves a dev split out of train (test is
never seen) for sweeps. Pairwise tasks are trained on both orders and judged on both (mean).
With ``--annotators``, k=1 runs only the first method: one annotator per item makes every α
(and ε) train the same loss, and the report shows that cell, marked, for the others.
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
import torch
from transformers.trainer_utils import get_last_checkpoint

from distjudge.adversarial import project_simplex_ball
from distjudge.data import count_distributions
from distjudge.evaluation import apply_temperature, fit_temperature, label_prior
from distjudge.io import atomic_write_json, atomic_write_text, jsonl_text, terminate_as_interrupt
from distjudge.judge import RUN_FILE, Judge
from distjudge.metrics import kl_divergence, score
from distjudge.models import bf16_is_native, fast_dtype
from distjudge.objective import distributional_loss
from distjudge.sources import get_source, load_source, split_items, subsample_annotations
from distjudge.sources.pairwise import both_orders
from distjudge.sources.stats import count_matrix, split_half
from distjudge.task import load_task
from distjudge.trainer import DistJudgeConfig, train

sys.path.insert(0, str(Path(__file__).parent))
from perf import host  # noqa: E402  (the CPU a row's seconds come from)
from quality_report import (  # noqa: E402
    ROBUST_METHODS,
    SWEEPS,
    items_path,
    load_results,
    write_report,
)

METHODS = {  # trained methods: objective settings
    "single_point": {"alpha": 0.0, "epsilon": 0.0},
    "kl": {"alpha": 1.0, "epsilon": 0.0},
    "kl_ce": {"alpha": 0.8, "epsilon": 0.0},
    "kl_ce_adv": {"alpha": 0.8, "epsilon": 0.25},
}
BASELINES = ("uniform", "prior", "raw", "raw_temperature")
TRAINING = {"finetuning": "full", "learning_rate": 5e-5, "num_train_epochs": 2.0,
            "per_device_train_batch_size": 8, "bf16": bf16_is_native(), "max_length": 512}
CHECKPOINT_STEPS = 50  # a killed cell resumes from its last checkpoint (~5-10 min of steps)
DELTAS = (0.0, 0.05, 0.10, 0.15, 0.20, 0.25)  # perturbed-test-target study (paper, Table 3)
SNLI_SAMPLE = 10_000  # the paper's SNLI setting: a sample of dev+test items
TEMPERATURE_FIT_ITEMS = 1000
# bf16 weights where native (cells before 2026-11-25: bf16 autocast); KL(fp32 ‖ bf16) 4e-4 to
# 6e-4 (perf.md)
JUDGE_DTYPE = fast_dtype()
RESULTS = Path("benchmarks/results")
VARIANT_FIELDS = ("dataset", "method", "backbone", "seed", "split", "limit", "settings",
                  "train_source", "pretrain", "annotators")


def dataset_items(name: str) -> list[dict]:
    items = load_source(name)
    if name == "snli":
        keep = np.random.default_rng(0).choice(len(items), SNLI_SAMPLE, replace=False)
        items = [items[i] for i in sorted(keep)]
    return items


def cell_key(cell: dict) -> str:
    tag = ",".join(f"{k}={v}" for k, v in sorted(cell["settings"].items()))
    key = (f"{cell['dataset']}/{cell['method']}/{cell['backbone']}/{cell['seed']}/"
           f"{cell['split']}/{cell['limit']}/{tag}")
    for extra in ("train_source", "pretrain", "annotators"):
        if cell.get(extra) is not None:
            key += f"/{extra}={cell[extra]}"
    return key


def cell_data(cell: dict, task) -> tuple[list, list]:
    """(train, eval) items of a cell, after the transfer / annotator / limit variants.

    ``limit`` samples the items trained on first: with ``pretrain``, those of the pretraining
    source (the dataset's own train split is then used whole).
    """
    train_items, test_items = split_items(dataset_items(cell["dataset"]), 0.2, cell["seed"])
    if cell["split"] == "dev":
        train_items, test_items = split_items(train_items, 0.2, cell["seed"] + 1000)
    if cell.get("train_source"):  # transfer: another source's items, the eval ids removed
        held = {item["id"] for item in test_items}
        train_items = [i for i in load_source(cell["train_source"]) if i["id"] not in held]
    if cell["limit"] and not cell.get("pretrain"):
        order = np.random.default_rng(cell["seed"]).permutation(len(train_items))
        train_items = [train_items[i] for i in sorted(order[:cell["limit"]])]
    if cell.get("annotators"):
        train_items = subsample_annotations(train_items, cell["annotators"], cell["seed"])
    return train_items, test_items


def fine_tune(cell: dict, items: list[dict], model: str | None, run_dir: Path, task_name: str,
              task) -> dict:
    """Train one judge into ``run_dir``; pairwise tasks see both orders."""
    if (run_dir / RUN_FILE).is_file():  # trained before a kill (a pretraining stage)
        return json.loads((run_dir / RUN_FILE).read_text())
    if task.swappable:
        items = both_orders(items, task)
    train_file = run_dir.with_suffix(".train.jsonl")
    atomic_write_text(train_file, jsonl_text(items))
    options = {**TRAINING, **METHODS.get(cell["method"], {}), **cell["settings"]}
    resume = get_last_checkpoint(str(run_dir)) if run_dir.is_dir() else None
    if resume:
        print(f"  resuming from {resume}", flush=True)
    config = DistJudgeConfig(output_dir=str(run_dir), train_file=str(train_file), task=task_name,
                             model=model, seed=cell["seed"], report_to="none",
                             save_strategy="steps", save_steps=CHECKPOINT_STEPS,
                             save_total_limit=1, resume_from_checkpoint=resume, **options)
    record = train(config)
    train_file.unlink()
    return record


def judge_items(model, task, adapter, items: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    judge = Judge.from_pretrained(model, task, adapter, batch_size=16,
                                  both_orders=task.swappable, dtype=JUDGE_DTYPE)
    result = judge.predict(items, progress=True)
    del judge
    gc.collect()
    return result.probs, result.label_mass


def epoch_losses(log_history: list[dict]) -> list[float]:
    """Mean logged training loss of each epoch (epoch 1 covers logs at epochs in (0, 1])."""
    by_epoch: dict[int, list[float]] = {}
    for entry in log_history:
        if "loss" in entry and "epoch" in entry:
            by_epoch.setdefault(max(1, int(np.ceil(entry["epoch"]))), []).append(
                float(entry["loss"]))
    return [float(np.mean(by_epoch[e])) for e in sorted(by_epoch)]


def prior_train_loss(cell: dict, train_items: list[dict], task) -> float | None:
    """The training objective of the train label prior on the training items as trained: the
    loss a judge that learned only the prior would log. None with an adversary (its targets
    move with the model, so the logged loss is not on the same footing)."""
    options = {**METHODS[cell["method"]], **cell["settings"]}
    if options.get("epsilon", 0.0) > 0:
        return None
    items = both_orders(train_items, task) if task.swappable else train_items
    p = count_distributions(items, task.label_names)
    log_q = torch.log(torch.as_tensor(label_prior(p))).expand(p.shape[0], -1)
    return float(distributional_loss(torch.as_tensor(p), log_q, options["alpha"]))


def run_cell(cell: dict, work: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    """Train (if the method trains) and evaluate one cell: its row, human p and model q."""
    task_name = get_source(cell["dataset"]).task
    task = load_task(task_name)
    train_items, eval_items = cell_data(cell, task)
    p = count_distributions(eval_items, task.label_names)
    started = time.process_time()
    extra: dict = {"train_seconds": None}
    model = cell["backbone_path"]
    if cell["method"] == "uniform":
        q = np.full_like(p, 1 / p.shape[1])
    elif cell["method"] == "prior":
        q = np.broadcast_to(label_prior(count_distributions(train_items, task.label_names)),
                            p.shape).copy()
    elif cell["method"] in ("raw", "raw_temperature"):
        q, mass = judge_items(model, task, None, eval_items)
        extra["label_mass"] = float(mass.mean())
        if cell["method"] == "raw_temperature":
            fit = [train_items[i] for i in np.random.default_rng(cell["seed"]).permutation(
                len(train_items))[:TEMPERATURE_FIT_ITEMS]]
            q_fit, _ = judge_items(model, task, None, fit)
            temperature = fit_temperature(count_distributions(fit, task.label_names), q_fit)
            q, extra["temperature"] = apply_temperature(q, temperature), temperature
    else:
        run_dir = work / cell["key"].replace("/", "_")
        if cell.get("pretrain"):  # first fine-tune on the other source, then on this one
            pre_items, _ = cell_data({**cell, "dataset": cell["pretrain"], "pretrain": None},
                                     task)
            pre_dir = run_dir.with_name(run_dir.name + ".pretrain")
            pre = fine_tune(cell, pre_items, model, pre_dir, task_name, task)
            extra["pretrain_seconds"], model = pre["train_seconds"], str(pre_dir)
        record = fine_tune(cell, train_items, model, run_dir, task_name, task)
        bf16 = {**TRAINING, **cell["settings"]}["bf16"]
        extra.update(train_seconds=record["train_seconds"], steps=record["global_steps"],
                     train_dtype="bfloat16" if bf16 else "float32",
                     adversary_seconds=record["adversary_seconds"],
                     train_loss_by_epoch=epoch_losses(record["log_history"]),
                     prompts_cut={"n": record["train"]["truncated"],
                                  "of": record["train"]["items"],
                                  "max_length": record["method"]["max_length"]},
                     prior_train_loss=prior_train_loss(cell, train_items, task))
        q, mass = judge_items(None, task, run_dir, eval_items)
        extra["label_mass"] = float(mass.mean())
        for folder in (run_dir, run_dir.with_name(run_dir.name + ".pretrain")):
            shutil.rmtree(folder, ignore_errors=True)  # weights are large; the numbers stay
    metrics = score(p, q)
    row = {**{k: v for k, v in cell.items() if k not in ("backbone_path", "key")},
           "key": cell["key"], "kl": metrics["kl"], "jsd": metrics["jsd"],
           "acc": metrics["accuracy"], "ece": metrics["ece"], "tv": metrics["tv"],
           "n_test": len(p), "n_train": len(train_items), "judge_dtype": JUDGE_DTYPE,
           "cpu_seconds": time.process_time() - started, "host": host(), **extra}
    if cell["dataset"] == "mt-bench":  # the paper also reports items with >= 2 votes alone
        votes = np.array([sum(i["label_counts"].values()) for i in eval_items])
        multi = score(p[votes >= 2], q[votes >= 2])
        row["votes_ge_2"] = {"n": int((votes >= 2).sum()), "kl": multi["kl"],
                             "acc": multi["accuracy"]}
    return row, p, q


def perturbed_rows(row: dict, p: np.ndarray, q: np.ndarray, draws: int = 5) -> list[dict]:
    """KL of q against test targets moved by a random step of ℓ2 size δ (kept in the simplex)."""
    rng = np.random.default_rng(row["seed"])
    out = []
    for delta in DELTAS:
        kls = []
        for _ in range(draws):
            step = rng.standard_normal(p.shape)
            step -= step.mean(axis=1, keepdims=True)  # stay in the simplex's plane
            step *= delta / np.linalg.norm(step, axis=1, keepdims=True)
            moved = project_simplex_ball(torch.tensor(p + step), torch.tensor(p), delta).numpy()
            kls.append(kl_divergence(moved, q).mean())
        out.append({"study": "perturbed_test", **{k: row.get(k) for k in VARIANT_FIELDS},
                    "delta": delta, "kl": float(np.mean(kls)), "source_key": row["key"]})
    return out


def ceiling(dataset: str, seed: int = 0) -> float:
    """Human split-half KL on the test split (items with >= 4 annotations; see sources.stats)."""
    task = load_task(get_source(dataset).task)
    _, test_items = split_items(dataset_items(dataset), 0.2, seed)
    counts = count_matrix(test_items, task)
    counts = counts[counts.sum(1) >= 4]
    if not len(counts):
        return float("nan")
    return split_half(counts, np.random.default_rng(seed), 10)["kl"]


def save_items(path: Path, row: dict, p: np.ndarray, q: np.ndarray, labels: list[str]):
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"key": row["key"], "labels": labels,
                             "p": np.round(p, 5).tolist(), "q": np.round(q, 6).tolist()})


def build_cells(args, settings: dict) -> list[dict]:
    if args.sweeps:
        variants = [("sweeps", "kl_ce_adv", {**s, **settings}, None) for s in SWEEPS]
    elif args.annotators:  # k=1: p is one-hot and every α trains the same loss: one method runs
        methods = args.methods.split(",")
        variants = [("robustness", m, settings, int(k)) for m in methods
                    for k in args.annotators.split(",") if int(k) != 1 or m == methods[0]]
    else:
        variants = [("runs", m, settings, None) for m in args.methods.split(",")]
    cells = []
    for dataset in args.datasets.split(","):
        for table, method, cell_settings, k in variants:
            for seed in map(int, args.seeds.split(",")):
                cell = {"table": table, "dataset": dataset, "method": method,
                        "backbone": args.backbone, "backbone_path": args.model or args.backbone,
                        "seed": seed, "split": "dev" if args.sweeps else args.split,
                        "limit": args.limit, "settings": cell_settings,
                        "train_source": args.train_source, "pretrain": args.pretrain,
                        "annotators": k}
                cell["key"] = cell_key(cell)
                cells.append(cell)
    return cells


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="chaosnli-snli")
    parser.add_argument("--methods", default=None, help="Comma-separated (default: all eight; "
                        "with --annotators: single_point,kl_ce,kl_ce_adv).")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--backbone", default="smollm2-135m",
                        help="Backbone name (smollm2-135m, gemma3-270m) recorded in each row.")
    parser.add_argument("--model", default=None, help="Local path of the backbone "
                        "(default: the registered backbone of that name).")
    parser.add_argument("--split", choices=("test", "dev"), default="test")
    parser.add_argument("--limit", type=int, default=None,
                        help="Train on N training items (a seeded sample).")
    parser.add_argument("--train_source", default=None,
                        help="Transfer: train on this source instead (eval items removed).")
    parser.add_argument("--pretrain", default=None,
                        help="First fine-tune on this source (--limit applies), then on the "
                        "dataset's train split.")
    parser.add_argument("--annotators", default=None, metavar="K,K,...",
                        help="Robustness: train on K annotators sampled per item.")
    parser.add_argument("--sweeps", action="store_true",
                        help="kl_ce_adv with α in {0.5, 0.8, 1} and ε in {0, 0.1, 0.25}, dev.")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="Override a training option, e.g. --set learning_rate=1e-4.")
    parser.add_argument("--output", default=str(RESULTS / "quality.json"))
    parser.add_argument("--work", default="benchmarks/work")
    parser.add_argument("--report_only", action="store_true",
                        help="Rewrite quality.md and the plots from quality.json; train nothing.")
    args = parser.parse_args(argv)
    if args.methods is None:
        args.methods = ",".join(ROBUST_METHODS if args.annotators else (*BASELINES, *METHODS))
    output = Path(args.output)
    if args.report_only:
        write_report(output)
        return 0
    settings = {}
    for pair in args.set:
        key, _, value = pair.partition("=")
        settings[key] = json.loads(value) if value[:1].isdigit() or value in ("true", "false") \
            else value
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cells = build_cells(args, settings)
    started = time.process_time()
    for i, cell in enumerate(cells, 1):
        results = load_results(output)
        if cell["key"] in {row["key"] for table in ("runs", "robustness", "sweeps")
                           for row in results[table] if "key" in row}:
            print(f"[{i}/{len(cells)}] {cell['key']}: done before, skipped", flush=True)
            continue
        print(f"[{i}/{len(cells)}] {cell['key']} ...", flush=True)
        row, p, q = run_cell(cell, work)
        save_items(items_path(output, cell["key"]), row, p, q,
                   load_task(get_source(cell["dataset"]).task).label_names)
        results = load_results(output)  # re-read: another invocation may have added cells
        results[cell["table"]].append(row)
        if cell["table"] == "runs" and cell["method"] in ROBUST_METHODS:
            results["robustness"] += perturbed_rows(row, p, q)
        if cell["dataset"] not in results["ceilings"]:
            results["ceilings"][cell["dataset"]] = ceiling(cell["dataset"])
        atomic_write_json(output, results)
        print(f"    kl={row['kl']:.4f} acc={row['acc']:.3f} n_test={row['n_test']} "
              f"({row['cpu_seconds']:.0f} CPU s)", flush=True)
    seconds = time.process_time() - started
    print(f"CPU time of this invocation: {seconds:.0f} s ({seconds / 3600:.2f} h)", flush=True)
    if seconds > 60:  # record what made the rows (skips of finished cells are not worth it)
        results = load_results(output)
        results.setdefault("invocations", []).append({
            "command": "python benchmarks/quality.py " + " ".join(
                argv if argv is not None else sys.argv[1:]), "cpu_seconds": seconds,
            "date": time.strftime("%Y-%m-%d")})
        atomic_write_json(output, results)
    write_report(output)
    return 0


if __name__ == "__main__":
    with terminate_as_interrupt():  # a killed run leaves no temp files; rerun to resume
        sys.exit(main())
