"""Time one training step per objective, on real items, in one run.

    python benchmarks/train_step.py --steps 6 --bf16

Variants: single point (α = 0), KL + CE (α = 0.8), KL + CE + adversarial target with our exact
batched projection, and the same with a per-item CVXPY projection (the paper's way). Each step
is the Trainer's own ``training_step`` (forward, loss, backward) plus the optimizer step, on the
same batches. The adversary's own time is also measured inside the step, so its overhead is
reported both ways: (adversary seconds / step seconds) and (step time difference).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import distjudge.trainer as trainer_module
from distjudge.data import load_items
from distjudge.io import jsonl_text
from distjudge.objective import kl_divergence
from distjudge.readout import label_index_tensor, label_token_ids
from distjudge.sources import load_source
from distjudge.task import load_task
from distjudge.trainer import (
    DistJudgeConfig,
    DistJudgeTrainer,
    JudgeCollator,
    JudgeDataset,
    build_model,
)

VARIANTS = {
    "single_point": {"alpha": 0.0, "epsilon": 0.0},
    "kl_ce": {"alpha": 0.8, "epsilon": 0.0},
    "kl_ce_adv": {"alpha": 0.8, "epsilon": 0.25},
    "kl_ce_adv_cvxpy": {"alpha": 0.8, "epsilon": 0.25},
}


def cvxpy_projection(v: torch.Tensor, center: torch.Tensor, radius: float) -> torch.Tensor:
    """The paper's projection: one CVXPY problem per item."""
    import cvxpy as cp

    rows = []
    for vi, ci in zip(v.double().numpy(), center.double().numpy()):
        x = cp.Variable(len(vi))
        problem = cp.Problem(cp.Minimize(cp.sum_squares(x - vi)),
                             [x >= 0, cp.sum(x) == 1, cp.norm(x - ci, 2) <= radius])
        problem.solve()
        rows.append(np.clip(x.value, 0, None))
    return torch.tensor(np.array(rows), dtype=v.dtype)


def cvxpy_adversarial_target(p, log_q, epsilon=0.25, steps=5, step_size=0.05):
    """PGD as in :func:`adversarial_target`, projecting with CVXPY item by item."""
    log_q = log_q.detach()
    target = p.detach().clone()
    for _ in range(steps):
        grad = target.clamp_min(1e-12).log() + 1 - log_q
        target = cvxpy_projection(target + step_size * grad, p, epsilon)
    worse = kl_divergence(target, log_q) < kl_divergence(p, log_q)
    return torch.where(worse[:, None], p, target)


def measure_steps(steps: int = 6, batch_size: int = 8, bf16: bool = False,
                  finetuning: str = "full") -> dict:
    """Median seconds per step and adversary seconds of each variant, plus the overheads."""
    task = load_task("nli")
    items = load_source("chaosnli-snli")[: batch_size * (steps + 1)]
    work = Path(tempfile.mkdtemp())
    (work / "train.jsonl").write_text(jsonl_text(items))
    results = {}
    for name, method in VARIANTS.items():
        config = DistJudgeConfig(output_dir=str(work / name), train_file=str(work / "train.jsonl"),
                                 task="nli", finetuning=finetuning, bf16=bf16,
                                 per_device_train_batch_size=batch_size, seed=0,
                                 disable_tqdm=True, **method)
        torch.manual_seed(0)
        model, tokenizer, _ = build_model(config)
        dataset = JudgeDataset(load_items(work / "train.jsonl", task, True), task, tokenizer, 512)
        collate = JudgeCollator(int(tokenizer.pad_token_id))
        trainer = DistJudgeTrainer(model=model, args=config, train_dataset=dataset,
                                   data_collator=collate,
                                   label_index=label_index_tensor(label_token_ids(task, tokenizer)))
        trainer.create_optimizer_and_scheduler(num_training_steps=steps + 1)
        trainer.current_gradient_accumulation_steps = 1
        model.train()
        original = trainer_module.adversarial_target
        if name.endswith("cvxpy"):
            trainer_module.adversarial_target = cvxpy_adversarial_target
        times, adversary = [], []
        try:
            for step in range(steps + 1):
                rows = [dataset[i] for i in range(step * batch_size, (step + 1) * batch_size)]
                batch = collate(rows)
                before = trainer.adversary_seconds
                start = time.perf_counter()
                trainer.training_step(model, batch)
                trainer.optimizer.step()
                trainer.optimizer.zero_grad()
                elapsed = time.perf_counter() - start
                if step > 0:  # the first step warms up
                    times.append(elapsed)
                    adversary.append(trainer.adversary_seconds - before)
        finally:
            trainer_module.adversarial_target = original
        results[name] = {"step_seconds": statistics.median(times),
                         "adversary_seconds": statistics.median(adversary), "all": times}
        print(f"{name:>18}: {results[name]['step_seconds']:.3f} s/step "
              f"(adversary {1000 * results[name]['adversary_seconds']:.1f} ms)", flush=True)
        del trainer, model

    base = results["single_point"]["step_seconds"]
    summary = {}
    for name in ("kl_ce_adv", "kl_ce_adv_cvxpy"):
        adv = results[name]
        summary[name] = {
            "adversary_pct_of_step": 100 * adv["adversary_seconds"] / adv["step_seconds"],
            "adversary_pct_of_single_point_step": 100 * adv["adversary_seconds"] / base,
            "step_vs_single_point_pct": 100 * (adv["step_seconds"] / base - 1),
            "step_vs_kl_ce_pct": 100 * (adv["step_seconds"] / results["kl_ce"]["step_seconds"]
                                        - 1),
        }
    return {"threads": torch.get_num_threads(), "variants": results, "overheads": summary}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="Timed steps per variant.")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--finetuning", default="full")
    parser.add_argument("--output", default="benchmarks/results/train_step.json")
    args = parser.parse_args(argv)
    out = {"settings": vars(args),
           **measure_steps(args.steps, args.batch_size, args.bf16, args.finetuning)}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out["overheads"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
