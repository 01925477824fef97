"""Training a distributional judge: a config dataclass and a Hugging Face ``Trainer`` subclass.

    distjudge train --task nli --train train.jsonl --eval dev.jsonl --output_dir runs/nli
    distjudge train config.yaml                       # the same options as YAML

Per step (see :meth:`DistJudgeTrainer.compute_loss`): one forward pass, the label readout at the
answer position, the adversarial target p' (q held fixed), and α·KL(p'‖q) + (1−α)·CE. Everything
else — checkpoints, resume, evaluation, logging, bf16, gradient accumulation, several processes —
is the Hugging Face Trainer's. The output_dir holds what ``distjudge judge --adapter`` needs: the
adapter or full model (safetensors), ``task.yaml``, ``training_config.yaml`` and
``distjudge_run.json`` (base model, run signature, final dev metrics).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from distjudge.adversarial import adversarial_target
from distjudge.data import load_items
from distjudge.io import atomic_write_json
from distjudge.judge import RUN_FILE, package_versions
from distjudge.metrics import score
from distjudge.models import file_sha256, load_model, model_fingerprint, warn_if_bf16_emulated
from distjudge.objective import distributional_loss
from distjudge.readout import (
    encode_prompts,
    label_index_tensor,
    label_log_probs,
    label_token_ids,
    pad_left,
    truncate_prompt,
)
from distjudge.task import Task, load_task

DEFAULT_LR = {"full": 1e-4, "lora": 1e-3}  # chosen on a ChaosNLI dev split (README)
TIME_FILE = "distjudge_time.json"  # in each checkpoint: training seconds so far (for resumes)


@dataclass
class DistJudgeConfig(TrainingArguments):
    """Options of ``distjudge train``: the Trainer's own plus the method's.

    Parameters that control the data: ``task``, ``train_file``, ``eval_file``, ``max_length``.
    Parameters that control the model: ``model``, ``finetuning``, ``lora_*``.
    Parameters of the method: ``alpha``, ``epsilon``, ``adv_steps``, ``adv_step_size``,
    ``objective_space``.
    """

    task: str = field(default="nli", metadata={"help": "Built-in task name or task YAML."})
    train_file: str | None = field(
        default=None, metadata={"help": "Training items with human labels (.jsonl/.csv/.parquet).",
                                "aliases": ["--train"]}
    )
    eval_file: str | None = field(
        default=None, metadata={"help": "Dev items, evaluated (KL, accuracy) during training.",
                                "aliases": ["--eval"]}
    )
    model: str | None = field(
        default=None, metadata={"help": "Base model: local HF folder or GGUF (default SmolLM2)."}
    )
    max_length: int = field(
        default=512, metadata={"help": "Longest prompt in tokens; longer ones lose their middle."}
    )
    finetuning: str = field(
        default="full", metadata={"help": "full (all weights) or lora (a PEFT adapter)."}
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: str = field(
        default="all-linear", metadata={"help": "Comma-separated module names, or all-linear."}
    )
    alpha: float = field(
        default=0.8, metadata={"help": "alpha*KL + (1-alpha)*CE(majority); 0 = single point."}
    )
    epsilon: float = field(
        default=0.25, metadata={"help": "Radius of the adversarial l2 ball around p; 0 = off."}
    )
    adv_steps: int = field(default=5, metadata={"help": "Projected gradient ascent steps."})
    adv_step_size: float = field(default=0.05, metadata={"help": "Ascent step size."})
    objective_space: str = field(
        default="labels",
        metadata={"help": "labels: loss on the label softmax renormalized over labels (the "
                  "paper); vocabulary: on the full-vocabulary label probabilities, which also "
                  "drives the label mass to ~1 (servable through top-k logprob APIs)."},
    )
    # Trainer defaults that suit this method (all overridable).
    output_dir: str | None = field(default=None, metadata={"help": "Where the run is written."})
    num_train_epochs: float = field(default=2.0, metadata={"help": "Epochs (paper: 2)."})
    learning_rate: float | None = field(
        default=None,
        metadata={"help": "AdamW lr; default 1e-4 for full fine-tuning, 1e-3 for LoRA (chosen "
                  "on a ChaosNLI-SNLI dev split; the paper used 5e-5 with LoRA on 7B models)."},
    )
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Batch per process."})
    per_device_eval_batch_size: int = field(default=16, metadata={"help": "Eval batch."})
    logging_steps: float = field(default=10, metadata={"help": "Log every N steps."})
    save_strategy: str = field(default="epoch", metadata={"help": "When to checkpoint."})
    eval_strategy: str = field(default="no", metadata={"help": "epoch when --eval is given."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep p in batches."})
    seed: int = field(default=0, metadata={"help": "Seed of model init, shuffling and dropout."})

    def __post_init__(self):
        if self.output_dir is None:
            raise ValueError("--output_dir is required")
        if self.train_file is None:
            raise ValueError("--train is required")
        if self.eval_file and self.eval_strategy == "no":
            self.eval_strategy = "epoch"
        if self.finetuning not in ("full", "lora"):
            raise ValueError(f"--finetuning must be full or lora, got {self.finetuning!r}")
        if self.objective_space not in ("labels", "vocabulary"):
            raise ValueError("--objective_space must be labels or vocabulary")
        if not 0 <= self.alpha <= 1 or self.epsilon < 0:
            raise ValueError("--alpha must be in [0, 1] and --epsilon >= 0")
        if self.learning_rate is None:
            self.learning_rate = DEFAULT_LR[self.finetuning]
        if not torch.cuda.is_available():
            self.use_cpu = True  # several CPU processes then join one gloo process group
        super().__post_init__()

    def method_dict(self) -> dict:
        """The method's own options (not the Trainer's), for the run record."""
        names = ("task", "model", "max_length", "finetuning", "lora_r", "lora_alpha",
                 "lora_dropout", "lora_target_modules", "alpha", "epsilon", "adv_steps",
                 "adv_step_size", "objective_space")
        return {name: getattr(self, name) for name in names}


class JudgeDataset(torch.utils.data.Dataset):
    """Tokenized prompts and human target distributions of labelled items."""

    def __init__(self, items: list[dict], task: Task, tokenizer, max_length: int):
        prompts = encode_prompts(task, tokenizer, items)
        self.input_ids = [truncate_prompt(ids, max_length) for ids in prompts]
        self.truncated = sum(len(a) != len(b) for a, b in zip(prompts, self.input_ids))
        counts = np.stack([item["counts"] for item in items]).astype(np.float64)
        self.p = torch.tensor(counts / counts.sum(1, keepdims=True), dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.input_ids[i], "p": self.p[i]}


@dataclass
class JudgeCollator:
    """Left-pads prompts so the answer position is the last one in every row."""

    pad_id: int

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = pad_left([row["input_ids"] for row in rows], self.pad_id)
        batch["p"] = torch.stack([row["p"] for row in rows])
        return batch


class DistJudgeTrainer(Trainer):
    """``Trainer`` whose loss is the distributional objective at the answer position."""

    def __init__(self, *args, label_index: torch.Tensor, **kwargs):
        super().__init__(*args, **kwargs)
        self.label_index = label_index
        self.loss_is_scaled_for_ga = False  # our loss is a batch mean: let the Trainer divide
        self.adversary_seconds = 0.0

    def _readout(self, model, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                    position_ids=inputs["position_ids"], logits_to_keep=1, use_cache=False)
        return label_log_probs(out.logits[:, -1], self.label_index.to(out.logits.device))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        args: DistJudgeConfig = self.args
        p = inputs["p"].float()
        log_q, log_mass = self._readout(model, inputs)
        target = p
        if model.training and args.epsilon > 0 and args.adv_steps > 0 and args.alpha > 0:
            start = time.perf_counter()
            target = adversarial_target(p, log_q.detach(), args.epsilon, args.adv_steps,
                                        args.adv_step_size)
            self.adversary_seconds += time.perf_counter() - start
        scores = log_q if args.objective_space == "labels" else log_q + log_mass[:, None]
        loss = distributional_loss(target, scores, args.alpha)
        return (loss, {"log_q": log_q, "log_mass": log_mass}) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss, out = self.compute_loss(model, inputs, return_outputs=True)
        preds = torch.cat([out["log_q"], out["log_mass"][:, None]], dim=1)
        return loss.detach(), preds.detach(), inputs["p"]


def compute_metrics(eval_pred) -> dict[str, float]:
    """Dev metrics of the readout: KL, JSD, TV, accuracy, ECE and the mean label mass."""
    preds, p = eval_pred.predictions, eval_pred.label_ids
    q = np.exp(preds[:, :-1].astype(np.float64))
    mass = float(np.exp(preds[:, -1]).mean())
    return {**score(p, q / q.sum(1, keepdims=True)), "label_mass": mass}


def build_model(config: DistJudgeConfig):
    """Base model in fp32 (from the safetensors cache), wrapped in LoRA when asked."""
    model, tokenizer, folder = load_model(config.model)
    model.train()
    if config.finetuning == "lora":
        from peft import LoraConfig, get_peft_model

        targets = config.lora_target_modules
        lora = LoraConfig(
            r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
            target_modules=targets if targets == "all-linear" else targets.split(","),
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
    return model, tokenizer, folder


class _Timer(TrainerCallback):
    """Wall seconds of training (and of the adversary within it), across resumes: each checkpoint
    keeps the totals so far in ``TIME_FILE``, and a run resumed from it starts from them."""

    def __init__(self, resume: str | None, adversary_seconds: Callable[[], float]):
        self.before = {"train_seconds": 0.0, "adversary_seconds": 0.0}
        if resume and (Path(resume) / TIME_FILE).is_file():
            self.before.update(json.loads((Path(resume) / TIME_FILE).read_text()))
        self.adversary_seconds = adversary_seconds
        self.start = time.perf_counter()

    def totals(self) -> dict:
        return {"train_seconds": self.before["train_seconds"] + time.perf_counter() - self.start,
                "adversary_seconds": self.before["adversary_seconds"] + self.adversary_seconds()}

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            atomic_write_json(folder / TIME_FILE, self.totals())

    def on_train_end(self, args, state, control, **kwargs):
        self.seconds = self.totals()


def train(config: DistJudgeConfig) -> dict:
    """Train, save the run into ``config.output_dir`` and return its record."""
    task = load_task(config.task)
    train_items = load_items(config.train_file, task, require_labels=True)
    eval_items = None
    if config.eval_file:
        eval_items = load_items(config.eval_file, task, require_labels=True)
    warn_if_bf16_emulated("bfloat16" if config.bf16 else "float32", "training", "drop --bf16",
                          "cpu" if config.use_cpu else None)
    torch.manual_seed(config.seed)
    model, tokenizer, folder = build_model(config)
    index = label_index_tensor(label_token_ids(task, tokenizer))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    train_set = JudgeDataset(train_items, task, tokenizer, config.max_length)
    eval_set = JudgeDataset(eval_items, task, tokenizer, config.max_length) if eval_items else None
    resume = config.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in ("true", "last"):
        resume = get_last_checkpoint(config.output_dir)
        if resume is None:
            raise FileNotFoundError(f"{config.output_dir}: no checkpoint to resume from")
    trainer = DistJudgeTrainer(
        model=model, args=config, train_dataset=train_set, eval_dataset=eval_set,
        data_collator=JudgeCollator(int(pad)), compute_metrics=compute_metrics,
        label_index=index,
    )
    timer = _Timer(resume, lambda: trainer.adversary_seconds)
    trainer.add_callback(timer)
    trainer.train(resume_from_checkpoint=resume)
    metrics = trainer.evaluate() if eval_set is not None else {}
    record = {
        "model": config.model,
        "model_sha256": model_fingerprint(folder),
        "finetuning": config.finetuning,
        "task": task.name,
        "method": config.method_dict(),
        "train": {"path": config.train_file, "sha256": file_sha256(config.train_file),
                  "items": len(train_set), "truncated": train_set.truncated},
        "eval": {"path": config.eval_file, "items": len(eval_set) if eval_set else 0},
        "dev_metrics": metrics,
        **timer.seconds,
        "global_steps": trainer.state.global_step,
        "log_history": trainer.state.log_history,
        "world_size": config.world_size,
        "versions": package_versions(),
    }
    if trainer.is_world_process_zero():
        save_run(trainer, tokenizer, task, config, record)
    return record


def save_run(trainer: Trainer, tokenizer, task: Task, config: DistJudgeConfig, record: dict):
    out = Path(config.output_dir)
    trainer.save_model(str(out))
    tokenizer.save_pretrained(out)
    task.save(out / "task.yaml")
    (out / "training_config.yaml").write_text(yaml.safe_dump(
        json.loads(config.to_json_string()), sort_keys=False))
    (out / RUN_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")


def main(argv: list[str]) -> int:
    from distjudge.cli import parse_command

    config = parse_command(DistJudgeConfig, argv, "train")
    record = train(config)
    print(json.dumps({"output_dir": config.output_dir, "dev_metrics": record["dev_metrics"],
                      "train_seconds": record["train_seconds"]}, default=str))
    return 0


@dataclass
class MergeArguments:
    """distjudge merge: fold a LoRA run into a full safetensors model."""

    run: str = field(metadata={"help": "A `distjudge train --finetuning lora` output_dir."})
    output_dir: str = field(metadata={"help": "Where the merged model goes."})


def merge_main(argv: list[str]) -> int:
    from distjudge.cli import parse_command

    args = parse_command(MergeArguments, argv, "merge")
    run_dir, out = Path(args.run), Path(args.output_dir)
    record = json.loads((run_dir / RUN_FILE).read_text())
    if record.get("finetuning") != "lora":
        raise ValueError(f"{run_dir}: not a LoRA run (nothing to merge)")
    model, tokenizer, _ = load_model(record.get("model"), adapter=run_dir)
    merged = model.merge_and_unload()
    merged.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    load_task(str(run_dir / "task.yaml")).save(out / "task.yaml")
    record.update(finetuning="full", merged_from=str(run_dir))
    (out / RUN_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(json.dumps({"merged": str(out)}))
    return 0
