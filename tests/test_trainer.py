"""Training: loss goes down on real items, kill-and-resume is exact, 2 processes train."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import read_chaosnli, write_jsonl
from safetensors.torch import load_file

from distjudge.judge import RUN_FILE
from distjudge.trainer import TIME_FILE, DistJudgeConfig, train

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def data_files(tmp_path_factory) -> dict[str, Path]:
    items = read_chaosnli(24, labels="label_counts")
    folder = tmp_path_factory.mktemp("train-data")
    return {"train": write_jsonl(folder / "train.jsonl", items[:16]),
            "dev": write_jsonl(folder / "dev.jsonl", items[16:])}


def config(output_dir: Path, train_file: Path, **overrides) -> DistJudgeConfig:
    options = dict(output_dir=str(output_dir), train_file=str(train_file), task="nli",
                   per_device_train_batch_size=4, logging_steps=1, save_strategy="no",
                   disable_tqdm=True, seed=0)
    options.update(overrides)
    return DistJudgeConfig(**options)


def test_real_steps_lower_the_loss(tmp_path, data_files):
    """LoRA on the real default model, 8 real items: the loss on them goes down."""
    train_file = write_jsonl(tmp_path / "eight.jsonl", read_chaosnli(8, labels="label_counts"))
    run = tmp_path / "run"
    record = train(config(run, train_file, eval_file=str(train_file), eval_on_start=True,
                          finetuning="lora", learning_rate=2e-3, num_train_epochs=3))
    evals = [row for row in record["log_history"] if "eval_loss" in row]
    first, last = evals[0], evals[-1]
    assert last["eval_loss"] < first["eval_loss"] - 0.05
    assert last["eval_kl"] < first["eval_kl"]
    for name in ("adapter_model.safetensors", "task.yaml", "training_config.yaml",
                 "distjudge_run.json"):
        assert (run / name).is_file(), name
    saved = json.loads((run / "distjudge_run.json").read_text())
    assert saved["finetuning"] == "lora" and saved["global_steps"] == 6
    assert saved["method"]["alpha"] == 0.8 and saved["method"]["epsilon"] == 0.25


def test_single_point_and_pure_kl_run(tmp_path, tiny_model, data_files):
    for alpha in (0.0, 1.0):
        record = train(config(tmp_path / f"a{alpha}", data_files["train"], model=str(tiny_model),
                              alpha=alpha, max_steps=2))
        assert record["global_steps"] == 2


def _train_cmd(out: Path, model: Path, train_file: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "distjudge.cli", "train", "--task", "nli",
            "--train", str(train_file), "--output_dir", str(out), "--model", str(model),
            "--finetuning", "lora", "--learning_rate", "1e-3", "--max_steps", "6",
            "--per_device_train_batch_size", "4", "--save_strategy", "steps", "--save_steps", "2",
            "--seed", "0", "--disable_tqdm", "true", *extra]


def test_sigkill_then_resume_matches_uninterrupted(tmp_path, tiny_model, data_files):
    full = tmp_path / "full"
    subprocess.run(_train_cmd(full, tiny_model, data_files["train"]), check=True,
                   capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(killed, tiny_model, data_files["train"]),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    saved = killed / "checkpoint-4"
    while not ((saved / "trainer_state.json").is_file() and (saved / TIME_FILE).is_file()):
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "adapter_model.safetensors").exists()
    shutil.rmtree(killed / "checkpoint-6", ignore_errors=True)  # a partial save, if any
    subprocess.run(_train_cmd(killed, tiny_model, data_files["train"],
                              "--resume_from_checkpoint", "true"), check=True, capture_output=True)
    a = load_file(full / "adapter_model.safetensors")
    b = load_file(killed / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"max |resumed - uninterrupted| = {diff:.3g}")
    assert diff <= 1e-6
    # the resumed run's time counts the killed part too: the totals its checkpoint kept, and more
    before = json.loads((saved / TIME_FILE).read_text())["train_seconds"]
    record = json.loads((killed / RUN_FILE).read_text())
    assert before > 0 and record["train_seconds"] > before


def test_accelerate_two_processes(tmp_path, tiny_model, data_files):
    out = tmp_path / "ddp"
    # On CPU, accelerate's torchrun-based launcher (--multi_gpu) starts a gloo process group.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
           "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no",
           "-m", "distjudge.cli", "train", "--task", "nli", "--train", str(data_files["train"]),
           "--output_dir", str(out), "--model", str(tiny_model), "--finetuning", "lora",
           "--max_steps", "2", "--per_device_train_batch_size", "2", "--save_strategy", "no",
           "--disable_tqdm", "true"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}  # CPU on GPU hosts too
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((out / "distjudge_run.json").read_text())
    assert record["global_steps"] == 2 and record["world_size"] == 2
    assert torch.isfinite(torch.tensor(record["train_seconds"]))


def test_vocabulary_objective_drives_label_mass_up(tmp_path, tiny_model, data_files):
    """objective_space=vocabulary trains the full-vocabulary label probabilities: mass rises."""
    masses = {}
    for space in ("labels", "vocabulary"):
        record = train(config(tmp_path / space, data_files["train"], model=str(tiny_model),
                              eval_file=str(data_files["train"]), eval_on_start=True,
                              objective_space=space, finetuning="full", learning_rate=3e-2,
                              max_steps=16, eval_strategy="steps", eval_steps=16))
        evals = [row["eval_label_mass"] for row in record["log_history"]
                 if "eval_label_mass" in row]
        masses[space] = (evals[0], evals[-1])
    print(masses)
    start, end = masses["vocabulary"]
    assert end > 10 * start and end > 0.5
    assert end > 10 * masses["labels"][1]


def test_gradient_accumulation_matches_the_larger_batch(tmp_path, tiny_model, data_files):
    """2 micro-batches of 2 accumulate to the same update as one batch of 4.

    Plain SGD without clipping, so a wrongly scaled accumulated gradient shows (Adam or
    gradient clipping would hide it)."""
    weights = []
    for batch, accumulate in ((4, 1), (2, 2)):
        out = tmp_path / f"b{batch}x{accumulate}"
        train(config(out, data_files["train"], model=str(tiny_model), finetuning="full",
                     optim="sgd", learning_rate=0.5, max_grad_norm=0.0, max_steps=2,
                     per_device_train_batch_size=batch,
                     gradient_accumulation_steps=accumulate))
        weights.append(load_file(out / "model.safetensors"))
    diff = max((weights[0][k] - weights[1][k]).abs().max().item() for k in weights[0])
    assert diff < 1e-5, diff
