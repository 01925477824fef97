"""The GPU path: judging and training on CUDA give what the CPU path gives.

Skipped where no CUDA device is visible (CI has none). Run on a GPU machine with a small model
folder and real items brought along::

    DISTJUDGE_TINY_MODEL=<folder> DISTJUDGE_DATA=<datasets> \
        python -m pytest tests/test_cuda.py tests/test_trainer.py tests/test_models.py -k "not real"

(the folder from ``distjudge.models.save_tiny_model``; the other trainer tests on a tiny model then
run on the GPU as well; test_models' device rules fake CUDA by monkeypatching and ran there too;
``-k "not real"`` leaves out the tests that load the default model, which such a machine lacks).
Last run: H200, torch 2.11 + transformers 5.17 + peft 0.21, 21 passed, none skipped (2026-12-04).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import read_chaosnli, write_jsonl

from distjudge.judge import Judge
from distjudge.models import load_model
from distjudge.task import load_task
from distjudge.trainer import DistJudgeConfig, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def judge_on(device: str, folder: Path, **kwargs) -> Judge:
    net, tokenizer, _ = load_model(folder)
    return Judge(net, tokenizer, load_task("nli"), batch_size=8, device=device, **kwargs)


def test_cuda_readout_matches_cpu(tiny_model):
    items = read_chaosnli(40, labels="none")
    cpu = judge_on("cpu", tiny_model).predict(items).probs
    for share_prefix in (True, False):
        judge = judge_on("cuda", tiny_model, share_prefix=share_prefix)
        assert next(judge.model.parameters()).device.type == "cuda"
        np.testing.assert_allclose(judge.predict(items).probs, cpu, atol=1e-4)
    bf16 = judge_on("cuda", tiny_model, dtype="bfloat16").predict(items).probs
    np.testing.assert_allclose(bf16.sum(1), 1, atol=1e-9)
    assert np.abs(bf16 - cpu).max() < 0.05


def test_adversarial_training_runs_on_cuda(tmp_path, tiny_model):
    train_file = write_jsonl(tmp_path / "train.jsonl", read_chaosnli(32, labels="label_counts"))
    torch.cuda.reset_peak_memory_stats()
    record = train(DistJudgeConfig(
        output_dir=str(tmp_path / "run"), train_file=str(train_file), eval_file=str(train_file),
        task="nli", model=str(tiny_model), finetuning="full", learning_rate=1e-3,
        per_device_train_batch_size=8, num_train_epochs=3, bf16=True, logging_steps=1,
        save_strategy="no", disable_tqdm=True, seed=0, eval_on_start=True))
    assert torch.cuda.max_memory_allocated() > 0, "training did not use the GPU"
    evals = [row["eval_loss"] for row in record["log_history"] if "eval_loss" in row]
    assert all(np.isfinite(evals)) and evals[-1] < evals[0]
    judged = Judge.from_pretrained(adapter=tmp_path / "run", device="cuda").predict(
        read_chaosnli(8, labels="none"))
    assert judged.probs.shape == (8, 3) and np.isfinite(judged.probs).all()
